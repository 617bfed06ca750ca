"""The console's execution-log list at two million rows: every list a person can ask for, timed.

``seed ROWS`` fills one canary with ``ROWS`` logs over the last 7 days (the same
generator as ``bench/metrics``); ``measure`` logs in an Admin through Django's test
client and prints, per list (unfiltered, each filter, each search, each sort, each
time window), the median of 5 renders of the whole page, and whether any query
counted the table; then the console's home block, for the first tab and the others.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
from pathlib import Path

import django

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "metrics"))
django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.core.cache import cache  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402
from measure import command_seed  # noqa: E402

from deployments.models import Deployment  # noqa: E402

LISTS = {
    "unfiltered (last hour)": {},
    "failed only": {"success__exact": "0"},
    "served v2": {"served_version__exact": "v2"},
    "flagged": {"needs_reprocess__exact": "1"},
    "user id search": {"q": "user-4242"},
    "error text search": {"q": "timeout"},
    "sort by latency": {"o": "4"},
    "sort by latency, failed only": {"o": "-4", "success__exact": "0"},
    "this deployment": {"deployment": "{big}"},
    "last 6 h": {"within": "6h"},
    "last 24 h": {"within": "24h"},
    "last 24 h, sort by latency": {"within": "24h", "o": "4"},
    "last 7 days": {"within": "7d"},
    "last 24 h, user id search": {"within": "24h", "q": "user-4242"},
    "last 24 h, error text search": {"within": "24h", "q": "timeout"},
    "last 7 days, user id search (read as 24 h)": {"within": "7d", "q": "user-4242"},
    "page 5": {"p": "5"},
}
COUNT = re.compile(r"\bCOUNT\s*\(", re.IGNORECASE)


def measure() -> None:
    big = Deployment.objects.get(ruleset__name="big", status="canary")
    user, _ = get_user_model().objects.get_or_create(
        username="bench-console", defaults={"is_superuser": True, "is_staff": True}
    )
    client = Client()
    client.force_login(user)
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM monitoring_executionlog")
        (rows,) = cursor.fetchone()
    print(f"\n| list | median of 5 (s) | COUNT queries |\n|---|---:|---:|   ({rows:,} rows)")
    for name, query in LISTS.items():
        params = {key: value.format(big=big.pk) for key, value in query.items()}
        samples = []
        counted = 0
        for _ in range(5):
            with CaptureQueriesContext(connection) as captured:
                started = time.perf_counter()
                response = client.get("/admin/monitoring/executionlog/", params)
                samples.append(time.perf_counter() - started)
            assert response.status_code == 200, response.status_code
            counted = sum(
                1
                for q in captured.captured_queries
                if "monitoring_executionlog" in q["sql"] and COUNT.search(q["sql"])
            )
        print(f"| {name} | {statistics.median(samples):.3f} | {counted} |")
    home(client)


def home(client: Client) -> None:
    """The console's home: the first tab after a change computes it, every other tab (and
    every refresh until the monitor runs or a canary changes) reads the cached answer."""
    import scipy.stats  # noqa: F401 - a server imports it once; not the home's cost

    cache.clear()
    started = time.perf_counter()
    assert client.get("/admin/deployments/deployment/running/").status_code == 200
    first = time.perf_counter() - started
    samples = []
    for _ in range(5):
        started = time.perf_counter()
        assert client.get("/admin/deployments/deployment/running/").status_code == 200
        samples.append(time.perf_counter() - started)
    print("\n| home block | first tab (s) | other tabs, median of 5 (s) |\n|---|---:|---:|")
    print(f"| 2 canaries | {first:.3f} | {statistics.median(samples):.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("seed").add_argument("rows", type=int)
    sub.add_parser("measure")
    args = parser.parse_args()
    if args.command == "seed":
        command_seed(args.rows)
    else:
        measure()


if __name__ == "__main__":
    main()
