"""Backtests (SPEC 10.2): a version judged against another on recorded production inputs.

Rules are deterministic, so evaluating both versions on the inputs production
actually sent says exactly which decisions a release would change, before anyone
is served it. The inputs are the rule set's captured inputs and the stored inputs
of its canaries' executions, newest first, at most ``limit``.

A run happens in the Celery worker, a chunk (``CANARY_BACKTEST_CHUNK``) at a time,
and never holds more than one chunk: each input source is read in keyset pages
(``(created_at, id)`` below a cursor, on the sources' indexes), and what the run
has found so far is a handful of counters, the decision changes (bounded by the
rules' pairs), a latency-ratio histogram and at most ten unexpected examples.
Each chunk commits its counters, its differences and both cursors in one
transaction, under the backtest's row lock and only if the cursors are still those
it read (compare-and-set), so:

- a run that dies (a worker killed) leaves the backtest ``running`` with its last
  chunk committed; ``backtest_sweep`` (every minute) re-queues one whose progress
  stopped for ``CANARY_BACKTEST_STALE_SECONDS``, which resumes at the cursors and
  reaches the same numbers, and fails it after ``CANARY_BACKTEST_MAX_ATTEMPTS``;
- two runs of one backtest (a redelivered task) never count a chunk twice: the
  second to commit finds the cursors moved and re-reads.

The report uses ``/shadow``'s statistics: Wilson's interval for the disagreement
rate, the median v2/v1 latency ratio with its order-statistic interval from the
same 2% ratio buckets (``decision.shadow``).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import connection, transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from canary.dispatch import enqueue
from canary.errors import NotFound, ValidationFailed
from deployments import services as deployment_services
from deployments.choices import DeploymentStatus, EventAction
from deployments.models import Deployment, RuleSet, RuleSetVersion
from deployments.rules import CompiledRuleSet, RuleCompileError, compile_rules
from deployments.selectors import compiled_rules_for
from deployments.services import Actor, actor_label
from monitoring.decision.shadow import _ratio_from_histogram
from monitoring.logstore import columns
from monitoring.models import (
    Backtest,
    BacktestDifference,
    BacktestStatus,
    CapturedInput,
    ExecutionLog,
)
from monitoring.notifications.webhooks import event_source, webhook_announce
from monitoring.recording.executions import outcomes_agree
from monitoring.statistics import paired

logger = logging.getLogger(__name__)

RUN_TASK = "monitoring.tasks.backtest_run_task"
DEFAULT_LIMIT = 10_000
MAX_LIMIT = 1_000_000
MAX_EXPECT_CHANGES = 2_000
MAX_UNEXPECTED_EXAMPLES = 10
CAPTURED, EXECUTIONS = "captured", "executions"
# The cursor before any input: every row at or before the backtest's creation.
_FIRST_ID = 2**63 - 1


# --- creating ---------------------------------------------------------------------------


def _expectation(condition: str) -> CompiledRuleSet:
    """``expect_changes`` as a one-rule rule set: compiled, bounded and costed like any rule."""
    try:
        return compile_rules(
            [{"name": "expect_changes", "condition": condition, "output": True}], False
        )
    except RuleCompileError as exc:
        raise ValidationFailed({"expect_changes": [str(exc)]}) from exc


def _version_or_400(ruleset: RuleSet, field_name: str, version: Any) -> RuleSetVersion:
    if not isinstance(version, str) or not version:
        raise ValidationFailed({field_name: ["Must be a version of the rule set."]})
    found = RuleSetVersion.objects.filter(ruleset=ruleset, version=version).first()
    if found is None:
        raise ValidationFailed(
            {field_name: [f"Rule set '{ruleset.name}' has no version '{version}'."]}
        )
    return found


def backtest_create(
    *,
    ruleset_id: Any,
    version: Any,
    against: Any = None,
    limit: Any = None,
    expect_changes: Any = None,
    actor: Actor,
) -> Backtest:
    """Queue a backtest of ``version`` against ``against`` (default: the active version)."""
    ruleset = RuleSet.objects.filter(pk=ruleset_id).first()
    if ruleset is None:
        raise NotFound(f"No rule set with id '{ruleset_id}'.")
    v2 = _version_or_400(ruleset, "version", version)
    if against is None:
        active = (
            Deployment.objects.filter(ruleset=ruleset, status=DeploymentStatus.ACTIVE)
            .select_related("version")
            .first()
        )
        if active is None:
            raise ValidationFailed(
                {"against": ["The rule set has no active version; name the version to compare."]}
            )
        v1 = active.version
    else:
        v1 = _version_or_400(ruleset, "against", against)
    if limit is None:
        limit = DEFAULT_LIMIT
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise ValidationFailed({"limit": [f"Must be an integer from 1 to {MAX_LIMIT:,}."]})
    condition = ""
    if expect_changes is not None:
        if not isinstance(expect_changes, str) or not expect_changes.strip():
            raise ValidationFailed({"expect_changes": ["Must be a non-blank CEL condition."]})
        if len(expect_changes) > MAX_EXPECT_CHANGES:
            raise ValidationFailed(
                {"expect_changes": [f"Must be at most {MAX_EXPECT_CHANGES} characters."]}
            )
        _expectation(expect_changes)
        condition = expect_changes
    user = None if actor is None or isinstance(actor, str) else actor
    with transaction.atomic():
        backtest = Backtest.objects.create(
            ruleset=ruleset,
            version=v2,
            against=v1,
            limit=limit,
            expect_changes=condition,
            created_by=user,
        )
        transaction.on_commit(lambda: enqueue(RUN_TASK, str(backtest.pk)), robust=True)
    return backtest


# --- reading the inputs -----------------------------------------------------------------


@dataclass(frozen=True)
class _Input:
    created_at: datetime
    source: str
    id: int
    document: Any


def _sources(backtest: Backtest) -> dict[str, Any]:
    deployment_ids = list(
        Deployment.objects.filter(ruleset_id=backtest.ruleset_id).values_list("pk", flat=True)
    )
    return {CAPTURED: backtest.ruleset_id, EXECUTIONS: deployment_ids}


_READ_SQL = {
    CAPTURED: (
        "SELECT created_at, id, input::text FROM monitoring_capturedinput "
        "WHERE ruleset_id = %s AND (created_at, id) < (%s, %s) "
        "ORDER BY created_at DESC, id DESC LIMIT %s"
    ),
    # Only executions whose input was stored ("*": CANARY_STORE_INPUTS was off).
    EXECUTIONS: (
        "SELECT created_at, id, input::text FROM monitoring_executionlog "
        "WHERE deployment_id = ANY(%s) AND (created_at, id) < (%s, %s) "
        "AND (redacted_paths IS NULL OR NOT redacted_paths @> '[\"*\"]'::jsonb) "
        "ORDER BY created_at DESC, id DESC LIMIT %s"
    ),
}


def _queryset(source: str, key: Any) -> QuerySet:
    if source == CAPTURED:
        return CapturedInput.objects.filter(ruleset_id=key)
    return ExecutionLog.objects.filter(deployment_id__in=key).exclude(redacted_paths=["*"])


def _read(source: str, key: Any, cursor: tuple[datetime, int], count: int) -> list[_Input]:
    """Up to ``count`` inputs of one source strictly before ``cursor``, newest first."""
    if source == EXECUTIONS and not key:
        return []
    if connection.vendor == "postgresql":
        with connection.cursor() as db:
            db.execute(_READ_SQL[source], [key, cursor[0], cursor[1], count])
            return [
                _Input(at, source, row_id, orjson.loads(text)) for at, row_id, text in db.fetchall()
            ]
    before = Q(created_at__lt=cursor[0]) | Q(created_at=cursor[0], id__lt=cursor[1])
    rows = (
        _queryset(source, key)
        .filter(before)
        .order_by("-created_at", "-id")
        .values_list("created_at", "id", "input")[:count]
    )
    return [_Input(at, source, row_id, document) for at, row_id, document in rows]


def _count(source: str, key: Any, until: datetime) -> int:
    if source == EXECUTIONS and not key:
        return 0
    return _queryset(source, key).filter(created_at__lte=until).count()


def _next_chunk(
    sources: dict[str, Any], cursors: dict[str, list[Any]], count: int
) -> tuple[list[_Input], dict[str, list[Any]]]:
    """The next ``count`` inputs across both sources, newest first, and the cursors after them.

    Each source is read ``count`` deep, so the newest ``count`` of the union are among them.
    """
    fetched: list[_Input] = []
    for source, key in sources.items():
        at, row_id = cursors[source]
        fetched += _read(source, key, (datetime.fromisoformat(at), row_id), count)
    fetched.sort(key=lambda item: (item.created_at, item.source, item.id), reverse=True)
    chunk = fetched[:count]
    moved = {source: list(cursor) for source, cursor in cursors.items()}
    for item in chunk:
        moved[item.source] = [item.created_at.isoformat(), item.id]
    return chunk, moved


# --- evaluating -------------------------------------------------------------------------


def _side(evaluation: Any) -> str:
    if evaluation.success:
        return evaluation.matched_rule or ""
    return evaluation.error.rule if evaluation.error and evaluation.error.rule else ""


@dataclass
class _Tally:
    """What one chunk found; added to the backtest's state when the chunk commits."""

    outcomes: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(
            ("both_succeeded", "only_v1_failed", "only_v2_failed", "both_failed"), 0
        )
    )
    agreed: int = 0
    changes: dict[str, int] = field(default_factory=dict)
    ratio: dict[int, int] = field(default_factory=dict)
    unexpected: int = 0
    examples: list[dict[str, Any]] = field(default_factory=list)
    differences: list[dict[str, Any]] = field(default_factory=list)


