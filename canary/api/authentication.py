"""API tokens: knox's hashed tokens behind ``Authorization: Bearer``, cached for the data plane.

Only a SHA-512 digest of each token is stored (django-rest-knox); the token itself
is shown once, when issued (``canary_user``, or the admin's token page). After a
full authentication the digest is written to Redis for ``TOKEN_CACHE_SECONDS``,
stamped with the **auth generation**, so the data plane's fast path can accept
the token in its one round-trip.

Revocation does not depend on anyone removing that entry. Database triggers
(``assignments/migrations/0006_auth_generation.py``) bump the generation in the
revoking transaction, whatever revokes: a user deactivated or deleted, a token
deleted or cut short, through the ORM, a bulk ``update()`` or raw SQL. Each
process re-reads the generation at least every ``CANARY_AUTH_RECHECK_SECONDS``
(one indexed query), and the routing script accepts an entry only when its
stamp equals the generation the process knows; anything else is authenticated
in full again. Signals still remove entries at once where they fire
(``canary.api.signals``).
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import DatabaseError, close_old_connections, connection
from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from knox.auth import TokenAuthentication
from knox.crypto import hash_token
from rest_framework.exceptions import AuthenticationFailed, Throttled
from rest_framework.request import Request

from canary.login_lockout import client_address
from canary.redis import redis_available, redis_client

logger = logging.getLogger(__name__)

# How long Redis vouches for a token without asking the database again. The
# auth generation ends an entry's validity at any revocation before that.
TOKEN_CACHE_SECONDS = 60

AUTH_GENERATION_TABLE = "canary_auth_generation"
# (generation, monotonic time it was read); swapped whole, so threads need no lock.
_known_generation: tuple[int, float] | None = None


# The digests of the tokens this process saw last: a data-plane client sends the same
# token on every request. Bounded; cleared whole when full.
_digests: dict[str, str] = {}


def token_digest(token: str) -> str:
    """The digest knox stores for ``token`` (SHA-512), which also keys the Redis cache."""
    digest = _digests.get(token)
    if digest is None:
        digest = hash_token(token)
        if len(_digests) >= 256:
            _digests.clear()
        _digests[token] = digest
    return digest


def _token_cache_key(digest: str) -> str:
    return f"canary:tok:{digest}"


def auth_generation() -> int:
    """The database's auth generation, as of at most ``CANARY_AUTH_RECHECK_SECONDS`` ago.

    Bumped by triggers in every transaction that revokes a token (see the module
    docstring). While the database is unreachable the last value read stands:
    nothing can be revoked there meanwhile. A process that never read it raises
    the ``DatabaseError`` (it cannot vouch for any token).
    """
    global _known_generation
    now = time.monotonic()
    known = _known_generation
    if known is not None and now - known[1] < settings.CANARY_AUTH_RECHECK_SECONDS:
        return known[0]
    try:
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT value FROM {AUTH_GENERATION_TABLE} WHERE id = 1")  # noqa: S608
            row = cursor.fetchone()
    except DatabaseError:
        if known is None:
            raise
        close_old_connections()
        logger.warning("auth generation unreadable; vouching as of %s", known[0])
        _known_generation = (known[0], now)
        return known[0]
    generation = int(row[0]) if row else 0
    _known_generation = (generation, now)
    return generation


def vouched_entry(user_id: Any, generation: int) -> str:
    """A token cache entry as ``route.lua`` reads it: ``<user id>|<auth generation>``."""
    return f"{user_id}|{generation}"


def remember_token(digest: str, user_id: Any, expiry: datetime | None, generation: int) -> None:
    """Let the data plane's fast path accept this token without a database query.

    ``generation`` must have been read *before* the token was checked, so a
    revocation committed after the check moves the generation past the stamp.
    """
    if not redis_available():
        return
    seconds = TOKEN_CACHE_SECONDS
    if expiry is not None:
        seconds = min(seconds, int((expiry - timezone.now()).total_seconds()))
        if seconds < 1:
            return
    try:
        redis_client().set(_token_cache_key(digest), vouched_entry(user_id, generation), ex=seconds)
    except Exception as exc:
        logger.warning("token not cached (%s)", exc)


def forget_tokens(digests: list[str]) -> None:
    if not redis_available() or not digests:
        return
    try:
        redis_client().delete(*(_token_cache_key(digest) for digest in digests))
    except Exception as exc:
        logger.warning(
            "revoked tokens not removed from Redis (%s); they expire in %s s",
            exc,
            TOKEN_CACHE_SECONDS,
        )


class BearerTokenAuthentication(TokenAuthentication):
    """knox's hashed tokens as ``Authorization: Bearer <token>`` (a missing one is a 401).

    Wrong tokens are counted per client address; past
    ``CANARY_AUTH_FAILURES_PER_MINUTE`` in a minute, further wrong tokens from that
    address get 429s instead of 401s, which makes guessing tokens impractical
    without slowing down clients that hold a valid one.
    """

    def authenticate(self, request: Request) -> Any:
        # NOTE: read before the token is checked (see ``remember_token``).
        generation = None
        bearer = request.META.get("HTTP_AUTHORIZATION", "")[:7].lower() == "bearer "
        if bearer and redis_available() and _serves_the_data_plane(request):
            generation = auth_generation()
        try:
            authenticated = super().authenticate(request)
        except AuthenticationFailed:
            refuse_wrong_token(request)
            raise
        if authenticated is not None and generation is not None:
            user, token = authenticated
            remember_token(token.digest, user.pk, token.expiry, generation)
        return authenticated


def _serves_the_data_plane(request: Request) -> bool:
    """Whether the view is the data plane's (throttle scope ``dataplane``: execute, resolve).

    Only those have a fast path, so only their callers' tokens are worth caching;
    the control plane neither reads the auth generation nor writes to Redis.
    """
    view = (getattr(request, "parser_context", None) or {}).get("view")
    return getattr(view, "throttle_scope", None) == "dataplane"


def refuse_wrong_token(request: Request) -> None:
    """Count a wrong token from this address; past the limit, answer 429 instead of 401.

    Counted only on failure, so valid tokens cost nothing extra. Shared by API
    tokens and client tokens, so guessing either kind draws on one budget.
    """
    limit = settings.CANARY_AUTH_FAILURES_PER_MINUTE
    if not limit:
        return
    key = f"auth-failures:{client_address(request) or 'unknown'}"
    cache.add(key, 0, 60)
    try:
        count = cache.incr(key) or 0
    except ValueError:  # expired between add and incr, or the cache is unavailable
        count = 0
    if count > limit:
        raise Throttled(wait=60, detail="Too many failed authentication attempts.")


class BearerTokenScheme(OpenApiAuthenticationExtension):
    """How the OpenAPI schema describes ``BearerTokenAuthentication``."""

    target_class = BearerTokenAuthentication
    name = "bearerAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "An API token (`canary_user`, or the admin's Auth tokens page).",
        }
