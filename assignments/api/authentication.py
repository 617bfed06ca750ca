"""``Authorization: Bearer canary_ct_...``: client tokens, which may only call ``resolve``.

Listed before the API-token authentication: a bearer token with the client-token
prefix is decided here (and never reaches knox); any other token is left to the
next class. A client token authenticates as a ``ClientTokenPrincipal``, which holds
no permission at all, and is refused (403) on every view that does not declare
``accepts_client_tokens`` and on every method but the view's ``client_token_methods``
(GET unless it says otherwise), so a new endpoint is closed to client tokens unless
it opts in.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework.authentication import BaseAuthentication
from rest_framework.exceptions import AuthenticationFailed, PermissionDenied
from rest_framework.request import Request

from assignments.client_tokens import (
    ClientGrant,
    bearer_token,
    client_grant_of_request,
    is_client_token,
)
from canary.api.authentication import refuse_wrong_token


class ClientTokenPrincipal:
    """``request.user`` for a client token: authenticated, with no permission anywhere.

    Its ``pk`` keys the per-client rate limit, so each client token has its own.
    """

    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_staff = False
    is_superuser = False

    def __init__(self, grant: ClientGrant) -> None:
        self.grant = grant
        self.pk = self.id = f"client-token:{grant.token_id}"

    def has_perm(self, perm: str, obj: Any = None) -> bool:
        return False

    def has_perms(self, perms: Any, obj: Any = None) -> bool:
        return False

    def has_module_perms(self, app_label: str) -> bool:
        return False

    def get_username(self) -> str:
        return self.pk

    def __str__(self) -> str:
        return f"client token {self.grant.name}"


class ClientTokenAuthentication(BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[ClientTokenPrincipal, ClientGrant] | None:
        token = bearer_token(request._request)
        if token is None or not is_client_token(token):
            return None
        grant = client_grant_of_request(request._request)
        if grant is None:
            refuse_wrong_token(request)
            raise AuthenticationFailed("Invalid or revoked client token.")
        view = (request.parser_context or {}).get("view")
        methods = getattr(view, "client_token_methods", ("GET",))
        if request.method not in methods or not getattr(view, "accepts_client_tokens", False):
            raise PermissionDenied("A client token may only call resolve and OFREP.")
        return ClientTokenPrincipal(grant), grant

    def authenticate_header(self, request: Request) -> str:
        return "Bearer"


def client_grant(request: Request) -> ClientGrant | None:
    """The client token's grant when the request was authenticated by one, else None."""
    return request.auth if isinstance(request.auth, ClientGrant) else None


class ClientTokenScheme(OpenApiAuthenticationExtension):
    """How the OpenAPI schema describes client tokens (resolve only)."""

    target_class = ClientTokenAuthentication
    name = "clientToken"

    def get_security_requirement(self, auto_schema: Any) -> dict[str, list[Any]] | None:
        # Listed only where a client token is accepted (resolve), not on every operation.
        if getattr(auto_schema.view, "accepts_client_tokens", False):
            return {self.name: []}
        return None

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A client token (`canary_ct_...`): resolve only, on its rule sets.",
        }
