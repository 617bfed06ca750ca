"""Which cross-origin requests may read ``resolve`` (and OFREP): django-cors-headers' signal.

``CORS_URLS_REGEX`` limits CORS to the resolve path and no origin is allowed by
settings; this receiver allows an origin per request:

- a request bearing a client token: the token is live, covers the rule set and
  lists the origin;
- anything else, including a preflight (which carries no token): some live
  client token covering the rule set lists the origin.

Any other origin gets no CORS headers, so a browser will not hand it the answer.
"""

from __future__ import annotations

import re
from typing import Any

from django.http import HttpRequest

from assignments import client_tokens
from assignments.routing import canonical_ruleset_id

RESOLVE_PATH = re.compile(r"^/api/v1/rulesets/([^/]+)/resolve/?$")
OFREP_PATH = re.compile(r"^/ofrep/v1/evaluate/flags(/[^/]+)?/?$")


def resolve_cors_allowed(sender: Any, request: HttpRequest, **kwargs: Any) -> bool:
    match = RESOLVE_PATH.match(request.path_info)
    origin = request.headers.get("origin")
    if match is None and origin and OFREP_PATH.match(request.path_info):
        return _ofrep_cors_allowed(request, origin)
    if match is None or not origin:
        return False
    ruleset_id = canonical_ruleset_id(match.group(1))
    try:
        origin = client_tokens.normalize_origin(origin)
    except ValueError:
        return False
    if ruleset_id is None:
        return False
    cached = getattr(request, "_canary_cors", None)
    if cached is not None:
        return cached
    token = client_tokens.bearer_token(request)
    if token is not None and client_tokens.is_client_token(token):
        grant = client_tokens.client_grant_of_request(request)
        allowed = grant is not None and grant.covers(ruleset_id) and origin in grant.allowed_origins
    else:
        allowed = client_tokens.origin_allowed(ruleset_id=ruleset_id, origin=origin)
    request._canary_cors = allowed  # type: ignore[attr-defined]
    return allowed


def _ofrep_cors_allowed(request: HttpRequest, origin: str) -> bool:
    """OFREP names flags, not rule sets, in its paths: the origin must be one a client
    token lists (the token's own, when the request bears one); which flags it may read
    is the view's to decide (a flag outside the token's rule sets is FLAG_NOT_FOUND)."""
    try:
        origin = client_tokens.normalize_origin(origin)
    except ValueError:
        return False
    cached = getattr(request, "_canary_cors", None)
    if cached is not None:
        return cached
    token = client_tokens.bearer_token(request)
    if token is not None and client_tokens.is_client_token(token):
        grant = client_tokens.client_grant_of_request(request)
        allowed = grant is not None and origin in grant.allowed_origins
    else:
        allowed = client_tokens.origin_allowed_anywhere(origin=origin)
    request._canary_cors = allowed  # type: ignore[attr-defined]
    return allowed