def evaluate_pair(
    v1: CompiledRuleSet,
    v2: CompiledRuleSet,
    document: Any,
    order: int = 0,
) -> tuple[Any, Any, float, float]:
    """Both versions on one input, in alternating order (neither always pays for cold
    caches): (v1 evaluation, v2 evaluation, v1 ms, v2 ms)."""
    clock = time.perf_counter
    if order % 2:
        start = clock()
        second = v2.evaluate(document)
        middle = clock()
        first = v1.evaluate(document)
        end = clock()
        return first, second, (end - middle) * 1000, (middle - start) * 1000
    start = clock()
    first = v1.evaluate(document)
    middle = clock()
    second = v2.evaluate(document)
    end = clock()
    return first, second, (middle - start) * 1000, (end - middle) * 1000


def _evaluate_chunk(
    chunk: list[_Input],
    v1: CompiledRuleSet,
    v2: CompiledRuleSet,
    expectation: CompiledRuleSet | None,
    first_position: int,
    room_for_differences: int,
) -> _Tally:
    tally = _Tally()
    log_ratio = math.log(columns.RATIO)
    for offset, item in enumerate(chunk):
        position = first_position + offset
        one, two, one_ms, two_ms = evaluate_pair(v1, v2, item.document, position)
        if one.success and two.success:
            tally.outcomes["both_succeeded"] += 1
        elif one.success:
            tally.outcomes["only_v2_failed"] += 1
        elif two.success:
            tally.outcomes["only_v1_failed"] += 1
        else:
            tally.outcomes["both_failed"] += 1
        if one_ms > 0 and two_ms > 0:
            bucket = math.floor(math.log(two_ms / one_ms) / log_ratio)
            tally.ratio[bucket] = tally.ratio.get(bucket, 0) + 1
        if outcomes_agree(one.success, one.output, two.success, two.output):
            tally.agreed += 1
            continue
        v1_rule, v2_rule = _side(one), _side(two)
        key = orjson.dumps([v1_rule, v2_rule, one.output, two.output]).decode()
        tally.changes[key] = tally.changes.get(key, 0) + 1
        expected = None
        if expectation is not None:
            verdict = expectation.evaluate(item.document)
            expected = bool(verdict.success and verdict.output is True)
        difference = {
            "position": position,
            "input": item.document,
            "v1_output": one.output,
            "v2_output": two.output,
            "v1_rule": v1_rule[:100],
            "v2_rule": v2_rule[:100],
            "expected": expected,
        }
        if expected is False:
            tally.unexpected += 1
            if len(tally.examples) < MAX_UNEXPECTED_EXAMPLES:
                tally.examples.append({k: v for k, v in difference.items() if k != "position"})
        if len(tally.differences) < room_for_differences:
            tally.differences.append(difference)
    return tally


