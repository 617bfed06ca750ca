"""Backtests (SPEC 10.2): a version judged against another on recorded production inputs.

Rules are deterministic, so evaluating both versions on the inputs production
actually sent says exactly which decisions a release would change, before anyone
is served it. The inputs are the rule set's captured inputs and the stored inputs
of its canaries' executions, newest first, at most ``limit``.

A run happens in the Celery worker, cut into ``CANARY_BACKTEST_PARTS`` consecutive
ranges of the inputs' order that the worker's processes run side by side (see
"running" below), each a chunk (``CANARY_BACKTEST_CHUNK``) at a time, never holding
more than one chunk: each input source is read in keyset pages (``(created_at, id)``
below a cursor, on the sources' indexes), and what a part has found so far is a
handful of counters, the decision changes (bounded by the rules' pairs), a
latency-ratio histogram and at most ten unexpected examples. Each chunk commits its
part's counters, differences and both cursors in one transaction, under the
backtest's row lock and only if the part's cursors are still those it read
(compare-and-set), so:

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
from deployments.rules import (
    CompiledRuleSet,
    Evaluation,
    PreparedInput,
    RuleCompileError,
    compile_rules,
    prepare_input,
)
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


# ``(created_at, id) >= stop``: the rows a later part starts at are that part's.
_READ_SQL = {
    CAPTURED: (
        "SELECT created_at, id, input::text FROM monitoring_capturedinput "
        "WHERE ruleset_id = %s AND (created_at, id) < (%s, %s) "
        "AND (created_at, id) >= (%s::timestamptz, %s) "
        "ORDER BY created_at DESC, id DESC LIMIT %s"
    ),
    # Only executions whose input was stored ("*": CANARY_STORE_INPUTS was off).
    EXECUTIONS: (
        "SELECT created_at, id, input::text FROM monitoring_executionlog "
        "WHERE deployment_id = ANY(%s) AND (created_at, id) < (%s, %s) "
        "AND (created_at, id) >= (%s::timestamptz, %s) "
        "AND (redacted_paths IS NULL OR NOT redacted_paths @> '[\"*\"]'::jsonb) "
        "ORDER BY created_at DESC, id DESC LIMIT %s"
    ),
}
_NO_STOP = ("-infinity", 0)


def _queryset(source: str, key: Any) -> QuerySet:
    if source == CAPTURED:
        return CapturedInput.objects.filter(ruleset_id=key)
    return ExecutionLog.objects.filter(deployment_id__in=key).exclude(redacted_paths=["*"])


def _read(
    source: str,
    key: Any,
    cursor: tuple[datetime, int],
    count: int,
    stop: tuple[datetime, int] | None = None,
) -> list[_Input]:
    """Up to ``count`` inputs of one source strictly before ``cursor`` (and at or after
    ``stop``), newest first."""
    if source == EXECUTIONS and not key:
        return []
    if connection.vendor == "postgresql":
        low = _NO_STOP if stop is None else stop
        loads = orjson.loads
        with connection.cursor() as db:
            db.execute(_READ_SQL[source], [key, cursor[0], cursor[1], low[0], low[1], count])
            return [_Input(at, source, row_id, loads(text)) for at, row_id, text in db.fetchall()]
    before = Q(created_at__lt=cursor[0]) | Q(created_at=cursor[0], id__lt=cursor[1])
    rows = _queryset(source, key).filter(before)
    if stop is not None:
        rows = rows.filter(Q(created_at__gt=stop[0]) | Q(created_at=stop[0], id__gte=stop[1]))
    values = rows.order_by("-created_at", "-id").values_list("created_at", "id", "input")
    return [_Input(at, source, row_id, document) for at, row_id, document in values[:count]]


def _count(source: str, key: Any, until: datetime) -> int:
    if source == EXECUTIONS and not key:
        return 0
    return _queryset(source, key).filter(created_at__lte=until).count()


def _next_chunk(
    sources: dict[str, Any],
    cursors: dict[str, list[Any]],
    count: int,
    stops: dict[str, list[Any]] | None = None,
) -> tuple[list[_Input], dict[str, list[Any]]]:
    """The next ``count`` inputs across both sources, newest first, and the cursors after them.

    Each source is read ``count`` deep, so the newest ``count`` of the union are among them.
    """
    fetched: list[_Input] = []
    for source, key in sources.items():
        at, row_id = cursors[source]
        stop = None
        if stops is not None:
            stop = (datetime.fromisoformat(stops[source][0]), stops[source][1])
        fetched += _read(source, key, (datetime.fromisoformat(at), row_id), count, stop)
    fetched.sort(key=lambda item: (item.created_at, item.source, item.id), reverse=True)
    chunk = fetched[:count]
    moved = {source: list(cursor) for source, cursor in cursors.items()}
    for item in chunk:
        moved[item.source] = [item.created_at.isoformat(), item.id]
    return chunk, moved


# Where each part after the first starts: per source, its last row among the first
# ``boundary`` inputs of the backtest's order (sources tied on time: executions first, as
# ``_next_chunk`` sorts them).
_SPLIT_SQL = (
    "WITH merged AS ("
    "(SELECT created_at, id, 'captured' AS source FROM monitoring_capturedinput "
    "WHERE ruleset_id = %(ruleset)s AND (created_at, id) < (%(until)s, %(first)s)) "
    "UNION ALL "
    "(SELECT created_at, id, 'executions' FROM monitoring_executionlog "
    "WHERE deployment_id = ANY(%(deployments)s) AND (created_at, id) < (%(until)s, %(first)s) "
    "AND (redacted_paths IS NULL OR NOT redacted_paths @> '[\"*\"]'::jsonb))), "
    "head AS (SELECT * FROM merged ORDER BY created_at DESC, source DESC, id DESC "
    "LIMIT %(boundary)s) "
    "SELECT DISTINCT ON (source) source, created_at, id FROM head "
    "ORDER BY source, created_at, id"
)


def _split(
    sources: dict[str, Any], start: list[Any], total: int, parts: int
) -> list[dict[str, Any]]:
    """``total`` inputs cut in ``parts`` consecutive ranges of the backtest's order: each
    part's position, size, cursors to start from and cursors to stop at (the next part's)."""
    offsets = [total * n // parts for n in range(parts + 1)]
    starts = [{source: list(start) for source in sources}]
    for boundary in offsets[1:-1]:
        cursors = {source: list(start) for source in sources}
        with connection.cursor() as db:
            db.execute(
                _SPLIT_SQL,
                {
                    "ruleset": sources[CAPTURED],
                    "deployments": sources[EXECUTIONS],
                    "until": datetime.fromisoformat(start[0]),
                    "first": start[1],
                    "boundary": boundary,
                },
            )
            for source, at, row_id in db.fetchall():
                cursors[source] = [at.isoformat(), row_id]
        starts.append(cursors)
    return [
        {
            **_empty_tally_state(),
            "start": offsets[n],
            "size": offsets[n + 1] - offsets[n],
            "cursors": starts[n],
            "stops": starts[n + 1] if n + 1 < parts else None,
            "evaluated": 0,
            "done": False,
            "lease": None,
        }
        for n in range(parts)
    ]


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


# An evaluation stopped by the wall-clock budget says nothing about the version's rules
# (a busy machine descheduled it): a backtest tries it again, at most this many times.
_EXHAUSTED_TRIES = 3


def _evaluated(version: CompiledRuleSet, prepared: PreparedInput | Evaluation) -> Evaluation:
    for _ in range(_EXHAUSTED_TRIES):
        evaluation = version.evaluate_prepared(prepared)
        if not evaluation.exhausted:
            break
    return evaluation


def evaluate_pair(
    v1: CompiledRuleSet,
    v2: CompiledRuleSet,
    document: Any,
    order: int = 0,
) -> tuple[Any, Any, float, float, PreparedInput | Evaluation]:
    """Both versions on one input measured and converted once, in alternating order
    (neither always pays for the conversion CEL makes on first use): (v1 evaluation,
    v2 evaluation, v1 ms, v2 ms, the prepared input for more conditions on it)."""
    clock = time.perf_counter
    prepared = prepare_input(document)
    if order % 2:
        start = clock()
        second = _evaluated(v2, prepared)
        middle = clock()
        first = _evaluated(v1, prepared)
        end = clock()
        return first, second, (end - middle) * 1000, (middle - start) * 1000, prepared
    start = clock()
    first = _evaluated(v1, prepared)
    middle = clock()
    second = _evaluated(v2, prepared)
    end = clock()
    return first, second, (middle - start) * 1000, (end - middle) * 1000, prepared


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
        one, two, one_ms, two_ms, prepared = evaluate_pair(v1, v2, item.document, position)
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
            verdict = _evaluated(expectation, prepared)
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


def _empty_tally_state() -> dict[str, Any]:
    return {
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


def _combined(state: dict[str, Any]) -> dict[str, Any]:
    """The parts' findings added up in the backtest's order: what one run from the newest
    input to the last would have found."""
    if "parts" not in state:
        return state
    total = _empty_tally_state()
    for part in state["parts"]:
        for name, count in part["outcomes"].items():
            total["outcomes"][name] += count
        for name in ("agreed", "unexpected", "differences"):
            total[name] += part[name]
        for name in ("changes", "ratio"):
            for key, count in part[name].items():
                total[name][key] = total[name].get(key, 0) + count
        room = MAX_UNEXPECTED_EXAMPLES - len(total["examples"])
        total["examples"] += part["examples"][: max(0, room)]
    total["differences"] = min(total["differences"], settings.CANARY_BACKTEST_MAX_DIFFERENCES)
    return total


# --- running ----------------------------------------------------------------------------
#
# A backtest is cut into ``CANARY_BACKTEST_PARTS`` consecutive ranges of its order (each
# at least a chunk), run by the worker's processes side by side: the task queued at
# creation (or by the sweep) claims the backtest, queues one task per other part, and
# runs the parts in order, taking each one nobody else holds. A part's task runs only
# while the run that queued it is alive (it holds an advisory lock on the backtest for
# its duration), so a task left in the queue by a killed worker does nothing and the
# sweep resumes the whole backtest. Each part keeps its own cursors, counters and lease;
# the last part to finish completes the backtest.


def _part_count(total: int) -> int:
    if connection.vendor != "postgresql":
        return 1
    chunk = max(1, int(settings.CANARY_BACKTEST_CHUNK))
    parts = max(1, int(settings.CANARY_BACKTEST_PARTS))
    while parts > 1 and total < parts * chunk:
        parts -= 1
    return parts


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
            sources = _sources(backtest)
            available = sum(
                _count(source, key, backtest.created_at) for source, key in sources.items()
            )
            backtest.total = min(backtest.limit, available)
            start = [backtest.created_at.isoformat(), _FIRST_ID]
            backtest.state = {
                "parts": _split(sources, start, backtest.total, _part_count(backtest.total))
            }
            fields += ["state", "total"]
        elif "parts" not in backtest.state:  # begun before backtests had parts
            backtest.state = {
                "parts": [
                    {
                        **backtest.state,
                        "start": 0,
                        "size": backtest.limit,
                        "stops": None,
                        "evaluated": backtest.evaluated,
                        "done": False,
                        "lease": None,
                    }
                ]
            }
            fields.append("state")
        backtest.status = BacktestStatus.RUNNING
        backtest.attempts += 1
        backtest.heartbeat_at = now
        backtest.save(update_fields=fields)
        return backtest


def _lock_key(backtest_id: Any) -> str:
    return f"canary.backtest:{backtest_id}"


def backtest_run(*, backtest_id: Any, part: int | None = None) -> None:
    """Run or resume a backtest to its end (idempotent: a finished one is left alone);
    ``part``: only that part, queued by the run that claimed the backtest."""
    if part is not None:
        _run_queued_part(backtest_id, part)
        return
    backtest = _claim(backtest_id, timezone.now())
    if backtest is None:
        return
    # Held while this run lives (a killed worker's connection drops it): the parts' tasks
    # it queues run only then. Another live run of the backtest may hold it already.
    with connection.cursor() as db:
        db.execute("SELECT pg_try_advisory_lock(hashtext(%s))", [_lock_key(backtest_id)])
        (locked,) = db.fetchone()
    try:
        _guarded(backtest_id, None, lambda: _run_parts(backtest, None))
    finally:
        if locked:
            with connection.cursor() as db:
                db.execute("SELECT pg_advisory_unlock(hashtext(%s))", [_lock_key(backtest_id)])


def _run_queued_part(backtest_id: Any, part: int) -> None:
    with connection.cursor() as db:
        db.execute("SELECT pg_try_advisory_lock(hashtext(%s))", [_lock_key(backtest_id)])
        (free,) = db.fetchone()
        if free:  # the run that queued it is gone: the sweep resumes the whole backtest
            db.execute("SELECT pg_advisory_unlock(hashtext(%s))", [_lock_key(backtest_id)])
            return
    backtest = Backtest.objects.filter(pk=backtest_id, status=BacktestStatus.RUNNING).first()
    if backtest is not None and "parts" in backtest.state:
        _guarded(backtest_id, part, lambda: _run_parts(backtest, part))


def _guarded(backtest_id: Any, part: int | None, run: Any) -> None:
    try:
        run()
    except SoftTimeLimitExceeded:
        # A long backtest outlives one task's time limit: what is committed stays, and the
        # next task continues from the cursors (not an attempt lost, so not counted as one).
        if part is None:
            Backtest.objects.filter(pk=backtest_id).update(attempts=F("attempts") - 1)
            enqueue(RUN_TASK, str(backtest_id))
    except Exception as exc:
        logger.exception("backtest %s failed", backtest_id)
        with transaction.atomic():
            locked = Backtest.objects.select_for_update().get(pk=backtest_id)
            if locked.status == BacktestStatus.RUNNING:
                _fail(locked, f"{type(exc).__name__}: {exc}", timezone.now())
        raise


def _run_parts(backtest: Backtest, only: int | None) -> None:
    v1 = compiled_rules_for(backtest.against)
    v2 = compiled_rules_for(backtest.version)
    expectation = _expectation(backtest.expect_changes) if backtest.expect_changes else None
    sources = _sources(backtest)
    parts = backtest.state["parts"]
    order = range(len(parts)) if only is None else [only]
    if only is None:
        unfinished = [n for n, part in enumerate(parts) if not part["done"]]
        for n in unfinished[1:]:
            try:
                enqueue(RUN_TASK, str(backtest.pk), n, retry=False)
            except Exception:  # no broker: this run takes the part itself, later
                logger.warning("backtest %s: part %s not queued", backtest.pk, n, exc_info=True)
    for n in order:
        taken = _take(backtest.pk, n)
        if taken is None:
            continue
        if not _run_part(backtest.pk, n, taken, sources, v1, v2, expectation):
            return  # finished or failed meanwhile
    _complete_if_done(backtest.pk)


def _take(backtest_id: Any, n: int) -> dict[str, Any] | None:
    """Hold part ``n`` (its lease) unless it is done or another run holds it."""
    now = timezone.now()
    stale = now - timedelta(seconds=settings.CANARY_BACKTEST_STALE_SECONDS)
    with transaction.atomic():
        locked = Backtest.objects.select_for_update().get(pk=backtest_id)
        if locked.status != BacktestStatus.RUNNING or n >= len(locked.state["parts"]):
            return None
        part = locked.state["parts"][n]
        if part["done"] or (part["lease"] and datetime.fromisoformat(part["lease"]) > stale):
            return None
        part["lease"] = now.isoformat()
        locked.heartbeat_at = now
        locked.save(update_fields=["state", "heartbeat_at"])
        return dict(part)


def _run_part(
    backtest_id: Any,
    n: int,
    part: dict[str, Any],
    sources: dict[str, Any],
    v1: CompiledRuleSet,
    v2: CompiledRuleSet,
    expectation: CompiledRuleSet | None,
) -> bool:
    """Part ``n`` to its end, a chunk at a time; False when the backtest stopped running."""
    chunk_size = max(1, int(settings.CANARY_BACKTEST_CHUNK))
    max_differences = int(settings.CANARY_BACKTEST_MAX_DIFFERENCES)
    while True:
        wanted = min(chunk_size, part["size"] - part["evaluated"])
        chunk, cursors = (
            _next_chunk(sources, part["cursors"], wanted, part["stops"]) if wanted > 0 else ([], {})
        )
        tally = _evaluate_chunk(
            chunk,
            v1,
            v2,
            expectation,
            part["start"] + part["evaluated"],
            max(0, max_differences - part["differences"]),
        )
        committed = _commit_chunk(backtest_id, n, part, tally, cursors, len(chunk))
        if committed is None:
            return False
        part = committed
        if part["done"]:
            return True


def _commit_chunk(
    backtest_id: Any,
    n: int,
    part: dict[str, Any],
    tally: _Tally,
    cursors: dict[str, list[Any]],
    size: int,
) -> dict[str, Any] | None:
    """Add one chunk of part ``n`` if nobody else has since (compare-and-set on the part's
    cursors; an empty chunk marks the part done); the part to continue from, or None when
    the backtest is no longer running."""
    with transaction.atomic():
        locked = Backtest.objects.select_for_update().get(pk=backtest_id)
        if locked.status != BacktestStatus.RUNNING:
            return None
        stored = locked.state["parts"][n]
        if (
            stored["done"]
            or stored["evaluated"] != part["evaluated"]
            or stored["cursors"] != part["cursors"]
        ):
            return stored  # another run moved on: continue from there
        now = timezone.now()
        if size:
            updated = _merged(stored, tally, cursors)
            updated["evaluated"] = stored["evaluated"] + size
        else:
            updated = {**stored, "done": True}
        updated["lease"] = now.isoformat()
        locked.state["parts"][n] = updated
        locked.evaluated += size
        locked.heartbeat_at = now
        locked.save(update_fields=["state", "evaluated", "heartbeat_at"])
        _insert_differences(backtest_id, tally.differences)
        return updated


def _complete_if_done(backtest_id: Any) -> None:
    backtest = Backtest.objects.filter(pk=backtest_id).only("state", "status").first()
    if backtest is None or backtest.status != BacktestStatus.RUNNING:
        return
    if all(part["done"] for part in backtest.state.get("parts", [])):
        backtest_complete(backtest_id=backtest_id)


# One parameter for a chunk's differences: binding thousands of values one by one costs
# more than evaluating the inputs they came from.
_INSERT_DIFFERENCES_SQL = (
    "INSERT INTO monitoring_backtestdifference "
    "(backtest_id, position, input, v1_output, v2_output, v1_rule, v2_rule, expected) "
    "SELECT %s, r.position, r.input, r.v1_output, r.v2_output, r.v1_rule, r.v2_rule, "
    "r.expected FROM jsonb_to_recordset(%s::jsonb) AS r(position integer, input jsonb, "
    "v1_output jsonb, v2_output jsonb, v1_rule text, v2_rule text, expected boolean) "
    "ON CONFLICT (backtest_id, position) DO NOTHING"
)


def _insert_differences(backtest_id: Any, differences: list[dict[str, Any]]) -> None:
    """Store a chunk's differences; a position stored already (a chunk re-run) is kept."""
    if not differences:
        return
    if connection.vendor == "postgresql":
        with connection.cursor() as db:
            db.execute(_INSERT_DIFFERENCES_SQL, [backtest_id, orjson.dumps(differences).decode()])
        return
    BacktestDifference.objects.bulk_create(
        [BacktestDifference(backtest_id=backtest_id, **row) for row in differences],
        ignore_conflicts=True,
    )


