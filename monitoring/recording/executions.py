"""What an execute leaves behind: its log entry (streamed, then batched into PostgreSQL),
its Prometheus counts, and v2's outcome for the breaker."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import orjson
from django.conf import settings
from django.db import connection

from assignments.buffer import stream_entry_id
from assignments.hooks import ExecutionRecord, ShadowOutcome
from assignments.sticky import EXECUTION_STREAM, ExecutionEntry
from canary.redis import redis_available, redis_client
from deployments.choices import CompensationStatus
from deployments.models import Deployment
from deployments.rules.redaction import redact_input
from monitoring import prometheus
from monitoring.models import ExecutionLog
from monitoring.recording.breaker import breaker_record
from monitoring.recording.captures import CAPTURE_FIELD, capture_write_batch

logger = logging.getLogger(__name__)


def execution_record(record: ExecutionRecord, canary_config: dict[str, Any]) -> None:
    """Record one canary execution before its response is sent.

    With Redis, the record is appended to the execution stream (one round-trip)
    and written to PostgreSQL by a drainer (``assignments.buffer``); if Redis
    cannot take it, it is inserted directly. Either way an answered request is
    never missing from the log once drained.
    """
    if not (redis_available() and _append_to_stream(record)):
        ExecutionLog.objects.create(**_row_fields(record))
    execution_observe(record, canary_config)


def execution_observe(record: ExecutionRecord, canary_config: dict[str, Any]) -> None:
    """Count a stored execution in Prometheus; v2's own failures feed the breaker.

    A v2 non-failure when the breaker had counted no failures changes nothing, so it
    costs no round-trip.
    """
    prometheus.observe_execution(
        str(record.deployment_id),
        record.served_version,
        success=record.success,
        latency_ms=record.latency_ms,
    )
    if record.served_version != "v2" or record.baking:
        return  # the bake is judged by the monitor on the pairs, not by the breaker
    # SPEC 9.6: a v2 failure counts only when v1, shadowed on the same input, succeeded;
    # an input both versions fail is not v2's fault, so it counts as no failure at all.
    own_failure = not record.success and (record.shadow is None or record.shadow.success)
    if not own_failure and record.breaker_clean:
        return  # nothing counted yet: a non-failure changes nothing
    breaker_record(
        deployment_id=record.deployment_id,
        canary_config=canary_config,
        success=not own_failure,
        error_message=record.error_message,
    )


def _row_fields(record: ExecutionRecord) -> dict[str, Any]:
    stored_input, removed = redact_input(
        record.input, record.redacted_paths, store_inputs=settings.CANARY_STORE_INPUTS
    )
    return {
        "deployment_id": record.deployment_id,
        "served_version": record.served_version,
        "version_id": record.version_id,
        "success": record.success,
        "latency_ms": record.latency_ms,
        "error_rule": (record.error_rule or "")[:100],
        "error_message": record.error_message,
        "user_id": record.user_id or "",
        "session_id": record.session_id or "",
        "workflow_id": record.workflow_id or "",
        "input": stored_input,
        "redacted_paths": removed or None,
        "output": record.output,
        "matched_rule": (record.matched_rule or "")[:100],
        "created_at": record.executed_at,
        **_shadow_fields(record.success, record.output, record.shadow),
    }


def _shadow_fields(success: bool, output: Any, shadow: ShadowOutcome | None) -> dict[str, Any]:
    if shadow is None:
        return {}
    return {
        "shadow_success": shadow.success,
        "shadow_output": shadow.output,
        "shadow_rule": (shadow.rule or "")[:100],
        "shadow_error_message": shadow.error_message,
        "shadow_latency_ms": shadow.latency_ms,
        "agreed": outcomes_agree(success, output, shadow.success, shadow.output),
    }


def outcomes_agree(success: bool, output: Any, other_success: bool, other_output: Any) -> bool:
    """Same success and equal output, compared as JSON values (as PostgreSQL's jsonb does)."""
    return success == other_success and _json_equal(output, other_output)


def _json_equal(left: Any, right: Any) -> bool:
    # NOTE: in Python True == 1 and 1 == 1.0; in JSON a bool is never a number,
    # while 1 and 1.0 are the same number.
    if isinstance(left, bool) or isinstance(right, bool):
        return isinstance(left, bool) and isinstance(right, bool) and left == right
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(_json_equal(left[k], right[k]) for k in left)
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(map(_json_equal, left, right))
    if isinstance(left, int | float) and isinstance(right, int | float):
        return left == right
    return type(left) is type(right) and left == right


def _append_to_stream(record: ExecutionRecord) -> bool:
    """The same entry the routing script appends when it routes a request."""
    try:
        redis_client().xadd(
            EXECUTION_STREAM,
            ExecutionEntry.of(record).fields(record.served_version),
            maxlen=settings.CANARY_STREAM_MAXLEN,
            approximate=True,
        )
    except Exception as exc:
        logger.warning("execution stream unavailable (%s); writing the log row directly", exc)
        return False
    return True


def execution_write_batch(entries: list[tuple[str, dict[bytes, bytes]]]) -> None:
    """The execution stream's sink: one row per entry, keyed by the entry's id.

    Idempotent (a redelivered entry hits the same primary key). Executions of a
    rolled-back deployment whose manual compensation is pending arrive flagged,
    as the rollback flagged those already stored. Captured inputs (SPEC 10.2) share
    the stream and its batches: they go to ``captures.capture_write_batch``.
    """
    if any(CAPTURE_FIELD in fields for _, fields in entries):
        capture_write_batch([entry for entry in entries if CAPTURE_FIELD in entry[1]])
        entries = [entry for entry in entries if CAPTURE_FIELD not in entry[1]]
        if not entries:
            return
    if connection.vendor == "postgresql":
        _execution_write_batch_sql(entries)
        return
    parsed = []
    for entry_id, fields in entries:
        version = fields[b"v"].decode()
        common = orjson.loads(fields[b"c"])
        outcome = orjson.loads(fields[f"o{version[1]}".encode()])
        shadow_raw = fields.get(b"o1" if version == "v2" else b"o2")
        shadow = orjson.loads(shadow_raw) if shadow_raw else None
        parsed.append((stream_entry_id(entry_id), version, common, outcome, shadow))
    deployment_ids = {common["deployment_id"] for _, _, common, _, _ in parsed}
    known = dict(
        Deployment.objects.filter(pk__in=deployment_ids).values_list("pk", "compensation_status")
    )
    pending = {str(pk) for pk, status in known.items() if status == CompensationStatus.PENDING}
    existing = {str(pk) for pk in known}
    rows = []
    for row_id, version, common, outcome, shadow in parsed:
        deployment_id = common["deployment_id"]
        if deployment_id not in existing:
            continue  # its deployment is gone (deleted with everything it had)
        rows.append(
            ExecutionLog(
                id=row_id,
                deployment_id=deployment_id,
                served_version=version,
                version_id=common[f"{version}_version_id"],
                success=outcome["success"],
                latency_ms=outcome["latency_ms"],
                error_rule=(outcome["error_rule"] or "")[:100],
                error_message=outcome["error_message"],
                user_id=common["user_id"],
                session_id=common["session_id"],
                workflow_id=common["workflow_id"],
                input=common["input"],
                redacted_paths=common.get("redacted"),
                output=outcome["output"],
                matched_rule=(outcome.get("rule") or "")[:100],
                needs_reprocess=version == "v2" and deployment_id in pending,
                created_at=datetime.fromtimestamp(common["created_at"], tz=UTC),
                **_shadow_fields(
                    outcome["success"],
                    outcome["output"],
                    None
                    if shadow is None
                    else ShadowOutcome(
                        version_id=None,
                        success=shadow["success"],
                        output=shadow["output"],
                        rule=shadow.get("rule") or shadow.get("error_rule"),
                        error_message=shadow["error_message"],
                        latency_ms=shadow["latency_ms"],
                    ),
                ),
            )
        )
    ExecutionLog.objects.bulk_create(rows, ignore_conflicts=True)


# ``o``: the served version's outcome; ``s``: the shadow's, when the request was shadowed.
# jsonb equality is JSON equality (1 = 1.0, true <> 1), as ``outcomes_agree``.
_INSERT_EXECUTIONS = """
INSERT INTO monitoring_executionlog (
    id, deployment_id, served_version, version_id, success, latency_ms, error_rule,
    error_message, user_id, session_id, workflow_id, input, output, needs_reprocess,
    created_at, redacted_paths, matched_rule, shadow_success, shadow_output, shadow_rule,
    shadow_error_message, shadow_latency_ms, agreed
)
SELECT e.id, d.id, e.v, (e.c ->> (e.v || '_version_id'))::uuid, (e.o ->> 'success')::boolean,
    (e.o ->> 'latency_ms')::float8, left(coalesce(e.o ->> 'error_rule', ''), 100),
    coalesce(e.o ->> 'error_message', ''), e.c ->> 'user_id', e.c ->> 'session_id',
    e.c ->> 'workflow_id', e.c -> 'input', e.o -> 'output',
    e.v = 'v2' AND d.compensation_status = 'pending',
    to_timestamp((e.c ->> 'created_at')::float8), e.c -> 'redacted',
    left(coalesce(e.o ->> 'rule', ''), 100),
    (e.s ->> 'success')::boolean, e.s -> 'output',
    left(coalesce(e.s ->> 'rule', e.s ->> 'error_rule', ''), 100),
    coalesce(e.s ->> 'error_message', ''), (e.s ->> 'latency_ms')::float8,
    CASE WHEN e.s IS NULL THEN NULL
        ELSE (e.o -> 'success') = (e.s -> 'success') AND (e.o -> 'output') = (e.s -> 'output')
    END
FROM jsonb_to_recordset(%s::jsonb) AS e(id bigint, v text, c jsonb, o jsonb, s jsonb)
JOIN deployments_deployment d ON d.id = (e.c ->> 'deployment_id')::uuid
ON CONFLICT (id, created_at) DO NOTHING
"""


def _execution_write_batch_sql(entries: list[tuple[str, dict[bytes, bytes]]]) -> None:
    """One statement per batch: PostgreSQL parses the entries' JSON itself."""
    documents = []
    for entry_id, fields in entries:
        version = fields[b"v"]
        outcome = fields[b"o" + version[1:]]
        shadow = fields.get(b"o1" if version == b"v2" else b"o2") or b"null"
        documents.append(
            b'{"id":%d,"v":"%s","c":%s,"o":%s,"s":%s}'
            % (stream_entry_id(entry_id), version, fields[b"c"], outcome, shadow)
        )
    with connection.cursor() as cursor:
        cursor.execute(_INSERT_EXECUTIONS, [(b"[" + b",".join(documents) + b"]").decode()])
