"""Storing sticky decisions drained from Redis, and clearing them: the stream's sink, no routing."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from django.db import connection

from assignments import router
from assignments.models import Assignment
from deployments.choices import DeploymentStatus
from deployments.models import Deployment


def assignments_write_batch(entries: list[tuple[str, dict[bytes, bytes]]]) -> None:
    """The assignment stream's sink: store decisions made in Redis, idempotently.

    Rows of a canary that has ended are not kept: its rollback cleared them, and
    a decision drained afterwards must not outlive it.
    """
    if connection.vendor == "postgresql":
        _assignments_write_batch_sql(entries)
        return
    records = []
    for _, fields in entries:
        record = orjson.loads(fields[b"r"])
        record["v"] = fields[b"v"].decode()
        records.append(record)
    deployment_ids = {record["d"] for record in records}
    live = {
        str(pk)
        for pk in Deployment.objects.filter(
            pk__in=deployment_ids, status=DeploymentStatus.CANARY
        ).values_list("pk", flat=True)
    }
    rows = []
    for record in records:
        if record["d"] not in live:
            continue
        expires = record.get("exp")
        rows.append(
            Assignment(
                deployment_id=record["d"],
                tier=record["t"],
                identifier=record["i"],
                assigned_version=record["v"],
                version_id=record["v2"] if record["v"] == router.V2 else record["v1"],
                user_id=record["u"],
                session_id=record["s"],
                workflow_id=record["w"],
                assigned_at=datetime.fromtimestamp(record["at"], tz=UTC),
                expires_at=datetime.fromtimestamp(expires, tz=UTC) if expires else None,
            )
        )
    if not rows:
        return
    Assignment.objects.bulk_create(rows, ignore_conflicts=True)
    for row in rows:
        if row.tier == router.SESSION:
            # A session that expired and was decided again replaces its old row.
            Assignment.objects.filter(
                deployment_id=row.deployment_id,
                tier=row.tier,
                identifier=row.identifier,
                expires_at__lte=row.assigned_at,
            ).update(
                assigned_version=row.assigned_version,
                version_id=row.version_id,
                user_id=row.user_id,
                session_id=row.session_id,
                workflow_id=row.workflow_id,
                assigned_at=row.assigned_at,
                expires_at=row.expires_at,
            )
    # NOTE: a rollback committing while this batch waited on its row lock has
    # already cleared the canary's assignments; check again after the insert.
    ended = Deployment.objects.filter(pk__in=live).exclude(status=DeploymentStatus.CANARY)
    Assignment.objects.filter(deployment__in=ended).delete()


_UPSERT_ASSIGNMENTS = """
INSERT INTO assignments_assignment (
    id, deployment_id, tier, identifier, assigned_version, version_id, user_id, session_id,
    workflow_id, assigned_at, expires_at
)
SELECT DISTINCT ON (d.id, e.t, e.i) gen_random_uuid(), d.id, e.t, e.i, e.v,
    CASE WHEN e.v = 'v2' THEN e.v2 ELSE e.v1 END, e.u, e.s, e.w, to_timestamp(e.at),
    to_timestamp(e.exp)
FROM jsonb_to_recordset(%s::jsonb) AS e(
    d uuid, t text, i text, v text, v1 uuid, v2 uuid, u text, s text, w text, at float8,
    exp float8
)
JOIN deployments_deployment d ON d.id = e.d AND d.status = 'canary'
ORDER BY d.id, e.t, e.i, e.at DESC
ON CONFLICT (deployment_id, tier, identifier) DO UPDATE SET
    assigned_version = EXCLUDED.assigned_version, version_id = EXCLUDED.version_id,
    user_id = EXCLUDED.user_id, session_id = EXCLUDED.session_id,
    workflow_id = EXCLUDED.workflow_id, assigned_at = EXCLUDED.assigned_at,
    expires_at = EXCLUDED.expires_at
WHERE assignments_assignment.expires_at IS NOT NULL
    AND assignments_assignment.expires_at <= EXCLUDED.assigned_at
"""
# NOTE: a rollback committing while the batch waited on its row lock has already
# cleared the canary's assignments; what the batch wrote for it goes too.
_DELETE_ENDED = """
DELETE FROM assignments_assignment a USING deployments_deployment d
WHERE a.deployment_id = d.id AND d.id = ANY(%s::uuid[]) AND d.status <> 'canary'
"""


def _assignments_write_batch_sql(entries: list[tuple[str, dict[bytes, bytes]]]) -> None:
    """One upsert per batch (an expired session's row is replaced), parsed by PostgreSQL."""
    documents = [b'{"v":"%s",%s' % (fields[b"v"], fields[b"r"][1:]) for _, fields in entries]
    deployment_ids = {orjson.loads(fields[b"r"])["d"] for _, fields in entries}
    with connection.cursor() as cursor:
        cursor.execute(_UPSERT_ASSIGNMENTS, [(b"[" + b",".join(documents) + b"]").decode()])
        cursor.execute(_DELETE_ENDED, [sorted(deployment_ids)])


def assignments_clear(*, deployment_id: Any) -> int:
    """Forget a canary's sticky decisions (its rollback)."""
    deleted, _ = Assignment.objects.filter(deployment_id=deployment_id).delete()
    return deleted
