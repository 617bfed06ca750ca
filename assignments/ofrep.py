"""OFREP, the OpenFeature Remote Evaluation Protocol, over ``resolve`` (SPEC §10.5).

Each rule set is a flag: its key is the rule set's name (or id), its value and
variant the version a context gets, ``"v1"`` or ``"v2"``, decided by exactly the
routing path of ``resolve`` (``services.dataplane_resolve``), so OpenFeature's own
providers read the same answer as ``useCanaryVersion`` and store the same sticky
decision. Shared by the API views and the data plane's fast path, which answer alike.

``reason``: ``STATIC`` when no canary runs, ``SPLIT`` when the canary's split decided
now, ``TARGETING_MATCH`` when a stored assignment decided or the target filter left
the context out, ``DEFAULT`` while the circuit breaker sends everyone to v1.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

import orjson
from django.conf import settings

from assignments import router, services
from assignments.routing import canonical_ruleset_id, routing_state_for
from canary.errors import NotFound
from deployments.models import Deployment, RuleSet

FLAG_PATH = re.compile(r"^/ofrep/v1/evaluate/flags/([^/]+)/?$")
BULK_PATH = re.compile(r"^/ofrep/v1/evaluate/flags/?$")
_IDENTIFIER = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,200}$")
# OpenFeature's context field -> the routing tier's identifier.
_TIERS = {"targetingKey": "user_id", "sessionId": "session_id", "workflowId": "workflow_id"}
_MAX_KEY = 200


class OfrepError(Exception):
    """An answer the protocol defines: ``{key?, errorCode, errorDetails}`` with its status."""

    def __init__(self, status: int, code: str, details: str, key: str | None = None) -> None:
        super().__init__(details)
        self.status, self.code, self.details, self.key = status, code, details, key

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"errorCode": self.code, "errorDetails": self.details}
        if self.key is not None:
            body = {"key": self.key, **body}
        return body


def flag_not_found(key: str, details: str | None = None) -> OfrepError:
    return OfrepError(404, "FLAG_NOT_FOUND", details or f"No flag '{key}'.", key)


# --- flag keys ---------------------------------------------------------------------------


@dataclass
class _Named:
    ruleset_id: str | None
    checked_at: float


_names: dict[str, _Named] = {}
_names_lock = threading.Lock()


def flag_ruleset_id(key: str) -> str | None:
    """The rule set a flag key names: its canonical id, or its name; None when neither.

    A name is looked up in PostgreSQL at most once per ``CANARY_ROUTING_RECHECK_SECONDS``
    per process (the routing state's own recheck period), so the data plane stays one
    Redis round trip; a missing name is remembered as briefly.
    """
    canonical = canonical_ruleset_id(key)
    if canonical is not None:
        return canonical
    if len(key) > _MAX_KEY:
        return None
    now = time.monotonic()
    known = _names.get(key)
    if known is not None and now - known.checked_at < float(
        settings.CANARY_ROUTING_RECHECK_SECONDS
    ):
        return known.ruleset_id
    row = RuleSet.objects.filter(name=key).values_list("pk", flat=True).first()
    found = str(row) if row is not None else None
    with _names_lock:
        if len(_names) >= 10_000:
            _names.clear()
        _names[key] = _Named(found, now)
    return found


# --- the request -------------------------------------------------------------------------


def routing_context(body: Any) -> router.RoutingContext:
    """The routing ids from an OFREP request body; ``INVALID_CONTEXT`` (400) when unusable.

    Attributes other than ``targetingKey``, ``sessionId`` and ``workflowId`` are
    accepted and ignored: routing reads only the ids.
    """
    if body is None:
        return router.RoutingContext(None, None, None)
    if not isinstance(body, dict):
        raise OfrepError(400, "PARSE_ERROR", "The body must be a JSON object.")
    context = body.get("context")
    if context is None:
        return router.RoutingContext(None, None, None)
    if not isinstance(context, dict):
        raise OfrepError(400, "INVALID_CONTEXT", "context must be an object.")
    ids: dict[str, str | None] = {}
    for field, name in _TIERS.items():
        value = context.get(field)
        if value is None or value == "":
            ids[name] = None
        elif isinstance(value, str) and _IDENTIFIER.match(value):
            ids[name] = value
        else:
            raise OfrepError(
                400,
                "INVALID_CONTEXT",
                f"context.{field} must be 1-200 characters: letters, digits and . _ : @ / + = -",
            )
    return router.RoutingContext(
        workflow_id=ids["workflow_id"], session_id=ids["session_id"], user_id=ids["user_id"]
    )


def parse_body(raw: bytes) -> Any:
    if not raw.strip():
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise OfrepError(400, "PARSE_ERROR", "The body is not valid JSON.") from None


# --- the answer --------------------------------------------------------------------------


def reason_of(resolution: services.Resolution, context: router.RoutingContext) -> str:
    if not resolution.canary_running:
        return "STATIC"
    if resolution.assignment_priority is None:
        return "DEFAULT"  # the breaker is open: v1 for everyone
    if resolution.stored:
        return "TARGETING_MATCH"
    state = routing_state_for(ruleset_id=resolution.ruleset_id)
    policy = state.policy if state is not None else None
    if (
        policy is not None
        and policy.has_target_filter
        and context.present_tiers()
        and not policy.is_eligible(context)
    ):
        return "TARGETING_MATCH"
    return "SPLIT"


def evaluation(
    key: str, resolution: services.Resolution, context: router.RoutingContext
) -> dict[str, Any]:
    """One flag's successful evaluation, as the protocol shapes it."""
    return {
        "key": key,
        "value": resolution.canary_version,
        "variant": resolution.canary_version,
        "reason": reason_of(resolution, context),
        "metadata": {"deploymentId": resolution.deployment_id, "version": resolution.version},
    }


def evaluate_flag(
    key: str,
    context: router.RoutingContext,
    *,
    client_check: services.ClientCheck | None = None,
    allowed: frozenset[str] | None = None,
) -> dict[str, Any]:
    """``POST /ofrep/v1/evaluate/flags/{key}``; ``allowed``: a client token's rule sets."""
    ruleset_id = flag_ruleset_id(key)
    if ruleset_id is None or (allowed is not None and ruleset_id not in allowed):
        raise flag_not_found(key)
    try:
        resolution = services.dataplane_resolve(
            ruleset_id=ruleset_id, context=context, client_check=client_check
        )
    except services.NothingDeployed:
        raise flag_not_found(key, f"Nothing is deployed for flag '{key}'.") from None
    except NotFound:
        raise flag_not_found(key) from None
    return evaluation(key, resolution, context)


_flags_cache: tuple[float, list[tuple[str, str]]] | None = None


def _deployed_flags() -> list[tuple[str, str]]:
    """(name, id) of every rule set with a deployment serving, cached as the names are."""
    global _flags_cache
    now = time.monotonic()
    cached = _flags_cache
    if cached is not None and now - cached[0] < float(settings.CANARY_ROUTING_RECHECK_SECONDS):
        return cached[1]
    rows = (
        RuleSet.objects.filter(
            pk__in=Deployment.objects.filter(status__in=("active", "canary")).values("ruleset_id")
        )
        .order_by("name")
        .values_list("name", "pk")
    )
    flags = [(name, str(pk)) for name, pk in rows]
    _flags_cache = (now, flags)
    return flags


def evaluate_all(
    context: router.RoutingContext,
    *,
    client_check: services.ClientCheck | None = None,
    allowed: frozenset[str] | None = None,
) -> dict[str, Any]:
    """``POST /ofrep/v1/evaluate/flags``: every flag the caller may read that serves a version.

    A client token reads its own rule sets; an API token every deployed rule set.
    ``client_check`` (the fast path) is folded into the first flag's round trip, so
    the token and the rate are checked once per request; with no flag to evaluate
    there is no round trip to fold it into (``TokenNotCached``: the API answers).
    """
    flags = _deployed_flags()
    if allowed is not None:
        flags = [(name, rid) for name, rid in flags if rid in allowed]
    if client_check is not None and not flags:
        raise services.TokenNotCached()
    answers = []
    for name, ruleset_id in flags:
        try:
            resolution = services.dataplane_resolve(
                ruleset_id=ruleset_id, context=context, client_check=client_check
            )
        except (services.NothingDeployed, NotFound):
            continue  # ended or removed since the list was read
        finally:
            client_check = None
        answers.append(evaluation(name, resolution, context))
    return {"flags": answers}


def ofrep_caches_clear() -> None:
    """Forget every flag name and the flag list (a process that recreated its rule sets)."""
    global _flags_cache
    with _names_lock:
        _names.clear()
    _flags_cache = None


def etag_of(payload: bytes) -> str:
    """The bulk answer's ETag. A new context's first answer says ``SPLIT`` and the next
    ones ``TARGETING_MATCH`` (its decision is stored by then), so its tag changes once."""
    return '"' + hashlib.blake2b(payload, digest_size=16).hexdigest() + '"'


def not_modified(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110's weak comparison of ``If-None-Match`` with the answer's ``ETag``."""
    if not if_none_match:
        return False
    for candidate in if_none_match.split(","):
        tag = candidate.strip()
        if tag == "*" or tag.removeprefix("W/") == etag:
            return True
    return False
