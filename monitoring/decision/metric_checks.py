"""Metric checks (SPEC 10.1): business metrics from Prometheus judged each monitor run.

Each check of ``canary_config.metric_checks`` is a PromQL instant query
(``/api/v1/query``) with ``{deployment_id}`` replaced by the canary's id. A value past
``max`` or ``min`` is a *breach* (the monitor rolls back, naming the check); no result,
a value that is not a number, or a Prometheus that does not answer within
``CANARY_PROMETHEUS_TIMEOUT_SECONDS`` is *inconclusive*: never a rollback, but a plan
waits, health warns and readiness's ``metric:<name>`` check fails.

The monitor queries every canary's checks at once, before it judges any canary and
outside any row lock, so a slow Prometheus costs one timeout per run, not one per
check, and never holds a lock other writers wait on. Everyone else reads the stored
results (``MetricCheckRecord``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import requests
from django.conf import settings

from deployments.models import Deployment
from monitoring.models import MetricCheckRecord
from monitoring.statistics.analysis import Breach
from monitoring.statistics.readiness import Check

logger = logging.getLogger(__name__)

PASS = "pass"  # noqa: S105 (an outcome, not a secret)
BREACH = "breach"
INCONCLUSIVE = "inconclusive"
INCONCLUSIVE_CODE = "metric_check_inconclusive"
MAX_PARALLEL_QUERIES = 8


@dataclass(frozen=True)
class MetricResult:
    name: str
    query: str
    outcome: str  # pass | breach | inconclusive
    value: float | None
    detail: str
    max: float | None = None
    min: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _query_text(check: dict[str, Any], deployment_id: Any) -> str:
    # str.replace, not format(): PromQL is full of braces.
    return str(check["query"]).replace("{deployment_id}", str(deployment_id))


def _values(body: Any) -> list[float]:
    """The numbers of an instant query's answer (a vector's samples, or a scalar)."""
    data = body.get("data", {}) if isinstance(body, dict) else {}
    kind, result = data.get("resultType"), data.get("result")
    if kind == "scalar" and isinstance(result, list) and len(result) == 2:
        samples = [result]
    elif kind == "vector" and isinstance(result, list):
        samples = [item.get("value") for item in result if isinstance(item, dict)]
    else:
        return []
    values = []
    for sample in samples:
        try:
            value = float(sample[1])
        except (TypeError, ValueError, IndexError):
            continue
        if math.isfinite(value):
            values.append(value)
    return values


def _judge(check: dict[str, Any], query: str, values: list[float]) -> MetricResult:
    high, low = check.get("max"), check.get("min")
    bounds = {"max": high, "min": low}
    if not values:
        return MetricResult(
            check["name"],
            query,
            INCONCLUSIVE,
            None,
            "no data: the query returned no number",
            **bounds,
        )
    for value in values:
        if high is not None and value > high:
            return MetricResult(
                check["name"], query, BREACH, value, f"{value:g} is above max {high:g}", **bounds
            )
        if low is not None and value < low:
            return MetricResult(
                check["name"], query, BREACH, value, f"{value:g} is below min {low:g}", **bounds
            )
    return MetricResult(
        check["name"], query, PASS, values[0], f"{values[0]:g} is within bounds", **bounds
    )


def metric_check_query(check: dict[str, Any], deployment_id: Any) -> MetricResult:
    """One check, one instant query; every failure to get a number is inconclusive."""
    query = _query_text(check, deployment_id)
    bounds = {"max": check.get("max"), "min": check.get("min")}
    base = settings.CANARY_PROMETHEUS_URL
    if not base:
        return MetricResult(
            check["name"], query, INCONCLUSIVE, None, "CANARY_PROMETHEUS_URL is not set", **bounds
        )
    try:
        response = requests.get(
            f"{base}/api/v1/query",
            params={"query": query},
            timeout=settings.CANARY_PROMETHEUS_TIMEOUT_SECONDS,
        )
        body = response.json()
    except (requests.RequestException, ValueError) as exc:
        return MetricResult(
            check["name"], query, INCONCLUSIVE, None, f"Prometheus unreachable: {exc}", **bounds
        )
    if response.status_code != 200 or body.get("status") != "success":
        error = body.get("error") if isinstance(body, dict) else None
        return MetricResult(
            check["name"],
            query,
            INCONCLUSIVE,
            None,
            f"Prometheus answered {response.status_code}: {error or 'no result'}",
            **bounds,
        )
    return _judge(check, query, _values(body))


def metric_checks_evaluate(deployments: Iterable[Deployment]) -> dict[str, list[MetricResult]]:
    """Every check of every canary, queried in parallel; results by deployment id."""
    jobs = [
        (str(deployment.pk), check)
        for deployment in deployments
        for check in deployment.canary_config.get("metric_checks") or []
    ]
    results: dict[str, list[MetricResult]] = {}
    if not jobs:
        return results
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL_QUERIES, len(jobs))) as pool:
        answers = pool.map(lambda job: metric_check_query(job[1], job[0]), jobs)
        for (deployment_id, _), answer in zip(jobs, answers, strict=True):
            results.setdefault(deployment_id, []).append(answer)
    return results


def metric_checks_store(
    *, deployment: Deployment, results: list[MetricResult], now: datetime
) -> None:
    MetricCheckRecord.objects.update_or_create(
        deployment=deployment,
        defaults={"results": [result.as_dict() for result in results], "checked_at": now},
    )


def stored_metric_results(*, deployment: Deployment) -> list[dict[str, Any]]:
    """The latest stored result of each configured check (a check never run: inconclusive)."""
    checks = deployment.canary_config.get("metric_checks") or []
    if not checks:
        return []
    record = MetricCheckRecord.objects.filter(deployment=deployment).first()
    by_name = {row["name"]: row for row in (record.results if record else [])}
    rows = []
    for check in checks:
        row = by_name.get(check["name"])
        if row is None:
            row = MetricResult(
                check["name"],
                _query_text(check, deployment.pk),
                INCONCLUSIVE,
                None,
                "not evaluated yet",
                check.get("max"),
                check.get("min"),
            ).as_dict()
        rows.append({**row, "checked_at": record.checked_at.isoformat() if record else None})
    return rows


def metric_breach_message(name: str, detail: str) -> str:
    return f"Metric check {name} breached: {detail}."


def metric_breaches(*, deployment: Deployment) -> tuple[Breach, ...]:
    """The breached checks of the last monitor run, as the decision's rollback rules."""
    return tuple(
        Breach(
            f"metric:{row['name']}",
            metric_breach_message(row["name"], row["detail"]),
            float(row["value"]),
            float(row["max"] if row.get("max") is not None else row["min"]),
        )
        for row in stored_metric_results(deployment=deployment)
        if row["outcome"] == BREACH
    )


def metric_check_warnings(*, deployment: Deployment) -> list[str]:
    """Health's warnings: ``metric_check_inconclusive: <name>`` and breached checks."""
    warnings = []
    for row in stored_metric_results(deployment=deployment):
        if row["outcome"] == INCONCLUSIVE:
            warnings.append(f"{INCONCLUSIVE_CODE}: {row['name']} ({row['detail']})")
        elif row["outcome"] == BREACH:
            warnings.append(f"metric_check_breached: {row['name']} ({row['detail']})")
    return warnings


def metric_readiness_checks(*, deployment: Deployment) -> list[Check]:
    """Readiness's required ``metric:<name>`` checks: each passes only on a passing result."""
    return [
        Check(
            f"metric:{row['name']}",
            row["outcome"] == PASS,
            True,
            row["value"],
            f"{row['outcome']}: {row['detail']}",
        )
        for row in stored_metric_results(deployment=deployment)
    ]
