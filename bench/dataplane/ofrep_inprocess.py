"""CPU per request of OFREP against resolve, in-process (the WSGI application called directly).

    python ofrep_inprocess.py --ruleset <id> --flag <name> --token <token> [--requests 5000]

As ``inprocess.py``: no HTTP server or load generator shares the CPU, so the ratios move
far less between runs than req/s under wrk. Four loops, in turn, ROUNDS times:
resolve and the single-flag OFREP evaluation for new users (a first request claims an
assignment), then resolve and the bulk endpoint's 304 (``If-None-Match``) for users
already answered (what a polling web provider sends).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "canary.settings")
os.environ["CANARY_DRAIN_IN_WEB"] = "0"

from canary.wsgi import application  # noqa: E402

Environ = dict[str, object]


def base(token: str) -> Environ:
    return {
        "HTTP_AUTHORIZATION": f"Bearer {token}",
        "HTTP_HOST": "127.0.0.1",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80",
        "wsgi.url_scheme": "http",
    }


def resolve(token: str, ruleset: str, user: str) -> Environ:
    return {
        **base(token),
        "PATH_INFO": f"/api/v1/rulesets/{ruleset}/resolve",
        "REQUEST_METHOD": "GET",
        "QUERY_STRING": f"user_id={user}",
        "wsgi.input": io.BytesIO(b""),
    }


def ofrep(token: str, path: str, user: str, etag: str | None = None) -> Environ:
    payload = b'{"context": {"targetingKey": "%s"}}' % user.encode()
    environ: Environ = {
        **base(token),
        "PATH_INFO": path,
        "REQUEST_METHOD": "POST",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(payload)),
        "wsgi.input": io.BytesIO(payload),
    }
    if etag:
        environ["HTTP_IF_NONE_MATCH"] = etag
    return environ


def call(environ: Environ) -> tuple[str, dict[str, str]]:
    seen: list[tuple[str, dict[str, str]]] = []
    chunks = application(environ, lambda s, h, exc_info=None: seen.append((s, dict(h))))
    b"".join(chunks)
    return seen[0]


def measure(name: str, requests: int, make: Callable[[int], Environ], want: str) -> float:
    cpu = time.process_time()
    for n in range(requests):
        status, _ = call(make(n))
        if not status.startswith(want):
            raise SystemExit(f"{name}: answered {status}, not {want}")
    per = 1000 * (time.process_time() - cpu) / requests
    print(f"  {name:14s} {per:.3f} ms CPU per request")
    return per


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ruleset", required=True)
    parser.add_argument("--flag", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--warm", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    token, rid = args.token, args.ruleset
    single, bulk = f"/ofrep/v1/evaluate/flags/{args.flag}", "/ofrep/v1/evaluate/flags"
    tag = f"i{os.getpid()}-"
    etags = []
    for n in range(args.warm):  # answered twice: the second answer's tag is the stable one
        call(ofrep(token, bulk, f"{tag}w{n}"))
        etags.append(call(ofrep(token, bulk, f"{tag}w{n}"))[1]["ETag"])
    for n in range(100):  # warm-up
        call(resolve(token, rid, f"{tag}x{n}"))
        call(ofrep(token, single, f"{tag}y{n}"))
    totals: dict[str, float] = {}
    for r in range(args.rounds):
        print(f"round {r + 1}")
        loops: list[tuple[str, Callable[[int], Environ], str]] = [
            ("resolve", lambda n, r=r: resolve(token, rid, f"{tag}r{r}-{n}"), "200"),
            ("ofrep", lambda n, r=r: ofrep(token, single, f"{tag}o{r}-{n}"), "200"),
            ("resolve_warm", lambda n: resolve(token, rid, f"{tag}w{n % args.warm}"), "200"),
            ("bulk304", lambda n: ofrep(token, bulk, f"{tag}w{n % args.warm}",
                                        etags[n % args.warm]), "304"),
        ]  # fmt: skip
        for name, make, want in loops:
            totals[name] = totals.get(name, 0.0) + measure(name, args.requests, make, want)
    mean = {name: total / args.rounds for name, total in totals.items()}
    print(
        f"ofrep/resolve CPU {mean['ofrep'] / mean['resolve']:.2f}x "
        f"(req/s ratio {mean['resolve'] / mean['ofrep']:.2f}x); "
        f"bulk304/resolve_warm CPU {mean['bulk304'] / mean['resolve_warm']:.2f}x "
        f"(req/s ratio {mean['resolve_warm'] / mean['bulk304']:.2f}x); "
        f"bulk304/resolve CPU {mean['bulk304'] / mean['resolve']:.2f}x "
        f"(req/s ratio {mean['resolve'] / mean['bulk304']:.2f}x)"
    )


if __name__ == "__main__":
    main()
