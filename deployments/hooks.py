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