def _empty_state(until: datetime) -> dict[str, Any]:
    start = [until.isoformat(), _FIRST_ID]
    return {
        "cursors": {CAPTURED: list(start), EXECUTIONS: list(start)},
        "outcomes": dict.fromkeys(
            ("both_succeeded", "only_v1_failed", "only_v2_failed", "both_failed"), 0
        ),
        "agreed": 0,
        "changes": {},
        "ratio": {},
        "unexpected": 0,
        "examples": [],
        "differences": 0,
    }


def _merged(state: dict[str, Any], tally: _Tally, cursors: dict[str, list[Any]]) -> dict[str, Any]:
    merged = dict(state)
    merged["cursors"] = cursors
    merged["outcomes"] = {
        name: state["outcomes"][name] + tally.outcomes[name] for name in state["outcomes"]
    }
    merged["agreed"] = state["agreed"] + tally.agreed
    changes = dict(state["changes"])
    for key, count in tally.changes.items():
        changes[key] = changes.get(key, 0) + count
    merged["changes"] = changes
    ratio = dict(state["ratio"])
    for bucket, count in tally.ratio.items():
        ratio[str(bucket)] = ratio.get(str(bucket), 0) + count
    merged["ratio"] = ratio
    merged["unexpected"] = state["unexpected"] + tally.unexpected
    room = MAX_UNEXPECTED_EXAMPLES - len(state["examples"])
    merged["examples"] = state["examples"] + tally.examples[: max(0, room)]
    merged["differences"] = state["differences"] + len(tally.differences)
    return merged


