"""API tokens: knox's hashed tokens behind ``Authorization: Bearer``, cached for the data plane.

Only a SHA-512 digest of each token is stored (django-rest-knox); the token itself
is shown once, when issued (``canary_user``, or the admin's token page). After a
full authentication the digest is written to Redis for ``TOKEN_CACHE_SECONDS`` so
the data plane's fast path can accept the token in its one round-trip; deleting a
token or changing its user removes the entry at once (``canary.api.signals``).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from knox.auth import TokenAuthentication
from knox.crypto import hash_token
from rest_framework.exceptions import AuthenticationFailed, Throttled
from rest_framework.request import Request

from canary.login_lockout import client_address
from canary.redis import redis_client, redis_enabled

logger = logging.getLogger(__name__)

# How long Redis vouches for a token without asking the database again. A
# revocation deletes the entry at once (``canary.api.signals``); this bounds a
# revocation made while Redis was unreachable.
TOKEN_CACHE_SECONDS = 60


def token_digest(token: str) -> str:
    """The digest knox stores for ``token`` (SHA-512), which also keys the Redis cache."""
    return hash_token(token)


def _token_cache_key(digest: str) -> str:
    return f"canary:tok:{digest}"


def remember_token(digest: str, user_id: Any, expiry: datetime | None) -> None:
    """Let the data plane's fast path accept this token without a database query."""
    if not redis_enabled():
        return
    seconds = TOKEN_CACHE_SECONDS
    if expiry is not None:
        seconds = min(seconds, int((expiry - timezone.now()).total_seconds()))
        if seconds < 1:
            return
    try:
        redis_client().set(_token_cache_key(digest), str(user_id), ex=seconds)
    except Exception as exc:
        logger.warning("token not cached (%s)", exc)


def forget_tokens(digests: list[str]) -> None:
    if not redis_enabled() or not digests:
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
        try:
            authenticated = super().authenticate(request)
        except AuthenticationFailed:
            refuse_wrong_token(request)
            raise
        if authenticated is not None:
            user, token = authenticated
            remember_token(token.digest, user.pk, token.expiry)
        return authenticated


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