def backtest_complete(*, backtest_id: Any, now: datetime | None = None) -> Backtest | None:
    """The one place a backtest completes: status ``done``, its report kept, and the
    ``backtest_completed`` event on the audit trail of its version's unreleased
    deployments (what a ``backtest.completed`` webhook will deliver). Idempotent."""
    now = now or timezone.now()
    with transaction.atomic():
        backtest = Backtest.objects.select_for_update().get(pk=backtest_id)
        if backtest.status != BacktestStatus.RUNNING:
            return None
        if backtest.state and "parts" in backtest.state:
            if not all(part["done"] for part in backtest.state["parts"]):
                return None
            # Each part kept its first differences; the backtest keeps the first overall.
            BacktestDifference.objects.filter(
                backtest_id=backtest_id,
                position__gte=(
                    BacktestDifference.objects.filter(backtest_id=backtest_id)
                    .order_by("position")
                    .values_list("position", flat=True)[settings.CANARY_BACKTEST_MAX_DIFFERENCES :][
                        :1
                    ]
                ),
            ).delete()
            backtest.state = {**_combined(backtest.state), "parts": backtest.state["parts"]}
        backtest.status = BacktestStatus.DONE
        backtest.finished_at = now
        backtest.heartbeat_at = now
        backtest.save(update_fields=["status", "finished_at", "heartbeat_at", "state"])
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
    state = _combined(backtest.state) if backtest.state else _empty_tally_state()
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
