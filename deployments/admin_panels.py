"""Seams through which higher apps add measurement panels to the deployment admin.

Dependencies run one way (deployments <- assignments <- monitoring), so the
deployment admin cannot ask ``monitoring`` for metrics itself. ``monitoring``
registers its providers here from ``MonitoringConfig.ready()`` (by importing
``monitoring.admin``); until then, and whenever a provider fails, the admin
simply shows no measurements.

- ``measurement_provider(deployment)`` feeds the deployment page: a dict
  ``{"comparison": ..., "health": ...}`` holding the same dicts as the REST
  ``/comparison`` and ``/health`` endpoints, or ``None`` when there is nothing
  to measure.
- ``health_provider(deployment)`` feeds the list's "v2 (5 min)" column: the
  REST ``/health`` dict, or ``None``. The list calls it for canary rows only,
  so its cost does not grow with ended deployments.
- Named console panels (``panel(name, ...)``), each returning a dict for a
  template or ``None``: ``"monitor"`` (the monitor's heartbeat, no argument),
  ``"live"`` (a deployment's step, breaker and monitor), ``"compensation"``
  (manual compensation's counts), ``"chart"`` (per-minute series),
  ``"running"`` (the running canaries with their verdict, readiness,
  approvals and error rates, for the index page), ``"compensation_pending"``
  (rolled-back deployments whose manual compensation is not done yet).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from deployments.models import Deployment

logger = logging.getLogger(__name__)

Provider = Callable[[Deployment], dict[str, Any] | None]


def _nothing(deployment: Deployment) -> None:
    return None


measurement_provider: Provider = _nothing
health_provider: Provider = _nothing


panels: dict[str, Callable[..., Any]] = {}
# Writes the console starts but a higher app owns (``"compensation_replay"``,
# which queues a Celery task). Unlike panels, their errors reach the caller.
operations: dict[str, Callable[..., Any]] = {}


def register(
    *,
    measurements: Provider,
    health: Provider,
    operations_by_name: dict[str, Callable[..., Any]] | None = None,
    **named: Callable[..., Any],
) -> None:
    """Install the providers; called once by the app that owns the measurements."""
    global measurement_provider, health_provider
    measurement_provider = measurements
    health_provider = health
    panels.update(named)
    operations.update(operations_by_name or {})


def operation(name: str) -> Callable[..., Any]:
    """The named operation; a LookupError when its app is not installed."""
    try:
        return operations[name]
    except KeyError as exc:
        raise LookupError(f"No console operation {name!r} is registered.") from exc


def panel(name: str, *args: Any) -> Any:
    """A named panel's data, or None when nobody provides it or it fails."""
    provider = panels.get(name)
    if provider is None:
        return None
    try:
        return provider(*args)
    except Exception:
        # NOTE: like the measurements: a broken panel must not take the page down.
        logger.exception("console panel %r failed", name)
        return None


def measurements_for(deployment: Deployment) -> dict[str, Any] | None:
    """The page panel's data; a failing provider must not take the page down."""
    return _safely(measurement_provider, deployment)


def health_for(deployment: Deployment) -> dict[str, Any] | None:
    """The list column's data; a failing provider shows as "no measurement"."""
    return _safely(health_provider, deployment)


def _safely(provider: Provider, deployment: Deployment) -> dict[str, Any] | None:
    try:
        return provider(deployment)
    except Exception:
        # NOTE: the console must stay usable (to roll back!) when metrics are down.
        logger.exception("measurement provider failed for deployment %s", deployment.pk)
        return None
