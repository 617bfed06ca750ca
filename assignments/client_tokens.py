"""Client tokens: browser-safe credentials for ``resolve`` (SPEC §9.5), and the CORS decision.

A client token is meant to be embedded in a web page, so it is assumed public:
it may only call ``resolve`` (which version a context gets), only on the rule
sets it lists, and browsers may use it only from the origins it lists. It never
executes rules, reads deployments or changes anything.

Only a SHA-512 digest of each token is stored. Every request looks the digest
up in the database (one indexed query, memoised on the request), with no cache
in any process: deleting the row revokes the token in every process at once.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from django.db import transaction
from django.http import HttpRequest

from assignments.models import ClientToken
from assignments.routing import canonical_ruleset_id
from canary.errors import NotFound, ValidationFailed
from deployments.models import RuleSet
from deployments.services import Actor, actor_label

logger = logging.getLogger(__name__)

# Every client token starts with this, so any layer can tell it from an API token
# without a look-up (the data plane's fast path declines them; see fastpath.py).
CLIENT_TOKEN_PREFIX = "canary_ct_"  # noqa: S105 (a marker, not a secret)
SHOWN_PREFIX_LENGTH = 16
MAX_NAME = 200
MAX_RULESETS = 100
MAX_ORIGINS = 20
MAX_ORIGIN_LENGTH = 200
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class ClientGrant:
    """What a live client token allows: resolve on ``ruleset_ids`` from ``allowed_origins``."""

    token_id: str
    name: str
    ruleset_ids: frozenset[str]
    allowed_origins: frozenset[str]

    def covers(self, ruleset_id: Any) -> bool:
        return canonical_ruleset_id(str(ruleset_id)) in self.ruleset_ids


def is_client_token(token: str) -> bool:
    return token.startswith(CLIENT_TOKEN_PREFIX)


def _digest(token: str) -> str:
    return hashlib.sha512(token.encode()).hexdigest()


# --- validation ------------------------------------------------------------------------


def normalize_origin(origin: Any) -> str:
    """``scheme://host[:port]`` exactly as a browser sends it in ``Origin``; ValueError if not one.

    Lower-cased, default port dropped, one trailing slash forgiven; no path,
    query, credentials or wildcard, so every origin names one site.
    """
    if not isinstance(origin, str) or not origin or len(origin) > MAX_ORIGIN_LENGTH:
        raise ValueError(f"Must be a string of 1-{MAX_ORIGIN_LENGTH} characters.")
    text = origin.strip().lower()
    text = text.removesuffix("/")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise ValueError(f"'{origin}' is not an origin (scheme://host[:port]).") from None
    if (
        parts.scheme not in _DEFAULT_PORTS
        or not parts.hostname
        or parts.path
        or parts.query
        or parts.fragment
        or parts.username is not None
        or "*" in text
    ):
        raise ValueError(
            f"'{origin}' is not an origin: use scheme://host[:port] with http or https, "
            "no path and no wildcard."
        )
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    if port is None or port == _DEFAULT_PORTS[parts.scheme]:
        return f"{parts.scheme}://{host}"
    return f"{parts.scheme}://{host}:{port}"


def normalize_origins(origins: Any) -> list[str]:
    """The origins list, normalised and deduplicated; ``ValidationFailed`` naming the field."""
    if not isinstance(origins, list) or not origins:
        raise ValidationFailed({"allowed_origins": ["Must be a non-empty list of origins."]})
    if len(origins) > MAX_ORIGINS:
        raise ValidationFailed({"allowed_origins": [f"At most {MAX_ORIGINS} origins."]})
    normalized: list[str] = []
    for origin in origins:
        try:
            value = normalize_origin(origin)
        except ValueError as exc:
            raise ValidationFailed({"allowed_origins": [str(exc)]}) from None
        if value not in normalized:
            normalized.append(value)
    return normalized


def _rulesets_or_400(ruleset_ids: Any) -> list[RuleSet]:
    if not isinstance(ruleset_ids, list) or not ruleset_ids:
        raise ValidationFailed({"ruleset_ids": ["Must be a non-empty list of rule set ids."]})
    if len(ruleset_ids) > MAX_RULESETS:
        raise ValidationFailed({"ruleset_ids": [f"At most {MAX_RULESETS} rule sets."]})
    wanted: list[str] = []
    for value in ruleset_ids:
        canonical = canonical_ruleset_id(str(value)) if isinstance(value, str) else None
        if canonical is None:
            raise ValidationFailed({"ruleset_ids": [f"No rule set with id '{value}'."]})
        if canonical not in wanted:
            wanted.append(canonical)
    found = {str(r.pk): r for r in RuleSet.objects.filter(pk__in=wanted)}
    missing = [rid for rid in wanted if rid not in found]
    if missing:
        raise ValidationFailed({"ruleset_ids": [f"No rule set with id '{missing[0]}'."]})
    return [found[rid] for rid in wanted]


# --- services --------------------------------------------------------------------------


def client_token_create(
    *, name: Any, ruleset_ids: Any, allowed_origins: Any, actor: Actor
) -> tuple[ClientToken, str]:
    """Issue a client token; returns the row and the token, which is never available again."""
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME:
        raise ValidationFailed({"name": [f"Must be 1-{MAX_NAME} characters."]})
    rulesets = _rulesets_or_400(ruleset_ids)
    origins = normalize_origins(allowed_origins)
    token = CLIENT_TOKEN_PREFIX + secrets.token_urlsafe(32)
    with transaction.atomic():
        client_token = ClientToken.objects.create(
            name=name.strip(),
            token_prefix=token[:SHOWN_PREFIX_LENGTH],
            digest=_digest(token),
            allowed_origins=origins,
            created_by=actor_label(actor),
        )
        client_token.rulesets.set(rulesets)
    logger.info(
        "client token issued",
        extra={"client_token": str(client_token.pk), "actor": actor_label(actor)},
    )
    return client_token, token


def client_token_revoke(*, token_id: Any, actor: Actor) -> None:
    """Revoke at once: the row goes, and every request looks its token up afresh."""
    deleted, _ = ClientToken.objects.filter(pk=_uuid_or_404(token_id)).delete()
    if not deleted:
        raise NotFound(f"No client token with id '{token_id}'.")
    logger.info(
        "client token revoked", extra={"client_token": str(token_id), "actor": actor_label(actor)}
    )


def client_tokens_revoke(*, tokens: Iterable[ClientToken], actor: Actor) -> None:
    """Revoke several (the admin's bulk delete), through the same path."""
    for token in tokens:
        client_token_revoke(token_id=token.pk, actor=actor)


def _uuid_or_404(token_id: Any) -> str:
    canonical = canonical_ruleset_id(str(token_id))  # the same canonical UUID form
    if canonical is None:
        raise NotFound(f"No client token with id '{token_id}'.")
    return canonical


# --- selectors -------------------------------------------------------------------------


def client_token_list() -> Any:
    return ClientToken.objects.prefetch_related("rulesets")


def client_token_get(*, token_id: Any) -> ClientToken:
    found = client_token_list().filter(pk=_uuid_or_404(token_id)).first()
    if found is None:
        raise NotFound(f"No client token with id '{token_id}'.")
    return found


def client_grant_for(token: str) -> ClientGrant | None:
    """The grant of a live client token, or None (unknown or revoked): two indexed queries."""
    if not is_client_token(token):
        return None
    row = (
        ClientToken.objects.filter(digest=_digest(token))
        .values_list("pk", "name", "allowed_origins")
        .first()
    )
    if row is None:
        return None
    token_id, name, origins = row
    ruleset_ids = ClientToken.rulesets.through.objects.filter(clienttoken_id=token_id).values_list(
        "ruleset_id", flat=True
    )
    return ClientGrant(
        token_id=str(token_id),
        name=name,
        ruleset_ids=frozenset(str(rid) for rid in ruleset_ids),
        allowed_origins=frozenset(origins or ()),
    )


def client_grant_of_request(request: HttpRequest) -> ClientGrant | None:
    """The grant of the client token this request bears, looked up once per request."""
    cached = getattr(request, "_canary_client_grant", _UNSET)
    if cached is not _UNSET:
        return cached
    token = bearer_token(request)
    grant = client_grant_for(token) if token else None
    request._canary_client_grant = grant  # type: ignore[attr-defined]
    return grant


_UNSET = object()


def bearer_token(request: HttpRequest) -> str | None:
    header = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = token.strip()
    return token or None


def client_token_check_scope(*, grant: ClientGrant, ruleset_id: Any) -> None:
    """A rule set outside the token's list is a 404, exactly like one that does not exist."""
    if not grant.covers(ruleset_id):
        raise NotFound(f"No rule set with id '{ruleset_id}'.")


def origin_allowed(*, ruleset_id: str, origin: str) -> bool:
    """True when some live client token covering ``ruleset_id`` lists ``origin``.

    What a preflight (which carries no token) is decided on.
    """
    lists = ClientToken.objects.filter(rulesets__pk=ruleset_id).values_list(
        "allowed_origins", flat=True
    )
    return any(origin in (origins or ()) for origins in lists)


def origin_allowed_anywhere(*, origin: str) -> bool:
    """True when some live client token lists ``origin`` (an OFREP preflight: no rule set
    is named in its path)."""
    lists = ClientToken.objects.values_list("allowed_origins", flat=True)
    return any(origin in (origins or ()) for origins in lists)
