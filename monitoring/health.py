"""Selectors that assemble the measurement answers for one deployment."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.utils import timezone

from assignments.buffer import drain_now
from deployments.models import Deployment
from monitoring import analysis, governance
from monitoring.selectors import latency_sample, version_stats, window_stats
from monitoring.services import breaker_state_for


def deployment_metrics(*, deployment: Deployment, window_minutes: int | None) -> dict[str, Any]:
    drain_now()
    now = timezone.now()
    since = now - timedelta(minutes=window_minutes) if window_minutes else deployment.started_at
    stats = version_stats(deployment_id=deployment.pk, since=since)
    return {
        "deployment_id": str(deployment.pk),
        "v1_metrics": stats["v1"].as_dict() if stats["v1"] else None,
        "v2_metrics": stats["v2"].as_dict() if stats["v2"] else None,
        "window": {
            "window_minutes": window_minutes,
            "since": since.isoformat() if since else None,
            "until": now.isoformat(),
        },
    }


def deployment_comparison(*, deployment: Deployment, window_minutes: int | None) -> dict[str, Any]:
    drain_now()
    now = timezone.now()
    since = now - timedelta(minutes=window_minutes) if window_minutes else deployment.started_at
    stats = version_stats(deployment_id=deployment.pk, since=since)
    windows = window_stats(deployment_id=deployment.pk, now=now)
    breaches = analysis.rollback_breaches(config=deployment.canary_config, **windows)
    answer = analysis.compare(
        v1=stats["v1"],
        v2=stats["v2"],
        v1_latencies=latency_sample(
            deployment_id=deployment.pk,
            version="v1",
            since=since,
            total=stats["v1"].total_requests if stats["v1"] else 0,
        ),
        v2_latencies=latency_sample(
            deployment_id=deployment.pk,
            version="v2",
            since=since,
            total=stats["v2"].total_requests if stats["v2"] else 0,
        ),
        breaches=breaches,
        config=deployment.canary_config,
    )
    return {
        "deployment_id": str(deployment.pk),
        **answer,
        "v1_metrics": stats["v1"].as_dict() if stats["v1"] else None,
        "v2_metrics": stats["v2"].as_dict() if stats["v2"] else None,
        "window": {"window_minutes": window_minutes, "since": since.isoformat() if since else None},
    }


def deployment_health(*, deployment: Deployment) -> dict[str, Any]:
    drain_now()
    now = timezone.now()
    config = deployment.canary_config
    windows = window_stats(deployment_id=deployment.pk, now=now)
    breaker_state = breaker_state_for(deployment_id=deployment.pk, canary_config=config)
    breaches = analysis.rollback_breaches(config=config, **windows)
    warnings = [breach.message for breach in breaches]
    if breaker_state == "OPEN":
        warnings.append(
            "The circuit breaker is OPEN: v2 failed repeatedly, so every request goes to v1 "
            f"until the {config['breaker_cooldown_seconds']} s cooldown ends."
        )
    elif breaker_state == "UNKNOWN":
        warnings.append(
            "The circuit breaker's state cannot be read (Redis is unreachable): requests "
            "are routed from PostgreSQL and the breaker counts nothing until Redis returns."
        )
    elif breaker_state == "HALF_OPEN":
        warnings.append(
            "The circuit breaker is HALF_OPEN: single trial requests are testing v2 again."
        )
    warnings.extend(analysis.health_warnings(config=config, **windows))
    warnings.extend(filter(None, [governance.stale_warning(deployment, now)]))
    v2_now = windows["v2_5m"]
    return {
        "deployment_id": str(deployment.pk),
        "health_status": analysis.health_status(
            breaches=breaches, breaker_state=breaker_state, warnings=warnings
        ),
        "circuit_breaker_state": breaker_state,
        "current_error_rate": v2_now.error_rate if v2_now else None,
        "current_success_rate": v2_now.success_rate if v2_now else None,
        "last_check_at": now.isoformat(),
        "warnings": warnings,
    }