# --- running ----------------------------------------------------------------------------


def _claim(backtest_id: Any, now: datetime) -> Backtest | None:
    """Mark the backtest running (one more attempt); None when there is nothing to run."""
    with transaction.atomic():
        backtest = Backtest.objects.select_for_update().filter(pk=backtest_id).first()
        if backtest is None or backtest.status in (BacktestStatus.DONE, BacktestStatus.FAILED):
            return None
        if backtest.attempts >= settings.CANARY_BACKTEST_MAX_ATTEMPTS:
            _fail(backtest, f"gave up after {backtest.attempts} attempts", now)
            return None
        fields = ["status", "attempts", "heartbeat_at"]
        if not backtest.state:
            backtest.state = _empty_state(backtest.created_at)
            sources = _sources(backtest)
            available = sum(
                _count(source, key, backtest.created_at) for source, key in sources.items()
            )
            backtest.total = min(backtest.limit, available)
            fields += ["state", "total"]
        backtest.status = BacktestStatus.RUNNING
        backtest.attempts += 1
        backtest.heartbeat_at = now
        backtest.save(update_fields=fields)
        return backtest


def backtest_run(*, backtest_id: Any) -> None:
    """Run or resume a backtest to its end (idempotent: a finished one is left alone)."""
    backtest = _claim(backtest_id, timezone.now())
    if backtest is None:
        return
    try:
        _run_chunks(backtest)
    except SoftTimeLimitExceeded:
        # A long backtest outlives one task's time limit: what is committed stays, and the
        # next task continues from the cursors (not an attempt lost, so not counted as one).
        Backtest.objects.filter(pk=backtest_id).update(attempts=F("attempts") - 1)
        enqueue(RUN_TASK, str(backtest_id))
    except Exception as exc:
        logger.exception("backtest %s failed", backtest_id)
        with transaction.atomic():
            locked = Backtest.objects.select_for_update().get(pk=backtest_id)
            if locked.status == BacktestStatus.RUNNING:
                _fail(locked, f"{type(exc).__name__}: {exc}", timezone.now())
        raise


