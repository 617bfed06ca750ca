"""Summarise a py-spy ``--format raw --idle`` profile of one gunicorn worker.

    python profile_summary.py profile.txt

Each sample (wall-clock, idle included) is put in one step of the request (the
innermost step whose code is on the stack) and one kind of time: a PostgreSQL
round-trip (psycopg on the stack), a Redis round-trip (redis-py on the stack),
idle (gunicorn waiting for the next connection), or Python. Prints the share of
samples per step and kind. On a CPU-saturated machine "waiting" also includes
time the worker was runnable but not scheduled.
"""

from __future__ import annotations

import sys
from collections import Counter

# (step, substrings of a frame "function (file:line)"), outermost first: the
# innermost match on a stack wins.
STEPS = [
    ("gunicorn: accept, parse, respond", ("gunicorn/",)),
    (
        "django: handler and middleware",
        ("django/core/handlers/", "django/middleware/", "django_prometheus/", "django/contrib/"),
    ),
    ("connection health check (SELECT 1)", ("is_usable (django/db/backends",)),
    (
        "drf: view dispatch, parsing",
        ("rest_framework/views.py", "rest_framework/request.py", "rest_framework/parsers.py"),
    ),
    ("failed-auth counter (Redis GET)", ("authenticate (canary/api/authentication",)),
    ("token authentication (SQL)", ("authenticate_credentials (rest_framework",)),
    ("rate limit (throttle GET + SET)", ("check_throttles (rest_framework",)),
    ("input validation (serializer)", ("is_valid (rest_framework", "validated (deployments")),
    ("routing state (Redis GET)", ("routing_state_for (assignments",)),
    ("breaker gate", ("breaker_gate (monitoring",)),
    ("sticky lookup (Redis MGET / SQL)", ("_known_assignments (assignments",)),
    ("new assignment (INSERT + SELECT)", ("_store (assignments",)),
    ("rule evaluation (CEL)", ("evaluate (deployments/rule_language",)),
    ("execution log INSERT", ("record_execution", "execution_record (monitoring")),
    ("breaker record", ("breaker_record (monitoring",)),
    (
        "response rendering (JSON)",
        ("rest_framework/renderers.py", "finalize_response", "rest_framework/response.py"),
    ),
]

# Classified on the whole stack, first match wins. "PostgreSQL" and "Redis" include
# the client libraries' own CPU (small next to the round-trip itself).
KINDS = [
    ("idle", ("SyncWorker.wait (gunicorn",)),
    ("PostgreSQL", ("psycopg/",)),
    ("Redis", ("redis/connection.py", "redis/_parsers", "redis/client.py")),
]


def classify(frames: list[str], table: list[tuple[str, tuple[str, ...]]], default: str) -> str:
    found = default
    for frame in frames:  # root first
        for label, patterns in table:
            if any(p in frame for p in patterns):
                found = label
    return found


def kind_of(frames: list[str]) -> str:
    stack = " ; ".join(frames)
    for label, patterns in KINDS:
        if any(p in stack for p in patterns):
            return label
    return "python"


def main() -> None:
    steps: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    both: Counter[tuple[str, str]] = Counter()
    total = 0
    with open(sys.argv[1]) as handle:
        for line in handle:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            samples = int(count)
            frames = stack.split(";")
            step = classify(frames, STEPS, "other")
            kind = kind_of(frames)
            if kind == "idle":
                step = "(idle: no connection waiting)"
            steps[step] += samples
            kinds[kind] += samples
            both[(step, kind)] += samples
            total += samples
    if not total:
        sys.exit("no samples")
    print(f"{total} samples")
    print(f"{'step':<40} {'share':>6}   of which: python / PostgreSQL / Redis")
    for step, samples in steps.most_common():
        parts = [both[(step, k)] / total * 100 for k in ("python", "PostgreSQL", "Redis")]
        print(
            f"{step:<40} {samples / total * 100:5.1f}%   "
            f"{parts[0]:4.1f} / {parts[1]:4.1f} / {parts[2]:4.1f}"
        )
    print("kinds: " + ", ".join(f"{k} {v / total * 100:.1f}%" for k, v in kinds.most_common()))


if __name__ == "__main__":
    main()
