"""A backtest end to end in a real Celery worker: inputs per second and the worker's memory.

Seeds a fresh database with the data-plane benchmark's ten-rule checkout set (v1
active, v2 a draft: three thresholds tightened, a regex rule), ``--inputs``
captured production inputs (varied in SQL, newest first), then starts one Celery
worker with ``--processes`` processes (1: ``--pool=solo``), queues a backtest of v2
against v1 over all of them with an ``expect_changes`` condition (run in as many
parts, ``CANARY_BACKTEST_PARTS``), and samples the worker's resident memory (all its
processes) every half second until the backtest is done. Prints inputs/s (created -> finished:
read, evaluate both versions, aggregate, commit) and the memory range.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/canary_bench_backtest \
    REDIS_URL=redis://127.0.0.1:6379/13 .venv/bin/python bench/backtest/run.py --inputs 1000000

The database named in DATABASE_URL is dropped and created again.
"""

from __future__ import annotations

# ruff: noqa: S603 (a benchmark runs psql and its own interpreter)
import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench" / "dataplane"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "canary.settings")
os.environ.setdefault("SECRET_KEY", "bench-backtest-not-secret")

SEED_SQL = """
INSERT INTO monitoring_capturedinput (id, ruleset_id, input, created_at)
SELECT g, %(ruleset)s, jsonb_build_object(
    'order_id', CASE WHEN g %% 50 = 0 THEN 'ORD-BAD'
        ELSE 'ORD-20240611-' || lpad((g %% 100000)::text, 5, '0') END,
    'amount', round((random() * 2000)::numeric, 2),
    'country', 'FR',
    'billing_country', CASE WHEN g %% 7 = 0 THEN 'DE' ELSE 'FR' END,
    'shipping_country', 'FR',
    'customer_tier', (ARRAY['bronze', 'new', 'silver', 'gold', 'platinum'])[1 + g %% 5],
    'account_age_days', g %% 400,
    'orders_last_30d', g %% 15,
    'chargebacks_12m', CASE WHEN g %% 97 = 0 THEN 3 ELSE 0 END,
    'payment_method', CASE WHEN g %% 3 = 0 THEN 'paypal' ELSE 'card' END,
    'card_bin_country', CASE WHEN g %% 11 = 0 THEN 'US' ELSE 'FR' END,
    'ip_risk_score', round(random()::numeric, 2),
    'email_verified', g %% 4 <> 0,
    'phone_verified', g %% 6 <> 0,
    'hour_of_day', g %% 24,
    'returns_rate', round((random() * 0.6)::numeric, 2),
    'coupon_code', CASE WHEN g %% 9 = 0 THEN 'WELCOME5' ELSE 'SUMMER10' END,
    'items', jsonb_build_array(
        jsonb_build_object('sku', 'AB-1001', 'qty', 1 + g %% 3, 'price', 19.9))
), now() - make_interval(secs => g / 1000.0)
FROM generate_series(1, %(count)s) AS g
"""


# What v2 means to change: larger orders, and order ids of the wrong shape.
EXPECT_CHANGES = 'input.amount > 300.0 || !input.order_id.matches("^ORD-[0-9]{8}-[0-9]{5}$")'