def _run_chunks(backtest: Backtest) -> None:
    v1 = compiled_rules_for(backtest.against)
    v2 = compiled_rules_for(backtest.version)
    expectation = _expectation(backtest.expect_changes) if backtest.expect_changes else None
    sources = _sources(backtest)
    chunk_size = max(1, int(settings.CANARY_BACKTEST_CHUNK))
    max_differences = int(settings.CANARY_BACKTEST_MAX_DIFFERENCES)
    state, evaluated = backtest.state, backtest.evaluated
    while True:
        wanted = min(chunk_size, backtest.limit - evaluated)
        chunk, cursors = _next_chunk(sources, state["cursors"], wanted) if wanted > 0 else ([], {})
        if not chunk:
            backtest_complete(backtest_id=backtest.pk)
            return
        tally = _evaluate_chunk(
            chunk, v1, v2, expectation, evaluated, max(0, max_differences - state["differences"])
        )
        committed = _commit_chunk(backtest.pk, state, evaluated, tally, cursors, len(chunk))
        if committed is None:
            return  # finished or failed meanwhile
        state, evaluated = committed


def _commit_chunk(
    backtest_id: Any,
    state: dict[str, Any],
    evaluated: int,
    tally: _Tally,
    cursors: dict[str, list[Any]],
    size: int,
) -> tuple[dict[str, Any], int] | None:
    """Add one chunk if nobody else has since (compare-and-set on the cursors); the state
    to continue from, or None when the backtest is no longer running."""
    with transaction.atomic():
        locked = Backtest.objects.select_for_update().get(pk=backtest_id)
        if locked.status != BacktestStatus.RUNNING:
            return None
        if locked.evaluated != evaluated or locked.state.get("cursors") != state["cursors"]:
            return locked.state, locked.evaluated  # another run moved on: continue from there
        locked.state = _merged(state, tally, cursors)
        locked.evaluated = evaluated + size
        locked.heartbeat_at = timezone.now()
        locked.save(update_fields=["state", "evaluated", "heartbeat_at"])
        BacktestDifference.objects.bulk_create(
            [BacktestDifference(backtest_id=backtest_id, **row) for row in tally.differences],
            ignore_conflicts=True,
        )
        return locked.state, locked.evaluated


def backtest_complete(*, backtest_id: Any, now: datetime | None = None) -> Backtest | None:
    """The one place a backtest completes: status ``done``, its report kept, and the
    ``backtest_completed`` event on the audit trail of its version's unreleased
    deployments (what a ``backtest.completed`` webhook will deliver). Idempotent."""
    now = now or timezone.now()
    with transaction.atomic():
        backtest = Backtest.objects.select_for_update().get(pk=backtest_id)
        if backtest.status != BacktestStatus.RUNNING:
            return None
        backtest.status = BacktestStatus.DONE
        backtest.finished_at = now
        backtest.heartbeat_at = now
        backtest.save(update_fields=["status", "finished_at", "heartbeat_at"])
        report = backtest_report(backtest)
        deployment_services.deployment_version_event(
            version_id=backtest.version_id,
            action=EventAction.BACKTEST_COMPLETED,
            actor=actor_label(backtest.created_by) if backtest.created_by else "system",
            payload={
                "backtest_id": str(backtest.pk),
                "version": report["version"],
                "against": report["against"],
                "evaluated": report["evaluated"],
                "disagreed": report["disagreed"],
                "unexpected": report["unexpected"]["count"],
            },
            at=now,
        )
        webhook_announce(
            event_type="backtest.completed",
            subject=str(backtest.pk),
            source=event_source(f"backtests/{backtest.pk}"),
            data={"backtest": report},  # as GET /backtests/{id} answers it
            ruleset_id=str(backtest.ruleset_id),
            at=now,
        )
    logger.info(
        "backtest %s done: %s evaluated, %s disagreed",
        backtest.pk,
        backtest.evaluated,
        report["disagreed"],
    )
    return backtest


def _fail(backtest: Backtest, error: str, now: datetime) -> None:
    backtest.status = BacktestStatus.FAILED
    backtest.error = error[:2000]
    backtest.finished_at = now
    backtest.save(update_fields=["status", "error", "finished_at"])


