from __future__ import annotations

import hashlib
import logging
from typing import Any

from django.conf import settings
from django.core.cache import cache
from rest_framework.authentication import TokenAuthentication
from rest_framework.exceptions import AuthenticationFailed, Throttled
from rest_framework.request import Request

from canary.redis import redis_client, redis_enabled

logger = logging.getLogger(__name__)

# How long Redis vouches for a token without asking the database again. A
# revocation deletes the entry at once (``canary.api.signals``); this bounds a
# revocation made while Redis was unreachable.
TOKEN_CACHE_SECONDS = 60


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _token_cache_key(digest: str) -> str:
    return f"canary:tok:{digest}"


def remember_token(token: str, user_id: Any) -> None:
    """Let the data plane's fast path accept this token without a database query."""
    if not redis_enabled():
        return
    try:
        redis_client().set(
            _token_cache_key(token_digest(token)), str(user_id), ex=TOKEN_CACHE_SECONDS
        )
    except Exception as exc:
        logger.warning("token not cached (%s)", exc)


def forget_tokens(tokens: list[str]) -> None:
    if not redis_enabled() or not tokens:
        return
    try:
        redis_client().delete(*(_token_cache_key(token_digest(token)) for token in tokens))
    except Exception as exc:
        logger.warning(
            "revoked tokens not removed from Redis (%s); they expire in %s s",
            exc,
            TOKEN_CACHE_SECONDS,
        )


class BearerTokenAuthentication(TokenAuthentication):
    """``Authorization: Bearer <token>``; its ``WWW-Authenticate`` makes a missing token a 401.

    Wrong tokens are counted per client address; past
    ``CANARY_AUTH_FAILURES_PER_MINUTE`` in a minute, further wrong tokens from that
    address get 429s instead of 401s, which makes guessing tokens impractical
    without slowing down clients that hold a valid one.
    """

    keyword = "Bearer"

    def authenticate(self, request: Request) -> Any:
        try:
            authenticated = super().authenticate(request)
        except AuthenticationFailed:
            limit = settings.CANARY_AUTH_FAILURES_PER_MINUTE
            if limit and self._count_failure(request) > limit:
                raise Throttled(
                    wait=60, detail="Too many failed authentication attempts."
                ) from None
            raise
        if authenticated is not None:
            user, token = authenticated
            remember_token(token.key, user.pk)
        return authenticated

    def _count_failure(self, request: Request) -> int:
        # Counted only on failure, so valid tokens cost nothing extra.
        key = self._failure_key(request)
        cache.add(key, 0, 60)
        try:
            return cache.incr(key) or 0
        except ValueError:  # expired between add and incr, or the cache is unavailable
            return 0

    @staticmethod
    def _failure_key(request: Request) -> str:
        address = request.META.get("REMOTE_ADDR", "unknown")
        return f"auth-failures:{address}"
