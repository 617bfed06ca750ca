"""Redis memory per million sticky assignments and per execution-stream entry.

Writes keys exactly as ``assignments/sticky.py`` does (with their TTLs) to a
Redis of your own (it is flushed!) and reads ``INFO memory`` before and after.

    redis-server --port 6411 --save '' --appendonly no &
    DJANGO_SETTINGS_MODULE=canary.settings_test PYTHONPATH=. \
        python bench/lifecycle/redis_memory.py --port 6411 1000000
"""

from __future__ import annotations

import argparse
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import django

django.setup()

import redis  # noqa: E402

from assignments.hooks import ExecutionRecord, ShadowOutcome  # noqa: E402
from assignments.sticky import EXECUTION_STREAM, STICKY_TTL_SECONDS, ExecutionEntry  # noqa: E402

INPUT = json.loads((Path(__file__).parent.parent / "dataplane" / "input.json").read_text())


def measure(client: redis.Redis, label: str, count: int, add: object) -> None:
    client.flushall()
    before = client.info("memory")["used_memory"]
    pipe = client.pipeline(transaction=False)
    for n in range(count):
        add(pipe, n)  # type: ignore[operator]
        if n % 10_000 == 9_999:
            pipe.execute()
    pipe.execute()
    used = client.info("memory")["used_memory"] - before
    print(f"{label}: {count:,} -> {used / 2**20:.1f} MiB, {used / count:.0f} B each")
    client.flushall()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("count", type=int, nargs="?", default=1_000_000)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    client = redis.Redis(port=args.port)
    deployment = str(uuid.uuid4())
    measure(
        client,
        "user assignments",
        args.count,
        lambda pipe, n: pipe.set(
            f"canary:a:{deployment}:user_id:user-{n:09d}",
            "v2" if n % 10 == 0 else "v1",
            ex=STICKY_TTL_SECONDS,
        ),
    )
    measure(
        client,
        "session assignments",
        args.count,
        lambda pipe, n: pipe.set(
            f"canary:a:{deployment}:session_id:{uuid.uuid4()}", f"v2|{1_800_000_000 + n}", ex=86400
        ),
    )

    def entry(pipe: object, n: int) -> None:
        record = ExecutionRecord(
            deployment_id=deployment,
            version_id=str(uuid.uuid4()),
            served_version="v1",
            success=True,
            latency_ms=0.8,
            error_rule=None,
            error_message="",
            user_id=f"user-{n:09d}",
            session_id=None,
            workflow_id=None,
            input=INPUT,
            output={"review": True},
            executed_at=datetime.now(UTC),
            matched_rule="big",
            shadow=ShadowOutcome(
                version_id=str(uuid.uuid4()),
                success=True,
                output={"review": True},
                rule="big",
                error_message="",
                latency_ms=0.7,
            ),
        )
        pipe.xadd(EXECUTION_STREAM, ExecutionEntry.of(record).fields("v1"))  # type: ignore[attr-defined]

    measure(client, "execution-stream entries", max(1, args.count // 5), entry)


if __name__ == "__main__":
    main()
