"""Writes that leave the request: Redis streams drained into PostgreSQL in batches.

The data plane appends new assignments (inside ``route.lua``) and execution
records (``XADD`` before the response) to Redis streams. Drainers read them
through one consumer group, write each batch in one transaction, and only then
acknowledge and delete the entries, so an entry is removed from Redis only once
its row is committed. A drainer that dies holding entries leaves them pending;
another claims them after ``CANARY_DRAIN_CLAIM_SECONDS``. Sinks are idempotent
(an entry delivered twice writes one row), so a crash between commit and
acknowledgement duplicates nothing.

Who drains: a daemon thread in every web process that serves the data plane,
the rollup job (every minute, in the Celery worker) as a safety net, and every
reader that must be exact (metrics, comparison, health, assignments, the
monitor, compensation), which calls ``drain_now`` first. See
``docs/durability.md``.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import (
    InterfaceError,
    OperationalError,
    ProgrammingError,
    close_old_connections,
    transaction,
)

from canary.redis import redis_client, redis_enabled

logger = logging.getLogger(__name__)

GROUP = "canary-drain"
BATCH = 1000
Entry = tuple[str, dict[bytes, bytes]]
Sink = Callable[[list[Entry]], None]

_sinks: dict[str, Sink] = {}
_groups_ready: set[tuple[int, str]] = set()
_thread_lock = threading.Lock()
_thread: tuple[int, threading.Thread] | None = None


def register_sink(stream: str, sink: Sink) -> None:
    """``sink(entries)`` writes a batch idempotently; it runs inside a transaction."""
    _sinks[stream] = sink


def consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def stream_entry_id(entry_id: str) -> int:
    """A stream id ("<ms>-<seq>") as one 63-bit integer, unique and ordered like it."""
    millis, _, sequence = entry_id.partition("-")
    return (int(millis) << 20) | (int(sequence or 0) & 0xFFFFF)


def _ensure_group(client: Any, stream: str) -> None:
    marker = (id(client), stream)
    if marker in _groups_ready:
        return
    try:
        client.xgroup_create(stream, GROUP, id="0", mkstream=True)
    except Exception as exc:
        if "BUSYGROUP" not in str(exc):
            raise
    _groups_ready.add(marker)


def _decode(raw: list[Any]) -> list[Entry]:
    return [
        (entry_id.decode() if isinstance(entry_id, bytes) else entry_id, fields or {})
        for entry_id, fields in raw
    ]


# Failures of the database or its schema, not of an entry: a missing column while a
# deploy runs new code before its migration is one. The entries stay pending.
_NOT_THE_ENTRY = (OperationalError, InterfaceError, ProgrammingError)


def _write(stream: str, entries: list[Entry]) -> None:
    """Write a batch; raises (nothing acknowledged) while the database cannot take it."""
    sink = _sinks[stream]
    try:
        with transaction.atomic():
            sink(entries)
    except _NOT_THE_ENTRY:
        raise  # the entries stay pending and are written once the database is back
    except Exception:
        # One bad entry must not hold back the rest: write them one by one and
        # drop (with a log line) only what cannot be written at all.
        logger.exception("batch of %d from %s failed; writing one by one", len(entries), stream)
        for entry in entries:
            try:
                with transaction.atomic():
                    sink([entry])
            except _NOT_THE_ENTRY:
                raise
            except Exception:
                logger.exception("dropping undrainable entry %s of %s", entry[0], stream)


def _handle(client: Any, stream: str, entries: list[Entry]) -> int:
    if not entries:
        return 0
    _write(stream, entries)
    ids = [entry_id for entry_id, _ in entries]
    pipe = client.pipeline(transaction=False)
    pipe.xack(stream, GROUP, *ids)
    pipe.xdel(stream, *ids)
    pipe.execute()
    return len(entries)


def _claim_abandoned(client: Any, stream: str, consumer: str, count: int) -> int:
    idle_ms = int(settings.CANARY_DRAIN_CLAIM_SECONDS * 1000)
    handled = 0
    start = "0-0"
    while True:
        reply = client.xautoclaim(stream, GROUP, consumer, idle_ms, start_id=start, count=count)
        start = reply[0].decode() if isinstance(reply[0], bytes) else reply[0]
        entries = [entry for entry in _decode(reply[1]) if entry[1]]
        handled += _handle(client, stream, entries)
        if start in ("0-0", "0") or not reply[1]:
            return handled


def drain_once(*, block_ms: int = 0, count: int = 1000) -> int:
    """Write one batch of new entries per stream; the number written."""
    if not redis_enabled() or not _sinks:
        return 0
    client = redis_client()
    for attempt in range(2):
        for stream in _sinks:
            _ensure_group(client, stream)
        try:
            reply = client.xreadgroup(
                GROUP,
                consumer_name(),
                {stream: ">" for stream in _sinks},
                count=count,
                block=block_ms or None,
            )
            break
        except Exception as exc:
            if "NOGROUP" not in str(exc) or attempt:
                raise
            _groups_ready.clear()  # Redis lost its data: create the groups again
    handled = 0
    for stream, raw in reply or []:
        name = stream.decode() if isinstance(stream, bytes) else stream
        handled += _handle(client, name, _decode(raw))
    return handled


def drain_abandoned(*, count: int = 1000) -> int:
    """Write entries that a drainer took and never acknowledged (it died)."""
    if not redis_enabled() or not _sinks:
        return 0
    client = redis_client()
    handled = 0
    for stream in _sinks:
        _ensure_group(client, stream)
        handled += _claim_abandoned(client, stream, consumer_name(), count)
    return handled


def drain_now(*, wait_seconds: float | None = None) -> int:
    """Drain everything queued before this call, so the reads after it are exact.

    Also waits (up to ``wait_seconds``) for batches other drainers hold, so their
    rows are committed too, and takes over those of dead drainers. Never raises:
    with Redis down, readers see what the database has.
    """
    if not redis_enabled() or not _sinks:
        return 0
    wait = settings.CANARY_DRAIN_WAIT_SECONDS if wait_seconds is None else wait_seconds
    handled = 0
    try:
        while True:
            written = drain_once()
            handled += written
            if written == 0:
                break
        deadline = time.monotonic() + wait
        client = redis_client()
        while any(client.xpending(stream, GROUP)["pending"] for stream in _sinks):
            handled += drain_abandoned()
            if time.monotonic() >= deadline:
                break
            time.sleep(0.01)
    except Exception:
        logger.exception("draining the write buffers failed; reading what is stored")
    return handled


def _drain_forever() -> None:
    """Group commit: a pass that found less than a full batch waits before the next.

    NOTE: under load a drainer that is always caught up would commit a handful of
    rows at a time, paying a transaction (and a WAL flush) and three round-trips
    for each handful; pausing ``CANARY_DRAIN_INTERVAL_MS`` lets the next batch
    fill, at the price of that much lag (readers drain for themselves anyway).
    """
    last_claim = 0.0
    pause = settings.CANARY_DRAIN_INTERVAL_MS / 1000
    while True:
        try:
            written = drain_once(block_ms=int(settings.CANARY_DRAIN_BLOCK_MS), count=BATCH)
            if time.monotonic() - last_claim > 5:
                last_claim = time.monotonic()
                written += drain_abandoned()
            if written == 0:
                close_old_connections()
            elif written < BATCH:
                time.sleep(pause)
        except Exception as exc:
            logger.warning("drainer: pass failed (%s); retrying in 1 s", exc)
            close_old_connections()
            time.sleep(1)


def start_background_drainer() -> None:
    """One daemon drainer per process (started again in a forked child)."""
    global _thread
    if not redis_enabled() or not settings.CANARY_DRAIN_IN_WEB:
        return
    current = _thread
    if current is not None and current[0] == os.getpid() and current[1].is_alive():
        return
    with _thread_lock:
        if _thread is not None and _thread[0] == os.getpid() and _thread[1].is_alive():
            return
        thread = threading.Thread(target=_drain_forever, name="canary-drainer", daemon=True)
        thread.start()
        _thread = (os.getpid(), thread)


def stream_backlog() -> dict[str, int]:
    """Entries waiting in each stream (for health and Prometheus)."""
    client = redis_client()
    return {stream: int(client.xlen(stream)) for stream in _sinks}
