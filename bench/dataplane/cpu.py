"""Measure the CPU the processes of one benchmark run use, while it runs.

    python cpu.py <web server master pid> <database name> <seconds>

Samples /proc every second for ``seconds`` (or until SIGTERM), then prints one
line of cores used on average: ``web=<c> postgres=<c> redis=<c> machine=<c>``.

- web: the server's master and its workers (gunicorn or granian);
- postgres: the backends connected to ``database name`` plus the server's own
  processes (postmaster, WAL writer, checkpointer, ...), not the backends of other
  databases, so another user's test run on the same server is not counted;
- redis: redis-server (shared: every Redis client on the machine counts);
- machine: all busy CPU time (/proc/stat), to show what everything else took.

Sampling (rather than a before/after difference) keeps the CPU of a process that
exits during the run, such as a backend recycled after CONN_MAX_AGE. Reads /proc only.
"""

from __future__ import annotations

import os
import signal
import sys
import time

TICKS = os.sysconf("SC_CLK_TCK")
INTERVAL = 1.0


def _read(path: str) -> str | None:
    try:
        with open(path, "rb") as handle:
            return handle.read().decode(errors="replace")
    except OSError:
        return None


def _group(pid: str, master: int, database: str) -> tuple[str, float] | None:
    raw = _read(f"/proc/{pid}/stat")
    if raw is None:
        return None
    name = raw[raw.index("(") + 1 : raw.rindex(")")]
    fields = raw[raw.rindex(")") + 2 :].split()
    ppid, seconds = int(fields[1]), (int(fields[11]) + int(fields[12])) / TICKS
    if int(pid) == master or ppid == master:
        return "web", seconds
    if name == "redis-server":
        return "redis", seconds
    if name == "postgres":
        # "postgres: 15/main: <user> <database> <client> <state>" for a backend.
        title = (_read(f"/proc/{pid}/cmdline") or "").replace("\0", " ").split()
        is_backend = len(title) >= 5 and title[0] == "postgres:" and ":" not in title[3]
        if not is_backend or title[3] == database:
            return "postgres", seconds
    return None


def _machine_busy() -> float:
    with open("/proc/stat") as handle:
        cpu = [int(value) for value in handle.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal: busy is all but idle and iowait.
    return (sum(cpu[:8]) - cpu[3] - cpu[4]) / TICKS


def main() -> None:
    master, database, seconds = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
    stop = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    first: dict[str, tuple[str, float]] = {}
    last: dict[str, float] = {}
    started, machine_start = time.monotonic(), _machine_busy()
    while True:
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                found = _group(pid, master, database)
                if found is not None:
                    first.setdefault(pid, found)
                    last[pid] = found[1]
        if stop or time.monotonic() - started >= seconds:
            break
        time.sleep(INTERVAL)
    elapsed = time.monotonic() - started
    totals = {"web": 0.0, "postgres": 0.0, "redis": 0.0}
    for pid, (group, at_start) in first.items():
        totals[group] += last[pid] - at_start
    totals["machine"] = _machine_busy() - machine_start
    print(" ".join(f"{key}={value / elapsed:.2f}" for key, value in totals.items()))


if __name__ == "__main__":
    main()
