"""Recorded production inputs (SPEC 10.2): their writes from the data plane and their retention.

A sampled execute's input, redacted in the request's process
(``assignments.services.execute._capture_document``), rides the routing call onto
the execution stream as an entry with field ``k``; the execution stream's sink
hands those entries here, so captures are drained in the same batches, keyed by
the entry id (a redelivered entry writes one row). When Redis was not asked,
``capture_record`` appends the entry itself (one round trip), or inserts the row
when Redis cannot take it.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import orjson
from django.conf import settings
from django.db import connection
from django.utils import timezone

from assignments.buffer import stream_entry_id
from assignments.sticky import EXECUTION_STREAM
from canary.redis import redis_available, redis_client
from monitoring.models import CapturedInput

logger = logging.getLogger(__name__)

CAPTURE_FIELD = b"k"


def capture_record(document: bytes) -> None:
    """Keep one captured input: on the execution stream, or directly without Redis."""
    if redis_available():
        try:
            redis_client().xadd(
                EXECUTION_STREAM,
                {CAPTURE_FIELD: document},
                maxlen=settings.CANARY_STREAM_MAXLEN,
                approximate=True,
            )
            return
        except Exception as exc:
            logger.warning("execution stream unavailable (%s); writing the capture directly", exc)
    CapturedInput.objects.bulk_create([_row(None, document)], ignore_conflicts=True)


def _row(row_id: int | None, document: bytes) -> CapturedInput:
    fields = orjson.loads(document)
    return CapturedInput(
        id=row_id,
        ruleset_id=fields["ruleset_id"],
        version_id=fields.get("version_id"),
        input=fields["input"],
        redacted_paths=fields.get("redacted"),
        created_at=datetime.fromtimestamp(fields["created_at"], tz=UTC),
    )


_INSERT_CAPTURES = """
INSERT INTO monitoring_capturedinput (id, ruleset_id, version_id, input, redacted_paths, created_at)
SELECT e.id, r.id, v.id, e.c -> 'input', e.c -> 'redacted',
    to_timestamp((e.c ->> 'created_at')::float8)
FROM jsonb_to_recordset(%s::jsonb) AS e(id bigint, c jsonb)
JOIN deployments_ruleset r ON r.id = (e.c ->> 'ruleset_id')::uuid
LEFT JOIN deployments_rulesetversion v ON v.id = (e.c ->> 'version_id')::uuid
ON CONFLICT (id) DO NOTHING
"""


def capture_write_batch(entries: list[tuple[str, dict[bytes, bytes]]]) -> None:
    """Write the captured inputs among a batch of the execution stream (idempotent).

    A capture of a rule set deleted since is dropped.
    """
    if not entries:
        return
    if connection.vendor == "postgresql":
        documents = b",".join(
            b'{"id":%d,"c":%s}' % (stream_entry_id(entry_id), fields[CAPTURE_FIELD])
            for entry_id, fields in entries
        )
        with connection.cursor() as cursor:
            cursor.execute(_INSERT_CAPTURES, [(b"[" + documents + b"]").decode()])
        return
    from deployments.models import RuleSet

    rows = [_row(stream_entry_id(entry_id), fields[CAPTURE_FIELD]) for entry_id, fields in entries]
    known = {
        str(pk)
        for pk in RuleSet.objects.filter(pk__in={row.ruleset_id for row in rows}).values_list(
            "pk", flat=True
        )
    }
    CapturedInput.objects.bulk_create(
        [row for row in rows if str(row.ruleset_id) in known], ignore_conflicts=True
    )


def capture_retention_run(*, now: datetime | None = None) -> int:
    """Delete captured inputs older than ``CANARY_CAPTURE_RETENTION_DAYS``, then, per rule
    set, all but the newest ``CANARY_CAPTURE_MAX_PER_RULESET``; the rows deleted.

    Idempotent: a second run finds nothing to delete.
    """
    now = now or timezone.now()
    cutoff = now - timedelta(days=settings.CANARY_CAPTURE_RETENTION_DAYS)
    deleted, _ = CapturedInput.objects.filter(created_at__lt=cutoff).delete()
    bound = int(settings.CANARY_CAPTURE_MAX_PER_RULESET)
    rulesets = CapturedInput.objects.values_list("ruleset_id", flat=True).distinct().order_by()
    for ruleset_id in list(rulesets):
        newest = CapturedInput.objects.filter(ruleset_id=ruleset_id).order_by("-created_at", "-id")
        oldest_kept = newest.values_list("created_at", "id")[bound - 1 : bound].first()
        if oldest_kept is None:
            continue
        at, row_id = oldest_kept
        over = newest.filter(created_at__lte=at).exclude(created_at=at, id__gte=row_id)
        count, _ = over.delete()
        deleted += count
    return deleted
