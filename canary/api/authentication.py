from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.cache import cache
from rest_framework.authentication import TokenAuthentication
from rest_framework.exceptions import AuthenticationFailed, Throttled
from rest_framework.request import Request


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
            return super().authenticate(request)
        except AuthenticationFailed:
            limit = settings.CANARY_AUTH_FAILURES_PER_MINUTE
            if limit and self._count_failure(request) > limit:
                raise Throttled(
                    wait=60, detail="Too many failed authentication attempts."
                ) from None
            raise

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
