"""Where breaker state lives: Redis (atomic WATCH/MULTI updates) or the database.

Every web process, replica and worker reads and writes the same state. The
transitions themselves are the pure functions of ``monitoring.breaker.state``; a store
only applies one atomically.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any, Protocol, TypeVar

from django.conf import settings
from django.db import transaction

from monitoring.breaker.state import BreakerState, current
from monitoring.models import BreakerRecord

logger = logging.getLogger(__name__)

T = TypeVar("T")
Change = Callable[[BreakerState], tuple[T, BreakerState]]
KEY_TTL_SECONDS = 30 * 24 * 60 * 60


class BreakerStore(Protocol):
    def read(self, deployment_id: Any) -> BreakerState: ...

    def update(self, deployment_id: Any, change: Change[T]) -> tuple[T, BreakerState, BreakerState]:
        """Apply ``change`` atomically; return its result and the states before and after."""
        ...


class RedisBreakerStore:
    def _client(self) -> Any:
        from django_redis import get_redis_connection

        return get_redis_connection("default")

    @staticmethod
    def _key(deployment_id: Any) -> str:
        return f"canary:breaker:{deployment_id}"

    @staticmethod
    def _decode(raw: bytes | None) -> BreakerState:
        return BreakerState(**json.loads(raw)) if raw else BreakerState()

    def read(self, deployment_id: Any) -> BreakerState:
        return self._decode(self._client().get(self._key(deployment_id)))

    def update(self, deployment_id: Any, change: Change[T]) -> tuple[T, BreakerState, BreakerState]:
        key = self._key(deployment_id)
        outcome: dict[str, Any] = {}

        def apply(pipe: Any) -> None:
            before = self._decode(pipe.get(key))
            result, after = change(before)
            outcome.update(result=result, before=before, after=after)
            if after != before:
                pipe.multi()
                pipe.set(key, json.dumps(asdict(after)), ex=KEY_TTL_SECONDS)

        # NOTE: redis-py retries ``apply`` when another client changed the key
        # between WATCH and EXEC, so concurrent updates never overwrite each other.
        self._client().transaction(apply, key)
        return outcome["result"], outcome["before"], outcome["after"]


class DatabaseBreakerStore:
    def read(self, deployment_id: Any) -> BreakerState:
        record = BreakerRecord.objects.filter(deployment_id=deployment_id).first()
        return _state_of(record) if record else BreakerState()

    def update(self, deployment_id: Any, change: Change[T]) -> tuple[T, BreakerState, BreakerState]:
        with transaction.atomic():
            BreakerRecord.objects.get_or_create(deployment_id=deployment_id)
            record = BreakerRecord.objects.select_for_update().get(deployment_id=deployment_id)
            before = _state_of(record)
            result, after = change(before)
            if after != before:
                _set_state(record, after)
                record.save()
        return result, before, after


def breaker_store() -> BreakerStore:
    return RedisBreakerStore() if settings.REDIS_URL else DatabaseBreakerStore()


def breaker_cooldown(config: dict[str, Any]) -> float:
    return float(config.get("breaker_cooldown_seconds", 60))


def breaker_state_for(*, deployment_id: Any, canary_config: dict[str, Any]) -> str:
    """The breaker's state, or UNKNOWN while its store is unreachable."""
    try:
        state = breaker_store().read(deployment_id)
    except Exception:
        logger.warning("breaker state of %s unreadable", deployment_id, exc_info=True)
        return "UNKNOWN"
    return current(state, now=time.time(), cooldown=breaker_cooldown(canary_config)).state


def _state_of(record: BreakerRecord) -> BreakerState:
    return BreakerState(
        record.state, record.consecutive_failures, record.opened_at, record.trial_started_at
    )


def _set_state(record: BreakerRecord, state: BreakerState) -> None:
    record.state = state.state
    record.consecutive_failures = state.consecutive_failures
    record.opened_at = state.opened_at
    record.trial_started_at = state.trial_started_at
