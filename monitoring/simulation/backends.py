"""Where simulated traffic goes: this process's data plane or a server's API, one interface."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from django.conf import settings
from django.core.management.base import CommandError
from django.db import DatabaseError

from monitoring.simulation import traffic as sim

ACTOR = "simulate_traffic"
POLL_SECONDS = 0.5
HTTP_TIMEOUT = 30.0


# --- what the command needs from a target ----------------------------------------------


@dataclass(frozen=True)
class DeploymentInfo:
    id: str
    ruleset_id: str
    status: str
    traffic_percentage: int
    version: str
    version_id: str
    baseline_version: str | None
    canary_config: dict[str, Any]
    target_filter: dict[str, Any] | None
    rollback_reason: str


@dataclass(frozen=True)
class Outcome:
    served: str
    success: bool
    latency_ms: float
    priority: str | None
    deployment_id: str
    error: dict[str, Any] | None


class Backend(Protocol):
    """One target: this process's database and data plane, or a server's REST API."""

    label: str
    base_url: str
    poll_seconds: float
    fast_poll_seconds: float  # how soon to look again when an answer hints at a change

    def find_ruleset(self, ref: str) -> tuple[str, str] | None: ...
    def create_ruleset(self, name: str, description: str) -> str: ...
    def version_rules(self, ruleset_id: str) -> dict[str, list[dict[str, Any]]]: ...
    def create_version(
        self, ruleset_id: str, version: str, rules: list[dict[str, Any]], changelog: str
    ) -> None: ...
    def deployments(self, ruleset_id: str, status: str) -> list[DeploymentInfo]: ...
    def create_deployment(
        self, ruleset_id: str, version: str, canary_config: Mapping[str, Any], changelog: str
    ) -> str: ...
    def promote(self, deployment_id: str) -> None: ...
    def start_canary(self, deployment_id: str, pct: int) -> None: ...
    def deployment(self, deployment_id: str) -> DeploymentInfo: ...
    def breaker_state(self, info: DeploymentInfo) -> str: ...
    def last_actor(self, deployment_id: str, status: str) -> str: ...
    def execute(self, ruleset_id: str, data: dict[str, Any], user_id: str) -> Outcome: ...
    def dry_run_ms(self, info: DeploymentInfo, data: dict[str, Any]) -> float: ...
    def comparison(self, deployment_id: str) -> dict[str, Any] | None: ...


class TransientFailure(Exception):
    """One request got no evaluation (HTTP 5xx, a dropped connection, a locked database)."""


def _as_uuid(ref: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(ref)
    except ValueError:
        return None


class InProcessBackend:
    """This process's database and data plane: every write is the product's own service."""

    label = "in-process"
    poll_seconds = POLL_SECONDS
    fast_poll_seconds = 0.05

    def __init__(self) -> None:
        self.base_url = settings.CANARY_BASE_URL.rstrip("/")

    @staticmethod
    def _service(call: Callable[[], Any]) -> Any:
        from canary.errors import DomainError

        try:
            return call()
        except DomainError as exc:
            raise CommandError(exc.detail) from exc

    def find_ruleset(self, ref: str) -> tuple[str, str] | None:
        from deployments.models import RuleSet

        pk = _as_uuid(ref)
        found = RuleSet.objects.filter(pk=pk).first() if pk else None
        found = found or RuleSet.objects.filter(name=ref).first()
        return (str(found.pk), found.name) if found else None

    def create_ruleset(self, name: str, description: str) -> str:
        from deployments import services

        ruleset = self._service(
            lambda: services.ruleset_create(name=name, description=description, actor=ACTOR)
        )
        return str(ruleset.pk)

    def version_rules(self, ruleset_id: str) -> dict[str, list[dict[str, Any]]]:
        from deployments.models import RuleSetVersion

        rows = RuleSetVersion.objects.filter(ruleset_id=ruleset_id).values_list("version", "rules")
        return dict(rows)

    def create_version(
        self, ruleset_id: str, version: str, rules: list[dict[str, Any]], changelog: str
    ) -> None:
        from deployments import services
        from deployments.models import RuleSet

        ruleset = RuleSet.objects.get(pk=ruleset_id)
        self._service(
            lambda: services.ruleset_version_create(
                ruleset=ruleset,
                version=version,
                rules=rules,
                default=sim.DEFAULT_OUTPUT,
                changelog=changelog,
                actor=ACTOR,
            )
        )

    @staticmethod
    def _info(deployment: Any) -> DeploymentInfo:
        return DeploymentInfo(
            id=str(deployment.pk),
            ruleset_id=str(deployment.ruleset_id),
            status=deployment.status,
            traffic_percentage=deployment.traffic_percentage,
            version=deployment.version.version,
            version_id=str(deployment.version_id),
            baseline_version=(deployment.baseline.version.version if deployment.baseline else None),
            canary_config=dict(deployment.canary_config or {}),
            target_filter=deployment.canary_target_filter,
            rollback_reason=deployment.rollback_reason or "",
        )

    def deployments(self, ruleset_id: str, status: str) -> list[DeploymentInfo]:
        from deployments.selectors import deployment_list

        return [
            self._info(d) for d in deployment_list().filter(ruleset_id=ruleset_id, status=status)
        ]

    def create_deployment(
        self, ruleset_id: str, version: str, canary_config: Mapping[str, Any], changelog: str
    ) -> str:
        from deployments import services

        deployment = self._service(
            lambda: services.deployment_create(
                ruleset_id=ruleset_id,
                version=version,
                changelog=changelog,
                canary_config=canary_config,
                actor=ACTOR,
            )
        )
        return str(deployment.pk)

    def promote(self, deployment_id: str) -> None:
        from deployments import services

        self._service(lambda: services.deployment_promote(deployment_id=deployment_id, actor=ACTOR))

    def start_canary(self, deployment_id: str, pct: int) -> None:
        from deployments import services

        self._service(
            lambda: services.deployment_start_canary(
                deployment_id=deployment_id, canary_pct=pct, actor=ACTOR
            )
        )

    def deployment(self, deployment_id: str) -> DeploymentInfo:
        from deployments.selectors import deployment_list

        return self._info(deployment_list().get(pk=deployment_id))

    def breaker_state(self, info: DeploymentInfo) -> str:
        from monitoring.breaker.store import breaker_state_for

        try:
            return breaker_state_for(deployment_id=info.id, canary_config=info.canary_config)
        except Exception:  # the data plane serves v1 when it cannot read the breaker either
            return "UNKNOWN"

    def last_actor(self, deployment_id: str, status: str) -> str:
        from deployments.models import DeploymentEvent

        event = (
            DeploymentEvent.objects.filter(deployment_id=deployment_id, to_status=status)
            .order_by("-created_at", "-id")
            .first()
        )
        return event.actor if event else "unknown"

    def execute(self, ruleset_id: str, data: dict[str, Any], user_id: str) -> Outcome:
        from assignments.router import RoutingContext
        from assignments.services import dataplane_execute

        try:
            result = self._service(
                lambda: dataplane_execute(
                    ruleset_id=ruleset_id, input=data, context=RoutingContext(user_id=user_id)
                )
            )
        except DatabaseError as exc:  # e.g. SQLite busy beside `make run`: skip this one
            raise TransientFailure(str(exc)) from exc
        resolution = result.resolution
        return Outcome(
            served=resolution.canary_version,
            success=result.success,
            latency_ms=result.latency_ms,
            priority=resolution.assignment_priority if resolution.canary_running else None,
            deployment_id=resolution.deployment_id if resolution.canary_running else "",
            error=result.error,
        )

    def dry_run_ms(self, info: DeploymentInfo, data: dict[str, Any]) -> float:
        from deployments.selectors import compiled_rules_for_version_id

        compiled = compiled_rules_for_version_id(info.version_id)
        started = time.perf_counter()  # exactly what the data plane times
        compiled.evaluate(data)
        return (time.perf_counter() - started) * 1000

    def comparison(self, deployment_id: str) -> dict[str, Any] | None:
        from deployments.models import Deployment
        from monitoring.decision.health import deployment_comparison

        deployment = Deployment.objects.get(pk=deployment_id)
        if deployment.started_at is None:
            return None
        return deployment_comparison(deployment=deployment, window_minutes=None)


class HttpBackend:
    """A running server's REST API, with a Bearer token (Viewer to watch, Approver to set up)."""

    label = "HTTP"
    poll_seconds = 1.0  # two GETs a second stay far below the API's rate limit
    fast_poll_seconds = 0.5

    def __init__(self, url: str, token: str) -> None:
        import requests

        self.base_url = url.rstrip("/")
        self.api = f"{self.base_url}/api/v1"
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    def _call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, Any] | None = None,
        missing_ok: bool = False,
    ) -> Any:
        import requests

        for attempt in range(4):
            try:
                response = self.session.request(
                    method, f"{self.api}{path}", json=body, params=params, timeout=HTTP_TIMEOUT
                )
            except requests.RequestException as exc:
                raise CommandError(f"Cannot reach {self.base_url}: {exc}") from exc
            if response.status_code != 429 or attempt == 3:
                break
            time.sleep(_retry_after(response))
        if missing_ok and response.status_code == 404:
            return None
        if response.status_code >= 400:
            raise CommandError(
                f"{method} {path} answered {response.status_code}: {_detail(response)}"
            )
        return response.json() if response.content else None

    def _pages(self, path: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        page = 1
        while True:
            body = self._call("GET", path, params={**params, "page": page, "page_size": 1000})
            rows.extend(body["results"])
            if not body.get("next"):
                return rows
            page += 1

    def find_ruleset(self, ref: str) -> tuple[str, str] | None:
        if _as_uuid(ref):
            found = self._call("GET", f"/rulesets/{ref}", missing_ok=True)
            if found:
                return str(found["id"]), found["name"]
        for row in self._pages("/rulesets", {}):
            if row["name"] == ref:
                return str(row["id"]), row["name"]
        return None

    def create_ruleset(self, name: str, description: str) -> str:
        body = self._call("POST", "/rulesets", body={"name": name, "description": description})
        return str(body["id"])

    def version_rules(self, ruleset_id: str) -> dict[str, list[dict[str, Any]]]:
        rows = self._pages(f"/rulesets/{ruleset_id}/versions", {})
        return {row["version"]: row["rules"] for row in rows}

    def create_version(
        self, ruleset_id: str, version: str, rules: list[dict[str, Any]], changelog: str
    ) -> None:
        self._call(
            "POST",
            f"/rulesets/{ruleset_id}/versions",
            body={
                "version": version,
                "rules": rules,
                "default": sim.DEFAULT_OUTPUT,
                "changelog": changelog,
            },
        )

    @staticmethod
    def _info(row: Mapping[str, Any]) -> DeploymentInfo:
        return DeploymentInfo(
            id=str(row["deployment_id"]),
            ruleset_id=str(row["ruleset_id"]),
            status=row["status"],
            traffic_percentage=row["traffic_percentage"],
            version=row["version"],
            version_id=str(row["version_id"]),
            baseline_version=row.get("baseline_version"),
            canary_config=dict(row.get("canary_config") or {}),
            target_filter=row.get("canary_target_filter"),
            rollback_reason=row.get("rollback_reason") or "",
        )

    def deployments(self, ruleset_id: str, status: str) -> list[DeploymentInfo]:
        rows = self._pages("/deployments", {"ruleset_id": ruleset_id, "status": status})
        return [self._info(row) for row in rows]

    def create_deployment(
        self, ruleset_id: str, version: str, canary_config: Mapping[str, Any], changelog: str
    ) -> str:
        body = self._call(
            "POST",
            "/deployments",
            body={
                "ruleset_id": ruleset_id,
                "version": version,
                "changelog": changelog,
                "canary_config": dict(canary_config),
            },
        )
        return str(body["deployment_id"])

    def promote(self, deployment_id: str) -> None:
        self._call("POST", f"/deployments/{deployment_id}/promote")

    def start_canary(self, deployment_id: str, pct: int) -> None:
        self._call("POST", f"/deployments/{deployment_id}/start-canary", body={"canary_pct": pct})

    def deployment(self, deployment_id: str) -> DeploymentInfo:
        return self._info(self._call("GET", f"/deployments/{deployment_id}"))

    def breaker_state(self, info: DeploymentInfo) -> str:
        try:
            body = self._call("GET", f"/deployments/{info.id}/health")
        except CommandError:
            return "UNKNOWN"
        return str(body.get("circuit_breaker_state") or "UNKNOWN")

    def last_actor(self, deployment_id: str, status: str) -> str:
        events = self._pages(f"/deployments/{deployment_id}/events", {})
        matching = [event for event in events if event["to_status"] == status]
        return matching[-1]["actor"] if matching else "unknown"

    def execute(self, ruleset_id: str, data: dict[str, Any], user_id: str) -> Outcome:
        import requests

        try:
            response = self.session.post(
                f"{self.api}/rulesets/{ruleset_id}/execute",
                json={"input": data, "user_id": user_id},
                timeout=HTTP_TIMEOUT,
            )
        except requests.RequestException as exc:
            raise TransientFailure(str(exc)) from exc
        if response.status_code == 429:
            time.sleep(_retry_after(response))
            raise TransientFailure(f"HTTP 429: {_detail(response)}")
        if response.status_code in (401, 403, 404, 409):
            raise CommandError(f"execute answered {response.status_code}: {_detail(response)}")
        if response.status_code != 200:
            raise TransientFailure(f"HTTP {response.status_code}: {_detail(response)}")
        body = response.json()
        return Outcome(
            served=body["canary_version"],
            success=body["success"],
            latency_ms=float(body["latency_ms"]),
            priority=body.get("assignment_priority"),
            deployment_id=str(body.get("deployment_id") or ""),
            error=body.get("error"),
        )

    def dry_run_ms(self, info: DeploymentInfo, data: dict[str, Any]) -> float:
        body = self._call(
            "POST",
            f"/rulesets/{info.ruleset_id}/test",
            body={"input": data, "version": info.version},
        )
        return float(body["latency_ms"])

    def comparison(self, deployment_id: str) -> dict[str, Any] | None:
        return self._call("GET", f"/deployments/{deployment_id}/comparison")


def _retry_after(response: Any) -> float:
    """The throttle's wait, capped: the run goes on rather than stalling for a minute."""
    try:
        return min(5.0, max(0.1, float(response.headers.get("Retry-After", 1))))
    except ValueError:
        return 1.0


def _detail(response: Any) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"])
    return json.dumps(body)[:300]