def backtest_sweep(*, now: datetime | None = None) -> int:
    """Re-queue backtests whose progress stopped (their worker died); fail those out of
    attempts. The number re-queued or failed. Safe to run concurrently with a live run."""
    now = now or timezone.now()
    stale = now - timedelta(seconds=settings.CANARY_BACKTEST_STALE_SECONDS)
    silent = Backtest.objects.filter(
        Q(status=BacktestStatus.RUNNING, heartbeat_at__lt=stale)
        | Q(status=BacktestStatus.QUEUED, created_at__lt=stale)
    ).values_list("pk", flat=True)
    handled = 0
    for backtest_id in list(silent):
        with transaction.atomic():
            backtest = Backtest.objects.select_for_update().get(pk=backtest_id)
            if backtest.status not in (BacktestStatus.RUNNING, BacktestStatus.QUEUED):
                continue
            if backtest.attempts >= settings.CANARY_BACKTEST_MAX_ATTEMPTS:
                _fail(backtest, f"no progress after {backtest.attempts} attempts", now)
            else:
                # Counted as waiting again, so the next sweep gives it a full period.
                backtest.heartbeat_at = now
                backtest.save(update_fields=["heartbeat_at"])
                transaction.on_commit(
                    lambda pk=str(backtest.pk): enqueue(RUN_TASK, pk), robust=True
                )
            handled += 1
    return handled


# --- reading ----------------------------------------------------------------------------


def backtest_get(*, backtest_id: Any) -> Backtest:
    try:
        backtest = (
            Backtest.objects.select_related("version", "against", "created_by")
            .filter(pk=backtest_id)
            .first()
        )
    except (ValueError, DjangoValidationError):
        backtest = None
    if backtest is None:
        raise NotFound(f"No backtest with id '{backtest_id}'.")
    return backtest


def backtest_list(*, ruleset_id: Any) -> QuerySet[Backtest]:
    return Backtest.objects.filter(ruleset_id=ruleset_id).select_related(
        "version", "against", "created_by"
    )


def backtest_latest(*, version_id: Any) -> Backtest | None:
    return backtest_list_for_version(version_id=version_id).first()


def backtest_list_for_version(*, version_id: Any) -> QuerySet[Backtest]:
    return Backtest.objects.filter(version_id=version_id).select_related(
        "version", "against", "created_by"
    )


def backtest_differences(*, backtest: Backtest) -> QuerySet[BacktestDifference]:
    return BacktestDifference.objects.filter(backtest=backtest).order_by("position")


def backtest_report(backtest: Backtest) -> dict[str, Any]:
    """The backtest as ``GET /backtests/{id}`` shows it (the shapes of ``/shadow``)."""
    state = backtest.state or _empty_state(backtest.created_at)
    evaluated = backtest.evaluated
    agreed = state["agreed"]
    disagreed = evaluated - agreed
    ranked = sorted(state["changes"].items(), key=lambda item: (-item[1], item[0]))
    changes = []
    for key, count in ranked:
        v1_rule, v2_rule, v1_output, v2_output = orjson.loads(key)
        changes.append(
            {
                "v1_rule": v1_rule or None,
                "v2_rule": v2_rule or None,
                "v1_output": v1_output,
                "v2_output": v2_output,
                "count": count,
            }
        )
    ratio = _ratio_from_histogram({"pairs": {int(k): v for k, v in state["ratio"].items()}})
    return {
        "id": backtest.pk,
        "ruleset_id": backtest.ruleset_id,
        "version": backtest.version.version,
        "against": backtest.against.version,
        "status": backtest.status,
        "progress": {"evaluated": evaluated, "total": backtest.total},
        "evaluated": evaluated,
        "agreed": agreed,
        "disagreed": disagreed,
        "disagreement_rate": disagreed / evaluated if evaluated else None,
        "disagreement_rate_ci": paired.wilson_interval(disagreed, evaluated),
        "outcomes": dict(state["outcomes"]),
        "changes": changes,
        "latency": {
            "pairs": ratio["pairs"],
            "v2_over_v1_median_ratio": ratio["v2_over_v1_median_ratio"],
            "ci": ratio["ci"],
        },
        "expect_changes": backtest.expect_changes or None,
        "unexpected": {"count": state["unexpected"], "examples": list(state["examples"])},
        "limit": backtest.limit,
        "created_by": backtest.created_by.get_username() if backtest.created_by else None,
        "created_at": backtest.created_at,
        "finished_at": backtest.finished_at,
        "error": backtest.error or None,
    }
