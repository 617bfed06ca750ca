"""CPU per request of the data plane, in-process: the WSGI application called directly.

    python inprocess.py --ruleset <id> --token <token> [--requests 5000] [--profile]

No HTTP server and no load generator share the CPU, so the figure moves far less
between runs than req/s under wrk: it is the Python (and kernel, for the one
Redis round-trip) cost of one request on this machine. Every request is a new
user (a first request: it claims an assignment). ``--profile`` prints the
functions that took the most time (cProfile). Reads the same environment as the
server (DATABASE_URL, REDIS_URL, ...).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "canary.settings")
os.environ["CANARY_DRAIN_IN_WEB"] = "0"  # drained separately below, and timed on its own

from canary.wsgi import application  # noqa: E402


def environ_for(verb: str, ruleset: str, token: str, user: str, body: bytes) -> dict:
    base = {
        "HTTP_AUTHORIZATION": f"Bearer {token}",
        "HTTP_HOST": "127.0.0.1",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80",
        "wsgi.url_scheme": "http",
    }
    if verb == "resolve":
        return {
            **base,
            "PATH_INFO": f"/api/v1/rulesets/{ruleset}/resolve",
            "REQUEST_METHOD": "GET",
            "QUERY_STRING": f"user_id={user}",
            "wsgi.input": io.BytesIO(b""),
        }
    payload = b'{"user_id": "%s", "input": %s}' % (user.encode(), body)
    return {
        **base,
        "PATH_INFO": f"/api/v1/rulesets/{ruleset}/execute",
        "REQUEST_METHOD": "POST",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(payload)),
        "wsgi.input": io.BytesIO(payload),
    }


def run(verb: str, ruleset: str, token: str, requests: int, body: bytes, tag: str) -> None:
    statuses: list[str] = []

    def call(n: int) -> None:
        environ = environ_for(verb, ruleset, token, f"{tag}{verb[0]}{n}", body)
        chunks = application(
            environ, lambda status, headers, exc_info=None: statuses.append(status)
        )
        b"".join(chunks)

    for n in range(100):  # warm-up: the first call authenticates in full
        call(n)
    statuses.clear()
    cpu, wall = time.process_time(), time.perf_counter()
    for n in range(100, 100 + requests):
        call(n)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    bad = [status for status in statuses if not status.startswith("200")]
    if bad:
        raise SystemExit(f"{verb}: {len(bad)} answers were not 200 (first: {bad[0]})")
    print(
        f"{verb:8s} {1000 * cpu / requests:.3f} ms CPU per request "
        f"({1000 * wall / requests:.3f} ms wall), {requests} new users"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ruleset", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--sort", default="tottime", help="with --profile: pstats sort key")
    parser.add_argument("--lines", type=int, default=20, help="with --profile: rows printed")
    parser.add_argument(
        "--verbs", default="resolve,execute", help="comma-separated: resolve, execute"
    )
    args = parser.parse_args()
    body = (Path(__file__).parent / "input.json").read_bytes()
    tag = f"p{os.getpid()}-"
    profiler = cProfile.Profile() if args.profile else None
    for verb in args.verbs.split(","):
        if profiler:
            profiler.enable()
        run(verb, args.ruleset, args.token, args.requests, body, tag)
        if profiler:
            profiler.disable()
    from assignments.buffer import drain_now

    cpu, wall = time.process_time(), time.perf_counter()
    written = drain_now()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    print(
        f"drain    {1000 * cpu / max(written, 1):.3f} ms CPU per entry "
        f"({1000 * wall / max(written, 1):.3f} ms wall, PostgreSQL included), {written} entries"
    )
    if profiler:
        stats = pstats.Stats(profiler).sort_stats(args.sort)
        stats.print_stats(args.lines)


if __name__ == "__main__":
    main()
