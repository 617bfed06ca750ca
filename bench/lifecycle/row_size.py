"""PostgreSQL bytes per stored execution, through the real sink, with and without inputs.

Writes ROWS executions (default 100,000) of bench/dataplane/input.json, shadowed,
into today's day partition with the drainer's own statement
(``monitoring.recording.executions.execution_write_batch``), then reads the partition's
size (heap + TOAST + every index) and divides. Repeats with the input not
stored (``CANARY_STORE_INPUTS=false``). Needs a migrated PostgreSQL database
in DATABASE_URL; it creates a rule set of its own there.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/canary_x python bench/lifecycle/row_size.py
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import django

django.setup()

from django.db import connection  # noqa: E402
from django.test import override_settings  # noqa: E402

from assignments.hooks import ExecutionRecord, ShadowOutcome  # noqa: E402
from assignments.sticky import ExecutionEntry  # noqa: E402
from deployments import services  # noqa: E402
from monitoring.logstore import partitions  # noqa: E402
from monitoring.recording.executions import execution_write_batch  # noqa: E402

INPUT = json.loads((Path(__file__).parent.parent / "dataplane" / "input.json").read_text())
RULES = [{"name": "big", "condition": "input.amount > 300", "output": {"review": True}}]


def deployment() -> tuple[str, str, str]:
    ruleset = services.ruleset_create(name=f"rowsize-{uuid.uuid4().hex[:8]}", actor="bench")
    for version in ("v1.0.0", "v2.0.0"):
        services.ruleset_version_create(
            ruleset=ruleset, version=version, rules=RULES, default=None, actor="bench"
        )
    first = services.deployment_create(ruleset_id=ruleset.pk, version="v1.0.0", actor="bench")
    services.deployment_promote(deployment_id=first.pk, actor="bench")
    draft = services.deployment_create(ruleset_id=ruleset.pk, version="v2.0.0", actor="bench")
    canary = services.deployment_start_canary(deployment_id=draft.pk, canary_pct=10, actor="bench")
    return str(canary.pk), str(canary.version_id), str(first.version_id)


def fill(day: datetime, rows: int, ids: tuple[str, str, str]) -> float:
    """Write ``rows`` executions dated ``day``; the partition's bytes per row."""
    deployment_id, v2, v1 = ids
    partitions.partitions_ensure(now=day, days_ahead=0)
    name = partitions.partition_for(day.date()).name
    base = int(day.timestamp() * 1000)
    for start in range(0, rows, 1000):
        batch = []
        for n in range(start, min(rows, start + 1000)):
            record = ExecutionRecord(
                deployment_id=deployment_id,
                version_id=v2 if n % 10 == 0 else v1,
                served_version="v2" if n % 10 == 0 else "v1",
                success=True,
                latency_ms=0.8,
                error_rule=None,
                error_message="",
                user_id=f"user-{n:09d}",
                session_id=None,
                workflow_id=None,
                input=INPUT,
                output={"review": True},
                executed_at=day + timedelta(milliseconds=n),
                matched_rule="big",
                shadow=ShadowOutcome(
                    version_id=v1 if n % 10 == 0 else v2,
                    success=True,
                    output={"review": True},
                    rule="big",
                    error_message="",
                    latency_ms=0.7,
                ),
            )
            fields = ExecutionEntry.of(record).fields(record.served_version)
            encoded = {
                key.encode(): value if isinstance(value, bytes) else value.encode()
                for key, value in fields.items()
            }
            batch.append((f"{base + n}-0", encoded))
        execution_write_batch(batch)
    with connection.cursor() as cursor:
        cursor.execute(f"VACUUM ANALYZE {name}")
        cursor.execute("SELECT pg_total_relation_size(%s), pg_relation_size(%s)", [name, name])
        total, heap = cursor.fetchone()
        cursor.execute(f"SELECT count(*) FROM {name}")  # noqa: S608
        count = cursor.fetchone()[0]
    print(
        f"  {name}: {count:,} rows, {total / 2**20:.1f} MiB total "
        f"({heap / 2**20:.1f} MiB heap), {total / count:.0f} B/row"
    )
    return total / count


def main() -> None:
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    ids = deployment()
    connection.ensure_connection()
    first = datetime(2031, 1, 1, tzinfo=UTC)
    started = time.perf_counter()
    with_input = fill(first, rows, ids)
    print(
        f"with inputs ({len(json.dumps(INPUT))} B of JSON): {with_input:.0f} B per execution"
        f" ({time.perf_counter() - started:.0f} s)"
    )
    with override_settings(CANARY_STORE_INPUTS=False):
        without = fill(first + timedelta(days=1), rows, ids)
    print(f"without inputs: {without:.0f} B per execution")
    for label, size in (("with inputs", with_input), ("without inputs", without)):
        per_day = size * 1000 * 86400
        print(
            f"1,000 executes/s, {label}: {per_day / 2**30:.0f} GiB/day, "
            f"{per_day * 30 / 2**40:.2f} TiB for 30 days"
        )


if __name__ == "__main__":
    main()
