"""The data plane's request path, in front of Django (see ``canary.wsgi``).

``execute`` and ``resolve`` are what every caller of the rule engine pays for,
so the common request (a valid Bearer token, a well-formed body, Redis up) is
served here without Django's middleware, URL resolver, DRF or the ORM: parse,
evaluate the version the context most likely gets, one Redis round-trip
(``assignments.sticky``: token, rate, generation, breaker, sticky look-up and
claim, and the execution record), answer.

Anything else is handed to the full Django application untouched, which answers
exactly as the API always has: a missing or unknown token (DRF authenticates it
against the database and caches it for the next request), a client token or a
request with an ``Origin`` (a browser: CORS), a body the fast path
does not accept without doubt (DRF's serializers name the field in a 400), a
host not allowed, Redis unreachable. The hand-over happens only before anything
is stored, so a request is never half-served twice.
"""

from __future__ import annotations

import io
import logging
import os
import re
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qsl

import orjson
from django.conf import settings
from django.core.cache import caches
from django.db import DatabaseError
from django.http.request import split_domain_port, validate_host
from django.utils.http import parse_header_parameters
from rest_framework.exceptions import Throttled
from rest_framework.throttling import SimpleRateThrottle

from assignments import buffer, ofrep, router, services
from assignments.api.serializers import IDENTIFIER_PATTERN, execute_answer, resolve_answer
from assignments.client_tokens import is_client_token
from assignments.routing import canonical_ruleset_id
from canary.api.authentication import auth_generation, token_digest
from canary.api.parsers import MAX_JSON_DEPTH, json_problem
from canary.errors import DomainError, NotFound
from canary.redis import redis_available
from deployments.rules import InputBoundsError, check_input_bounds

logger = logging.getLogger(__name__)

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

