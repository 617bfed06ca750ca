"""Prometheus metrics with the names of the product contract.

Counters and histograms are per process; under gunicorn, ``PROMETHEUS_MULTIPROC_DIR``
makes prometheus_client share them through files so one scrape sums every worker.
Deployment status and traffic are read from the database at scrape time, so
every process and replica reports the same truth.

Every per-deployment series of a running canary exists from its start, at 0
(Prometheus' advice for labelled series known in advance): a canary whose v1
never failed has ``canary_v1_errors_total 0``, so an error rate reads 0, not "No
data". Each scrape creates them, in the process that answers it, before reading
the counters (``initialise_series``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import REGISTRY, Collector

logger = logging.getLogger(__name__)

# Evaluation latencies are sub-millisecond to a few hundred milliseconds.
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip

REQUESTS = {
    version: Counter(
        f"canary_{version}_requests",
        f"Executions served by {version} during a canary (all outcomes).",
        ["deployment_id"],
    )
    for version in ("v1", "v2")
}
ERRORS = {
    version: Counter(
        f"canary_{version}_errors",
        f"Executions served by {version} that failed to evaluate.",
        ["deployment_id"],
    )
    for version in ("v1", "v2")
}
LATENCY = {
    version: Histogram(
        f"canary_{version}_latency_seconds",
        f"Rule evaluation latency of {version}.",
        ["deployment_id"],
        buckets=LATENCY_BUCKETS,
    )
    for version in ("v1", "v2")
}


def initialise_series(deployment_ids: Iterable[str]) -> None:
    """Every per-deployment series of these deployments, at 0 unless already counted.

    ``labels()`` creates a labelled series at 0 and leaves an existing one as it
    is; in multiprocess mode it is written to this process's file, so the summed
    scrape has it whichever workers served the requests.
    """
    for deployment_id in deployment_ids:
        for version in ("v1", "v2"):
            REQUESTS[version].labels(deployment_id)
            ERRORS[version].labels(deployment_id)
            LATENCY[version].labels(deployment_id)


def _initialise_running_canaries() -> None:
    from deployments.choices import DeploymentStatus
    from deployments.models import Deployment

    running = Deployment.objects.filter(status=DeploymentStatus.CANARY).values_list("id", flat=True)
    initialise_series(str(deployment_id) for deployment_id in running)


# (version, deployment) -> its three series: ``labels()`` takes a lock and builds a key
# on every call, and every execute counts. Bounded; cleared whole when full.
_series: dict[tuple[str, str], tuple[Any, Any, Any]] = {}


def observe_execution(
    deployment_id: str, version: str, *, success: bool, latency_ms: float
) -> None:
    series = _series.get((version, deployment_id))
    if series is None:
        series = (
            REQUESTS[version].labels(deployment_id),
            ERRORS[version].labels(deployment_id),
            LATENCY[version].labels(deployment_id),
        )
        if len(_series) >= 1024:
            _series.clear()
        _series[(version, deployment_id)] = series
    requests, errors, latency = series
    requests.inc()
    if not success:
        errors.inc()
    latency.observe(latency_ms / 1000)


class DeploymentStateCollector(Collector):
    """``canary_deployment_status`` and ``canary_traffic_percentage`` from the database."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from deployments.choices import DeploymentStatus
        from deployments.models import Deployment

        status = GaugeMetricFamily(
            "canary_deployment_status",
            "1 for the deployment's current status (draft, canary or active deployments).",
            labels=["deployment_id", "status"],
        )
        traffic = GaugeMetricFamily(
            "canary_traffic_percentage",
            "Share of new contexts sent to the deployment's version.",
            labels=["deployment_id"],
        )
        live = Deployment.objects.filter(
            status__in=[DeploymentStatus.DRAFT, DeploymentStatus.CANARY, DeploymentStatus.ACTIVE]
        ).values_list("id", "status", "traffic_percentage")
        for deployment_id, current, percentage in live:
            for choice in DeploymentStatus.values:
                status.add_metric([str(deployment_id), choice], 1.0 if choice == current else 0.0)
            traffic.add_metric([str(deployment_id)], float(percentage))
        yield status
        yield traffic
        yield from _governance_gauges()
        yield from _plan_gauges()
        yield _sticky_gauge()


