"""Migration 0012 moves a populated execution log into day partitions and back, losing nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from deployments.models import Deployment
from monitoring.logstore import partitions
from monitoring.models import ExecutionLog

BEFORE = [("monitoring", "0012_governance_record")]
COLUMNS = ("id", "created_at", "deployment_id", "served_version", "input", "agreed", "success")

pytestmark = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="SQLite keeps a plain table"
)


def snapshot() -> list[tuple]:
    return list(ExecutionLog.objects.order_by("id").values_list(*COLUMNS))


def migrate(target: list[tuple[str, str]]) -> None:
    MigrationExecutor(connection).migrate(target)


@pytest.mark.django_db(transaction=True)
def test_populated_table_moves_to_partitions_and_back(canary_v2: Deployment) -> None:
    # Every app's newest migration, so the current models match the tables.
    latest = MigrationExecutor(connection).loader.graph.leaf_nodes()
    migrate(BEFORE)
    assert not partitions.partitioned()
    old_model = (
        MigrationExecutor(connection)
        .loader.project_state(BEFORE)
        .apps.get_model("monitoring", "ExecutionLog")
    )
    start = datetime(2026, 1, 1, 6, tzinfo=UTC)
    stream_id = 1_800_000_000_000 << 20
    old_model.objects.bulk_create(
        old_model(
            # Half the rows carry stream ids, half take the table's sequence.
            **({"id": stream_id + n} if n % 2 else {}),
            deployment_id=canary_v2.pk,
            served_version="v2",
            version_id=canary_v2.version_id,
            success=True,
            latency_ms=1.0,
            input={"n": n},
            agreed=n % 3 != 0,
            created_at=start + timedelta(hours=7 * n),
        )
        for n in range(300)  # about 88 days
    )
    before = snapshot()

    migrate(latest)
    assert partitions.partitioned()
    assert snapshot() == before
    days = {partition.day for partition in partitions.partitions_list()}
    assert {row[1].date() for row in before} <= days
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {partitions.DEFAULT_PARTITION}")  # noqa: S608
        assert cursor.fetchone()[0] == 0
        cursor.execute(
            "SELECT count(*) FROM pg_indexes WHERE tablename = %s",
            [partitions.partition_for(start.date()).name],
        )
        # The primary key, the three query indexes and the console's time index.
        assert cursor.fetchone()[0] == 5
    # The sequence continues: a direct insert gets a new id, no clash.
    added = ExecutionLog.objects.create(
        deployment_id=canary_v2.pk,
        served_version="v1",
        version_id=canary_v2.version_id,
        success=True,
        latency_ms=1.0,
        input={},
        created_at=datetime.now(UTC),
    )
    assert added.id not in {row[0] for row in before}
    with_added = snapshot()

    migrate(BEFORE)
    assert not partitions.partitioned()
    assert snapshot() == with_added
    migrate(latest)
    assert snapshot() == with_added
