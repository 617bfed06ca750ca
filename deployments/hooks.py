"""Seams through which monitoring plugs the readiness checklist into promote.

Dependencies run one way (deployments <- assignments <- monitoring), so the
promote service cannot compute readiness itself. ``MonitoringConfig.ready()``
replaces these defaults; without monitoring installed every canary counts as
ready (there is no evidence to refuse on).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class ReadinessVerdict:
    """``ready`` when every required check passed; ``checks`` as the endpoint shows them."""

    ready: bool
    checks: list[dict[str, Any]] = field(default_factory=list)

    def failed_checks(self) -> list[dict[str, Any]]:
        return [check for check in self.checks if check["required"] and not check["passed"]]


def _always_ready(deployment: Any, now: datetime) -> ReadinessVerdict:
    return ReadinessVerdict(ready=True)


def _nothing_to_settle() -> None:
    return None


@dataclass
class PromotionHooks:
    # Called under the promote's row locks: reads only, never a transaction of its own.
    readiness: Callable[[Any, datetime], ReadinessVerdict] = field(default=_always_ready)
    # Called before the locks are taken, so readiness judges every answered request
    # (drains the write buffers); may take a moment, must never raise.
    settle: Callable[[], None] = field(default=_nothing_to_settle)
    # The draft's preflight checklist (SPEC 10.2), asked by start-canary under its row
    # locks when ``enforce_preflight`` is on: reads only.
    preflight: Callable[[Any, datetime], ReadinessVerdict] = field(default=_always_ready)


hooks = PromotionHooks()


# --- webhooks and gates (SPEC 10.4) ------------------------------------------------


@dataclass(frozen=True)
class GateAnswer:
    """What an outside gate said: open on a 2xx only; ``status_code`` None when unreachable."""

    open: bool
    status_code: int | None = None
    detail: str = ""


def _gate_always_open(deployment: Any, gate: dict[str, Any], context: dict[str, Any]) -> GateAnswer:
    return GateAnswer(open=True)


def _no_announcement(event: Any) -> None:
    return None


@dataclass
class ReleaseHooks:
    # Asks one gate of ``canary_config.gates`` (an HTTP call: never under row locks).
    ask_gate: Callable[[Any, dict[str, Any], dict[str, Any]], GateAnswer] = field(
        default=_gate_always_open
    )
    # Called inside the transaction that writes a ``DeploymentEvent``: what it records
    # (webhook deliveries) commits with the event or not at all.
    event_recorded: Callable[[Any], None] = field(default=_no_announcement)


release_hooks = ReleaseHooks()
