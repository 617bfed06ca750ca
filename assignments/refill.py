"""Copying a deployment's sticky decisions from PostgreSQL back into Redis.

PostgreSQL is the authority for assignments. Redis holds a copy of a
deployment's decisions so that a request costs one round trip, and says so with
the deployment's held count (``assignments.sticky.held_key``): while it is
present, every decision PostgreSQL has is in Redis too (or the count is at the
ceiling, when the routing script sends new contexts to PostgreSQL anyway). When
Redis restarted empty, or a process decided from PostgreSQL while it could not
reach Redis, the count is missing: requests are answered from PostgreSQL
(the row, else the bucket) and one job, here, copies the rows back:

1. take the deployment's refill lock in Redis (``SET NX`` with a TTL: one job at
   a time across every process; a process runs at most one per deployment);
2. copy every live row with ``SET NX`` (a key Redis still has is the same
   decision, and a request's write-through may be newer);
3. write the held count: from now on the routing script decides in Redis again;
4. copy once more, overwriting, the rows assigned since shortly before step 2
   (``CATCH_UP_SECONDS``): decisions that requests routed from PostgreSQL
   stored while the copy ran.

Requests routed from PostgreSQL while the count is missing also write their new
decision to Redis (``write_through``), so a decision stored after step 4 is in
Redis as well. docs/durability.md says what remains.
"""

from __future__ import annotations

import logging
import threading
import uuid
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connection
from django.db.models import Q
from django.utils import timezone

from assignments import sticky
from assignments.models import Assignment
from canary.redis import redis_client

logger = logging.getLogger(__name__)

# A request routed from PostgreSQL decides, stores and writes through well within this.
CATCH_UP_SECONDS = 60
LOCK_SECONDS = 300
CHUNK = 2000

_running: set[str] = set()
_running_lock = threading.Lock()
# Deployments this process stored a decision for in PostgreSQL alone (Redis was
# unreachable): Redis no longer holds all of theirs, which it must be told.
_decided_without_redis: set[str] = set()


def refill_lock_key(deployment_id: str) -> str:
    return f"canary:refill:{deployment_id}"


def refill_soon(deployment_id: str) -> None:
    """Start a refill of this deployment unless this process already runs one."""
    if not settings.CANARY_REFILL_IN_BACKGROUND:
        refill_deployment(deployment_id)
        return
    with _running_lock:
        if deployment_id in _running:
            return
        _running.add(deployment_id)
    thread = threading.Thread(
        target=_refill_in_thread, args=(deployment_id,), name="canary-refill", daemon=True
    )
    thread.start()


def _refill_in_thread(deployment_id: str) -> None:
    try:
        refill_deployment(deployment_id)
    except Exception:
        logger.exception("refilling Redis with deployment %s's decisions failed", deployment_id)
    finally:
        with _running_lock:
            _running.discard(deployment_id)
        close_old_connections()
        connection.close()


def _session_value(version: str, expires_at: datetime | None, now: datetime) -> tuple[str, int]:
    if expires_at is None:
        return version, sticky.STICKY_TTL_SECONDS
    return f"{version}|{expires_at.timestamp():.6f}", int((expires_at - now).total_seconds()) + 60


def _copy(client: Any, deployment_id: str, rows: Any, now: datetime, *, overwrite: bool) -> int:
    """SET each row's decision: NX, counting every row; or overwriting, counting the
    rows Redis did not have yet."""
    counted = 0
    pipe = client.pipeline(transaction=False)

    def flush() -> int:
        replies = pipe.execute()
        return sum(1 for reply in replies if reply is None) if overwrite else len(replies)

    for n, (tier, identifier, version, expires_at) in enumerate(rows, start=1):
        value, ttl = _session_value(version, expires_at, now)
        key = sticky.sticky_key(deployment_id, tier, identifier)
        if overwrite:
            pipe.set(key, value, ex=ttl, get=True)
        else:
            pipe.set(key, value, ex=ttl, nx=True)
        if n % CHUNK == 0:
            counted += flush()
    return counted + flush()


def _live_rows(deployment_id: str, now: datetime) -> Any:
    return Assignment.objects.filter(
        Q(expires_at__isnull=True) | Q(expires_at__gt=now), deployment_id=deployment_id
    ).values_list("tier", "identifier", "assigned_version", "expires_at")


def refill_deployment(deployment_id: str, *, now: datetime | None = None) -> int | None:
    """Copy the deployment's decisions into Redis; the held count written, or None when
    another job holds the lock or Redis already holds them."""
    client = redis_client()
    token = uuid.uuid4().hex
    lock = refill_lock_key(deployment_id)
    if not client.set(lock, token, nx=True, ex=LOCK_SECONDS):
        return None
    try:
        held = sticky.held_key(deployment_id)
        if client.exists(held):
            return None
        started = now or timezone.now()
        ceiling = settings.CANARY_STICKY_MAX_PER_DEPLOYMENT or None  # 0: no ceiling
        rows = _live_rows(deployment_id, started)
        # Beyond the ceiling the routing script sends new contexts to PostgreSQL,
        # which answers for the rows not copied.
        rows = rows[:ceiling].iterator(CHUNK)
        copied = _copy(client, deployment_id, rows, started, overwrite=False)
        client.set(held, copied, ex=sticky.STICKY_TTL_SECONDS)
        since = started - timedelta(seconds=CATCH_UP_SECONDS)
        recent = _live_rows(deployment_id, timezone.now()).filter(assigned_at__gte=since)
        caught = _copy(client, deployment_id, recent[:ceiling], started, overwrite=True)
        if caught:
            client.incrby(held, caught)
        logger.info("Redis re-filled with %d decisions of deployment %s", copied, deployment_id)
        return copied + caught
    finally:
        client.eval(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end",
            1,
            lock,
            token,
        )


def write_through(
    deployment_id: str, tier: str, identifier: str, version: str, expires_at: datetime | None
) -> None:
    """Put a decision PostgreSQL just stored into Redis too (best effort)."""
    value, ttl = _session_value(version, expires_at, timezone.now())
    try:
        redis_client().set(sticky.sticky_key(deployment_id, tier, identifier), value, ex=ttl)
    except Exception as exc:
        logger.warning("decision not written through to Redis (%s)", exc)


def note_decided_without_redis(deployment_id: str) -> None:
    _decided_without_redis.add(deployment_id)


def forget_held_if_needed(client: Any) -> None:
    """Once Redis answers again: drop the held count of every deployment this process
    decided for without it, so the next request re-fills Redis from PostgreSQL."""
    if not _decided_without_redis:
        return
    pending = list(_decided_without_redis)
    client.delete(*(sticky.held_key(deployment_id) for deployment_id in pending))
    _decided_without_redis.difference_update(pending)


def sticky_held(deployment_ids: list[str]) -> dict[str, int | None]:
    """Decisions Redis holds per deployment (None: not known to be complete)."""
    if not deployment_ids:
        return {}
    values = redis_client().mget([sticky.held_key(d) for d in deployment_ids])
    return {
        deployment_id: int(value) if value is not None else None
        for deployment_id, value in zip(deployment_ids, values, strict=True)
    }
