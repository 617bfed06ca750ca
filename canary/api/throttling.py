"""Per-client rate limits, counted in the shared cache (Redis when configured).

Every API view is limited: the data plane under ``dataplane``, everything else
under ``api``. Rates come from settings at request time (``CANARY_THROTTLE_RATES``),
so an operator changes them without code; an empty rate turns a limit off.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle


class ScopedClientThrottle(SimpleRateThrottle):
    """Keyed by user when authenticated, by client IP otherwise."""

    def get_rate(self) -> str | None:
        return settings.CANARY_THROTTLE_RATES.get(self.scope) or None

    def allow_request(self, request: Request, view: Any) -> bool:
        self.scope = getattr(view, "throttle_scope", None) or "api"
        self.rate = self.get_rate()
        if self.rate is None:
            return True
        self.num_requests, self.duration = self.parse_rate(self.rate)
        return super().allow_request(request, view)

    def get_cache_key(self, request: Request, view: Any) -> str:
        ident = request.user.pk if request.user and request.user.is_authenticated else None
        return self.cache_format % {"scope": self.scope, "ident": ident or self.get_ident(request)}
