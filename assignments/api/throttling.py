"""Client tokens are public, so besides the per-token limit each address gets its own."""

from __future__ import annotations

from typing import Any

from rest_framework.request import Request

from assignments.api.authentication import client_grant
from canary.api.throttling import ScopedClientThrottle
from canary.login_lockout import client_address


class ClientAddressThrottle(ScopedClientThrottle):
    """``CANARY_CLIENT_ADDRESS_RATE`` per client address, for requests bearing a client token.

    One browser (or one script that lifted the token from a page) cannot use up
    the token's whole budget (``CANARY_DATAPLANE_RATE``) for every other user.
    """

    def scope_of(self, view: Any) -> str:
        return "client_address"

    def ident_of(self, request: Request) -> Any:
        return client_address(request._request) or "unknown"

    def allow_request(self, request: Request, view: Any) -> bool:
        if client_grant(request) is None:
            return True
        return super().allow_request(request, view)
