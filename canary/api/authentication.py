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
    ``CANARY_AUTH_FAILURES_PER_MINUTE`` the address gets 429s for the rest of the
    minute, which makes guessing tokens impractical.
    """

    keyword = "Bearer"

    def authenticate(self, request: Request) -> Any:
        key = self._failure_key(request)
        limit = settings.CANARY_AUTH_FAILURES_PER_MINUTE
        if limit and cache.get(key, 0) >= limit:
            raise Throttled(wait=60, detail="Too many failed authentication attempts.")
        try:
            return super().authenticate(request)
        except AuthenticationFailed:
            if limit:
                cache.add(key, 0, 60)
                try:
                    cache.incr(key)
                except ValueError:  # expired between add and incr
                    cache.set(key, 1, 60)
            raise

    @staticmethod
    def _failure_key(request: Request) -> str:
        address = request.META.get("REMOTE_ADDR", "unknown")
        return f"auth-failures:{address}"