def _sticky_gauge() -> GaugeMetricFamily:
    """``canary_sticky_assignments``: the decisions each running canary keeps in Redis,
    the count ``CANARY_STICKY_MAX_PER_DEPLOYMENT`` bounds; while Redis does not hold
    them all (being re-filled, or unreachable), the rows PostgreSQL holds."""
    from django.db.models import Count

    from assignments.models import Assignment
    from assignments.refill import sticky_held
    from canary.redis import redis_enabled
    from deployments.choices import DeploymentStatus
    from deployments.models import Deployment

    gauge = GaugeMetricFamily(
        "canary_sticky_assignments",
        "Sticky decisions a running canary keeps in Redis (PostgreSQL's rows while Redis "
        "does not hold them all).",
        labels=["deployment_id"],
    )
    running = [
        str(pk)
        for pk in Deployment.objects.filter(status=DeploymentStatus.CANARY).values_list(
            "id", flat=True
        )
    ]
    held: dict[str, int | None] = dict.fromkeys(running)
    if redis_enabled():
        try:
            held = sticky_held(running)
        except Exception as exc:
            logger.warning("sticky counts unreadable in Redis (%s); counting rows", exc)
    unknown = [deployment_id for deployment_id, count in held.items() if count is None]
    if unknown:
        rows = (
            Assignment.objects.filter(deployment_id__in=unknown)
            .values_list("deployment_id")
            .annotate(n=Count("id"))
        )
        counted = {str(deployment_id): n for deployment_id, n in rows}
        for deployment_id in unknown:
            held[deployment_id] = counted.get(deployment_id, 0)
    for deployment_id, count in held.items():
        gauge.add_metric([deployment_id], float(count or 0))
    return gauge


def _governance_gauges() -> Iterator[GaugeMetricFamily]:
    """``canary_pending_approvals`` (live, from the approval rows) and ``canary_ready`` (the
    monitor's last verdict, so a scrape never runs the statistics) for every canary."""
    from django.db.models import Count

    from deployments.choices import DeploymentStatus
    from deployments.models import Deployment

    pending = GaugeMetricFamily(
        "canary_pending_approvals",
        "Approvals recorded for a canary's promotion that still waits for more.",
        labels=["deployment_id"],
    )
    ready = GaugeMetricFamily(
        "canary_ready",
        "1 when every required readiness check passed at the monitor's last run, else 0.",
        labels=["deployment_id"],
    )
    canaries = (
        Deployment.objects.filter(status=DeploymentStatus.CANARY)
        .annotate(pending=Count("approvals"))
        .values_list("id", "pending", "governance_record__ready")
    )
    for deployment_id, approvals, is_ready in canaries:
        pending.add_metric([str(deployment_id)], float(approvals))
        if is_ready is not None:
            ready.add_metric([str(deployment_id)], 1.0 if is_ready else 0.0)
    yield pending
    yield ready


def _plan_gauges() -> Iterator[GaugeMetricFamily]:
    """``canary_plan_step`` and ``canary_plan_step_seconds`` for every canary with a plan:
    how long each step, and each wait for an approval, took (SPEC 10.1)."""
    from django.utils import timezone

    from deployments.choices import DeploymentStatus, PlanState
    from deployments.models import DeploymentPlan

    step = GaugeMetricFamily(
        "canary_plan_step",
        "Index of the rollout plan's current step (= the number of steps when done).",
        labels=["deployment_id"],
    )
    seconds = GaugeMetricFamily(
        "canary_plan_step_seconds",
        "Seconds the rollout plan has spent in its current step.",
        labels=["deployment_id"],
    )
    now = timezone.now()
    plans = (
        DeploymentPlan.objects.filter(deployment__status=DeploymentStatus.CANARY)
        .exclude(state=PlanState.NONE)
        .values_list("deployment_id", "current_step", "step_started_at")
    )
    for deployment_id, current, started in plans:
        step.add_metric([str(deployment_id)], float(current))
        if started is not None:
            seconds.add_metric([str(deployment_id)], max(0.0, (now - started).total_seconds()))
    yield step
    yield seconds


def render_metrics() -> bytes:
    """Everything in one scrape: process metrics (summed across workers) and deployment state."""
    _initialise_running_canaries()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        registry.register(DeploymentStateCollector())
        return generate_latest(registry)
    return generate_latest(REGISTRY) + generate_latest(_state_registry())


_STATE_REGISTRY: CollectorRegistry | None = None


def _state_registry() -> CollectorRegistry:
    global _STATE_REGISTRY
    if _STATE_REGISTRY is None:
        _STATE_REGISTRY = CollectorRegistry()
        _STATE_REGISTRY.register(DeploymentStateCollector())
    return _STATE_REGISTRY