_ROUTE = re.compile(r"^/api/v1/rulesets/([^/]+)/(execute|resolve)/?$")
_IDENTIFIER = re.compile(IDENTIFIER_PATTERN)
# orjson reads an integer past 64 bits as a float; nineteen digits in a row may be one.
_LONG_DIGITS = re.compile(rb"[0-9]{19}")
_WIDE = float(2**63)
_CONTEXT_FIELDS = frozenset({"user_id", "session_id", "workflow_id"})
_EXECUTE_FIELDS = _CONTEXT_FIELDS | {"input"}
_STATUS = {
    200: "200 OK",
    304: "304 Not Modified",
    404: "404 Not Found",
    409: "409 Conflict",
    429: "429 Too Many Requests",
}
# The headers Django's security middleware adds to every answer.
_STATIC_HEADERS = [
    ("Content-Type", "application/json"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "same-origin"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("X-Frame-Options", "DENY"),
]
# What the API adds to every answer of each view: DRF its methods, django-cors-headers
# ``Vary`` where CORS applies (``CORS_URLS_REGEX``: resolve).
_VIEW_HEADERS = {
    "execute": [("Allow", "POST, OPTIONS")],
    "resolve": [("Allow", "GET, HEAD, OPTIONS"), ("Vary", "origin")],
    "ofrep": [("Allow", "POST, OPTIONS"), ("Vary", "origin")],
}
# An OFREP body is a context of a few ids; anything larger is the API's to read.
_MAX_OFREP_BODY = 16 * 1024


class _Decline(Exception):
    """Not for the fast path: Django answers this request."""


class DataPlaneFastPath:
    """WSGI middleware: serves the common data-plane request, hands the rest to Django."""

    def __init__(self, app: WSGIApp) -> None:
        self.app = app
        self._hosts: dict[str, bool] = {}
        self._throttle_prefix = caches["default"].make_key("throttle:dataplane:")

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        path = environ.get("PATH_INFO", "")
        match = _ROUTE.match(path)
        ofrep_match = None if match else _ofrep_match(path)
        if (
            (match is None and ofrep_match is None)
            or not settings.CANARY_FAST_PATH
            or not redis_available()
        ):
            return self.app(environ, start_response)
        buffer.start_background_drainer()
        try:
            if ofrep_match is not None:
                return self._serve_ofrep(environ, start_response, ofrep_match[0])
            assert match is not None
            return self._serve(environ, start_response, match.group(1), match.group(2))
        except (_Decline, DatabaseError):
            # NOTE: a process that has not loaded the rule set's routing state yet
            # needs PostgreSQL; the full API then answers (its JSON error).
            return self.app(environ, start_response)

    # --- the request ------------------------------------------------------------

    def _serve(
        self, environ: dict[str, Any], start_response: Callable[..., Any], rid: str, verb: str
    ) -> Any:
        method = environ.get("REQUEST_METHOD")
        if (verb, method) not in (("execute", "POST"), ("resolve", "GET")):
            raise _Decline
        view_headers = _VIEW_HEADERS[verb]
        authorization = environ.get("HTTP_AUTHORIZATION", "")
        if not authorization.startswith("Bearer ") or not self._host_allowed(environ):
            raise _Decline
        token = authorization[7:].strip()
        if not token or " " in token or canonical_ruleset_id(rid) is None:
            raise _Decline
        # NOTE: client tokens (resolve only, looked up in the database on every
        # request so a revocation holds at once) and cross-origin requests (CORS,
        # decided by django-cors-headers) are always Django's: this path can then
        # never run execute for a client token, nor answer a browser without CORS.
        if is_client_token(token) or "HTTP_ORIGIN" in environ:
            raise _Decline
        # NOTE: may read PostgreSQL (every CANARY_AUTH_RECHECK_SECONDS); a process that
        # never could hands the request to Django, which answers for itself.
        now = time.time()
        check = services.ClientCheck(
            token_digest=token_digest(token),
            auth_generation=auth_generation(),
            throttle=self._throttle(now),
        )
        try:
            if verb == "resolve":
                query = _query(environ)
                if not _CONTEXT_FIELDS.issuperset(query):
                    raise _Decline
                context = _context(query)
                resolution = services.dataplane_resolve(
                    ruleset_id=rid, context=context, client_check=check
                )
                body = resolve_answer(resolution)
            else:
                data = _execute_body(environ)
                result = services.dataplane_execute(
                    ruleset_id=rid, input=data["input"], context=_context(data), client_check=check
                )
                resolution = result.resolution
                body = execute_answer(result)
        except (services.TokenNotCached, services.RedisUnavailable, NotFound) as exc:
            # NOTE: an unknown rule set is found out before Redis vouches for the token or
            # counts the request; the API then says 401 or 429 where they come first.
            raise _Decline from exc
        except services.RateLimited:
            # NOTE: the time left in the window, as the API's throttle says it (DRF
            # rounds it up and words it), not the counter key's TTL, which outlives it.
            throttled = Throttled(wait=self._retry_after(now))
            return _answer(
                start_response,
                environ,
                429,
                {"detail": str(throttled.detail), "code": "throttled"},
                [*view_headers, ("Retry-After", str(throttled.wait))],
            )
        except DomainError as exc:
            return _answer(start_response, environ, exc.status_code, exc.as_dict(), view_headers)
        return _answer(
            start_response,
            environ,
            200,
            body,
            [*view_headers, ("X-Canary-Version", resolution.canary_version)],
        )

    def _serve_ofrep(
        self, environ: dict[str, Any], start_response: Callable[..., Any], key: str | None
    ) -> Any:
        """OFREP (``assignments.ofrep``): one flag, or every flag with its ETag.

        Only an evaluation is answered here; a protocol error (an unknown flag, a
        context it cannot use) is the API's, which authenticates the token first.
        """
        view_headers = _VIEW_HEADERS["ofrep"]
        token = self._bearer(environ, "POST")
        now = time.time()
        check = services.ClientCheck(
            token_digest=token_digest(token),
            auth_generation=auth_generation(),
            throttle=self._throttle(now),
        )
        try:
            context = ofrep.routing_context(ofrep.parse_body(_ofrep_body(environ)))
            if key is not None:
                body = ofrep.evaluate_flag(key, context, client_check=check)
            else:
                body = ofrep.evaluate_all(context, client_check=check)
        except (
            ofrep.OfrepError,
            services.TokenNotCached,
            services.RedisUnavailable,
            NotFound,
        ) as exc:
            raise _Decline from exc
        except services.RateLimited:
            throttled = Throttled(wait=self._retry_after(now))
            return _answer(
                start_response,
                environ,
                429,
                {"detail": str(throttled.detail), "code": "throttled"},
                [*view_headers, ("Retry-After", str(throttled.wait))],
            )
        except DomainError as exc:
            return _answer(start_response, environ, exc.status_code, exc.as_dict(), view_headers)
        if key is not None:
            return _answer(start_response, environ, 200, body, view_headers)
        payload = orjson.dumps(body)
        etag = ofrep.etag_of(payload)
        headers = [*view_headers, ("ETag", etag)]
        if ofrep.not_modified(environ.get("HTTP_IF_NONE_MATCH"), etag):
            return _answer(start_response, environ, 304, None, headers)
        return _answer(start_response, environ, 200, payload, headers)

    def _bearer(self, environ: dict[str, Any], method: str) -> str:
        """The request's API token, or ``_Decline`` for anything the fast path leaves alone."""
        if environ.get("REQUEST_METHOD") != method:
            raise _Decline
        authorization = environ.get("HTTP_AUTHORIZATION", "")
        if not authorization.startswith("Bearer ") or not self._host_allowed(environ):
            raise _Decline
        token = authorization[7:].strip()
        if not token or " " in token or is_client_token(token) or "HTTP_ORIGIN" in environ:
            raise _Decline
        return token

    def _host_allowed(self, environ: dict[str, Any]) -> bool:
        host = environ.get("HTTP_HOST") or environ.get("SERVER_NAME", "")
        allowed = self._hosts.get(host)
        if allowed is None:
            domain, _ = split_domain_port(host)
            allowed = bool(domain) and validate_host(domain, settings.ALLOWED_HOSTS)
            if len(self._hosts) < 1000:
                self._hosts[host] = allowed
        return allowed

    def _throttle(self, now: float) -> tuple[int, int, str, str] | None:
        rate = _dataplane_rate()
        if rate is None:
            return None
        limit, duration = rate
        window = int(now // duration)
        # The same counter as the API's throttle (``canary.api.throttling``).
        return limit, duration + 1, self._throttle_prefix, f":{window}"

    def _retry_after(self, now: float) -> float:
        """What ``canary.api.throttling.ScopedClientThrottle`` says: the window's time left."""
        rate = _dataplane_rate()
        duration = rate[1] if rate else 1
        return duration - (now % duration)


def _ofrep_match(path: str) -> tuple[str | None] | None:
    """(flag key,) for one flag, (None,) for the bulk endpoint, None for any other path."""
    if not path.startswith("/ofrep/"):
        return None
    single = ofrep.FLAG_PATH.match(path)
    if single is not None:
        return (single.group(1),)
    return (None,) if ofrep.BULK_PATH.match(path) else None


def _ofrep_body(environ: dict[str, Any]) -> bytes:
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise _Decline from None
    if length < 0 or length > _MAX_OFREP_BODY:
        raise _Decline
    if length == 0:
        return b""
    if not _plain_json(environ.get("CONTENT_TYPE", "")):
        raise _Decline
    raw = environ["wsgi.input"].read(length)
    # Whatever happens next, Django must be able to read the body again.
    environ["wsgi.input"] = io.BytesIO(raw)
    return raw


def _dataplane_rate() -> tuple[int, int] | None:
    rate = settings.CANARY_THROTTLE_RATES.get("dataplane") or None
    if rate is None:
        return None
    return SimpleRateThrottle.parse_rate(None, rate)  # type: ignore[arg-type,return-value]


def _query(environ: dict[str, Any]) -> dict[str, str]:
    pairs = parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    query = dict(pairs)
    if len(query) != len(pairs):
        raise _Decline  # a repeated parameter: let the full path decide
    return query


def _context(data: dict[str, Any]) -> router.RoutingContext:
    if not _CONTEXT_FIELDS.issuperset(data.keys() - {"input"}):
        raise _Decline
    values = []
    for name in ("workflow_id", "session_id", "user_id"):
        value = data.get(name)
        if value is not None and not (isinstance(value, str) and _IDENTIFIER.match(value)):
            raise _Decline
        values.append(value)
    return router.RoutingContext(*values)


# Content-Type -> whether the fast path reads the body (bounded, as ``_hosts``).
_json_types: dict[str, bool] = {}


def _plain_json(content_type: str) -> bool:
    """``application/json``, alone or with ``charset=utf-8``: the bodies DRF's JSON parser
    reads as orjson does. Anything else (another type, ``*/*``, another charset, another
    parameter) is the API's to accept or refuse (415), so both paths answer alike."""
    known = _json_types.get(content_type)
    if known is None:
        kind, params = parse_header_parameters(content_type)
        known = kind == "application/json" and all(
            name == "charset" and value.lower() in ("utf-8", "utf8")
            for name, value in params.items()
        )
        if len(_json_types) < 1000:
            _json_types[content_type] = known
    return known


def _execute_body(environ: dict[str, Any]) -> dict[str, Any]:
    if not _plain_json(environ.get("CONTENT_TYPE", "")):
        raise _Decline
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise _Decline from None
    if length <= 0 or length > settings.CANARY_MAX_INPUT_BYTES:
        raise _Decline
    raw = environ["wsgi.input"].read(length)
    # Whatever happens next, Django must be able to read the body again.
    environ["wsgi.input"] = io.BytesIO(raw)
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise _Decline from None
    if (
        not isinstance(data, dict)
        or not _EXECUTE_FIELDS.issuperset(data)
        or not isinstance(data.get("input"), dict)
        or not _storable(raw, data)
    ):
        raise _Decline
    try:
        check_input_bounds(data["input"])
    except InputBoundsError:
        raise _Decline from None  # the API's 400 names what is over the limit
    return data


def _storable(raw: bytes, data: Any) -> bool:
    """What ``canary.api.parsers`` refuses, checked without walking every value.

    orjson already refuses lone surrogates; a NUL can only arrive escaped; a
    document cannot be nested deeper than it has brackets; and an integer that
    orjson read as a float has at least nineteen digits, and became one of at
    least 2**63.
    """
    if b"\\u0000" in raw:
        return False
    # NOTE: a number that may be an integer outside CEL's 64 bits goes to the API,
    # which reads it exactly and names it in a 400 (``check_input_bounds``). The
    # digits alone may be a string (a numeric id): only a float that large says so.
    if _LONG_DIGITS.search(raw) and _has_wide_float(data):
        return False
    if raw.count(b"{") + raw.count(b"[") <= MAX_JSON_DEPTH:
        return True
    return json_problem(data) is None


def _has_wide_float(document: Any) -> bool:
    """Whether a float of magnitude 2**63 or more is anywhere in ``document``."""
    stack = [document]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, float) and abs(item) >= _WIDE:
            return True
    return False


def _answer(
    start_response: Callable[..., Any],
    environ: dict[str, Any],
    status: int,
    body: dict[str, Any] | bytes | None,
    extra: list[tuple[str, str]] | None = None,
) -> list[bytes]:
    """``body``: a document, its JSON already encoded, or None for no body (a 304)."""
    if body is None:
        payload = b""
    elif isinstance(body, bytes):
        payload = body
    else:
        payload = orjson.dumps(body)
    request_id = environ.get("HTTP_X_REQUEST_ID") or os.urandom(16).hex()
    headers = [
        *(_STATIC_HEADERS if body is not None else _STATIC_HEADERS[1:]),
        *([("Content-Length", str(len(payload)))] if body is not None else []),
        ("X-Request-ID", request_id[:100]),
        *(extra or []),
    ]
    start_response(_STATUS.get(status, f"{status} Error"), headers)
    return [payload]