def rss_kib(pid: int) -> int:
    """Resident memory of ``pid`` and its child processes (a prefork worker's pool)."""
    total = 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                total += rss_kib(int(child))
    except FileNotFoundError:
        pass
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--inputs", type=int, default=1_000_000)
    parser.add_argument("--chunk", type=int, default=2_000)
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args()
    database = os.environ["DATABASE_URL"].rsplit("/", 1)[1]
    psql = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-q", "-v", "ON_ERROR_STOP=1"]
    subprocess.run([*psql, "-c", f"DROP DATABASE IF EXISTS {database} WITH (FORCE)"], check=True)
    subprocess.run([*psql, "-c", f"CREATE DATABASE {database}"], check=True)
    python = sys.executable
    subprocess.run(
        [python, "manage.py", "migrate", "--noinput"], cwd=ROOT, check=True, capture_output=True
    )

    import django

    django.setup()
    from django.db import connection
    from seed import DEFAULT_OUTPUT, rules  # bench/dataplane/seed.py

    from deployments import services
    from monitoring.automation.backtests import backtest_create
    from monitoring.models import Backtest

    ruleset = services.ruleset_create(name="bench-backtest", actor="bench")
    for version in ("v1", "v2"):
        services.ruleset_version_create(
            ruleset=ruleset,
            version=f"{version}.0.0",
            rules=rules(version),
            default=DEFAULT_OUTPUT,
            actor="bench",
        )
    draft = services.deployment_create(ruleset_id=ruleset.pk, version="v1.0.0", actor="bench")
    services.deployment_promote(deployment_id=draft.pk, actor="bench")
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(SEED_SQL, {"ruleset": ruleset.pk, "count": args.inputs})
        cursor.execute("ANALYZE monitoring_capturedinput")
        cursor.execute(
            "SELECT pg_total_relation_size('monitoring_capturedinput'), "
            "avg(pg_column_size(input)) FROM monitoring_capturedinput"
        )
        total_bytes, input_bytes = cursor.fetchone()
    print(
        f"seeded {args.inputs:,} captured inputs in {time.perf_counter() - started:.1f} s: "
        f"{total_bytes / args.inputs:,.0f} bytes per input on disk with its indexes "
        f"({float(input_bytes):,.0f} of them the jsonb input)"
    )

    environment = {
        **os.environ,
        "CANARY_BACKTEST_CHUNK": str(args.chunk),
        "CANARY_BACKTEST_PARTS": str(args.processes),
    }
    pool = ["--pool=solo"] if args.processes == 1 else [f"--concurrency={args.processes}"]
    log = tempfile.NamedTemporaryFile("w", prefix="backtest-worker-", suffix=".log", delete=False)  # noqa: SIM115
    worker = subprocess.Popen(
        [python, "-m", "celery", "-A", "canary", "worker", *pool, "--loglevel=WARNING"],
        cwd=ROOT,
        env=environment,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        time.sleep(5)
        backtest = backtest_create(
            ruleset_id=ruleset.pk,
            version="v2.0.0",
            limit=min(args.inputs, 1_000_000),
            expect_changes=EXPECT_CHANGES,
            actor="bench",
        )
        load_before = os.getloadavg()[0]
        samples: list[tuple[int, int]] = []
        while True:
            row = Backtest.objects.get(pk=backtest.pk)
            samples.append((row.evaluated, rss_kib(worker.pid)))
            if row.status in ("done", "failed"):
                break
            time.sleep(0.5)
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        log.close()
    print(f"worker log: {log.name}")
    seconds = (row.finished_at - row.created_at).total_seconds()
    running = [rss for evaluated, rss in samples if evaluated > 0]
    print(f"status {row.status} {row.error}".strip())
    print(
        f"machine load (1 min) {load_before:.1f} when queued, {os.getloadavg()[0]:.1f} when done "
        f"({os.cpu_count()} cores)"
    )
    print(
        f"evaluated {row.evaluated:,} in {seconds:.1f} s: {row.evaluated / seconds:,.0f} inputs/s "
        f"end to end (chunk {args.chunk}, {args.processes} processes); disagreed "
        f"{row.evaluated - row.state['agreed']:,}, unexpected {row.state['unexpected']:,}"
    )
    if running:
        # The worker's memory along the run: flat means it does not grow with the inputs.
        marks = []
        for share in (0.1, 0.25, 0.5, 0.75, 1.0):
            at = next(rss for evaluated, rss in samples if evaluated >= share * row.evaluated)
            marks.append(f"{share:.0%} {at / 1024:.0f}")
        print(
            f"worker RSS (MiB) at progress: {', '.join(marks)}; "
            f"min {min(running) / 1024:.0f}, max {max(running) / 1024:.0f} ({len(running)} samples)"
        )
    connection.close()
    subprocess.run([*psql, "-c", f"DROP DATABASE IF EXISTS {database} WITH (FORCE)"], check=True)


if __name__ == "__main__":
    main()
