"""The command's options merged over a scenario's preset and checked, before anything runs."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.core.management.base import CommandError

from monitoring.simulation import traffic as sim


@dataclass(frozen=True)
class Plan:
    ruleset: str
    setup: bool
    scenario: sim.Scenario
    canary_pct: int
    canary_config: dict[str, Any]
    rps: float
    duration: float
    max_requests: int | None
    users: int
    v2_error_rate: float
    v2_latency_ms: float
    base_latency_ms: float
    fault_after: float
    monitor_every: float | None
    seed: int | None


def _plan(options: Mapping[str, Any]) -> Plan:
    """Merge explicit options over the scenario's preset and check every value."""
    name = options.get("scenario")
    preset = sim.SCENARIOS[name] if name else sim.DEFAULTS

    def pick(key: str) -> Any:
        value = options.get(key)
        return getattr(preset, key) if value is None else value

    ruleset = options.get("ruleset") or preset.ruleset
    if not ruleset:
        raise CommandError("Name the rule set with --ruleset NAME_OR_ID, or pick a --scenario.")
    config = dict(preset.canary_config)
    if options.get("canary_config"):
        try:
            extra = json.loads(options["canary_config"])
        except json.JSONDecodeError as exc:
            raise CommandError(f"--canary-config is not valid JSON: {exc}") from exc
        if not isinstance(extra, dict):
            raise CommandError("--canary-config must be a JSON object.")
        config.update(extra)
    plan = Plan(
        ruleset=str(ruleset),
        setup=bool(options.get("setup") or name),
        scenario=preset,
        canary_pct=int(pick("canary_pct")),
        canary_config=config,
        rps=float(pick("rps")),
        duration=float(pick("duration")),
        max_requests=options.get("requests"),
        users=int(options.get("users", 1000)),
        v2_error_rate=float(pick("v2_error_rate")),
        v2_latency_ms=float(pick("v2_latency_ms")),
        base_latency_ms=float(pick("base_latency_ms")),
        fault_after=float(pick("fault_after")),
        monitor_every=options.get("run_monitor_every"),
        seed=options.get("seed"),
    )
    checks = [
        (plan.rps > 0, "--rps must be greater than 0."),
        (plan.duration > 0, "--duration must be greater than 0 seconds."),
        (plan.max_requests is None or plan.max_requests >= 1, "--requests must be at least 1."),
        (plan.users >= 1, "--users must be at least 1."),
        (1 <= plan.canary_pct <= 100, "--canary-pct must be from 1 to 100."),
        (0 <= plan.v2_error_rate <= 1, "--v2-error-rate must be from 0 to 1 (0.08 is 8%)."),
        (
            0 <= plan.v2_latency_ms <= sim.MAX_LATENCY_MS,
            f"--v2-latency-ms must be from 0 to {sim.MAX_LATENCY_MS:g}.",
        ),
        (
            0 <= plan.base_latency_ms <= sim.MAX_LATENCY_MS,
            f"--base-latency-ms must be from 0 to {sim.MAX_LATENCY_MS:g}.",
        ),
        (
            plan.base_latency_ms + plan.v2_latency_ms <= sim.MAX_LATENCY_MS,
            f"--base-latency-ms plus --v2-latency-ms must be at most {sim.MAX_LATENCY_MS:g}.",
        ),
        (plan.fault_after >= 0, "--fault-after must be 0 or more seconds."),
        (
            plan.monitor_every is None or plan.monitor_every > 0,
            "--run-monitor-every must be greater than 0 seconds.",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise CommandError(message)
    if plan.setup:
        # Refuse a bad config before --setup creates anything, not halfway through.
        from deployments.canary_config import CanaryConfigError, normalize_canary_config

        try:
            normalize_canary_config(plan.canary_config)
        except CanaryConfigError as exc:
            raise CommandError(f"--canary-config: {exc}") from exc
    return plan
