"""How django-axes identifies the client of an admin console login.

Axes counts failed logins per username and per client address (settings
``AXES_*``, from ``CANARY_LOGIN_*``). The address is ``REMOTE_ADDR`` unless the
operator says how many proxies in front of the service append to
``X-Forwarded-For`` (``CANARY_TRUSTED_PROXY_COUNT``): then it is the entry that
many places from the right, the one the outermost trusted proxy saw. Entries
further left are written by the client and never trusted, so a guesser cannot
spread its failures over invented addresses.
"""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest


def client_address(request: HttpRequest) -> str | None:
    remote = request.META.get("REMOTE_ADDR")
    proxies = settings.CANARY_TRUSTED_PROXY_COUNT
    if proxies <= 0:
        return remote
    forwarded = [
        part.strip()
        for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")
        if part.strip()
    ]
    if len(forwarded) < proxies:
        return remote
    return forwarded[-proxies]
