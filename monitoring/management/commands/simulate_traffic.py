"""Drive real canary traffic at a rule set, in process or over HTTP, and watch what happens.

In process, every request goes through ``assignments.services.dataplane_execute``:
execution logs, assignments, the circuit breaker (and its automatic rollback)
and the Prometheus counters are the real ones. With ``--url`` the same traffic
goes through ``POST /api/v1/rulesets/{id}/execute`` of a running server.
``--scenario`` creates what the operations guide's scenarios need and picks
their traffic; see docs/scenarios.md.
"""

from __future__ import annotations

import json
import os
import random
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError

from monitoring.simulation import traffic as sim

ACTOR = "simulate_traffic"
POLL_SECONDS = 0.5
MAX_POLL_FAILURES = 10
REPORT_SECONDS = 5.0  # progress lines when stdout is not a terminal
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


# --- options -----------------------------------------------------------------------


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


# --- the command ----------------------------------------------------------------------


class Command(BaseCommand):
    help = (
        "Send paced canary traffic to a rule set (in process through the data plane, or over "
        "HTTP with --url), inject real v2 failures or latency, and stop when the deployment "
        "leaves canary. --scenario healthy|error-rate|breaker reproduces the operations "
        "guide's scenarios (docs/scenarios.md)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--ruleset", help="Rule set name or id (default: the scenario's).")
        parser.add_argument(
            "--scenario",
            choices=sorted(sim.SCENARIOS),
            help="Preset traffic and canary; creates what is missing (implies --setup).",
        )
        parser.add_argument(
            "--setup",
            action="store_true",
            help="Create the rule set (v1 and v2), the v1 release and the v2 canary if missing.",
        )
        parser.add_argument("--canary-pct", type=int, help="Traffic of a canary --setup starts.")
        parser.add_argument(
            "--canary-config",
            help="JSON merged over the preset canary_config, e.g. '{\"min_samples\": 50}'.",
        )
        parser.add_argument("--rps", type=float, help="Requests per second (default 20).")
        parser.add_argument("--duration", type=float, help="Seconds to run (default 60).")
        parser.add_argument("--requests", type=int, help="Stop after this many requests.")
        parser.add_argument(
            "--users", type=int, default=1000, help="Distinct user ids (sticky routing)."
        )
        parser.add_argument(
            "--v2-error-rate", type=float, help="Share of v2 requests that fail (0-1)."
        )
        parser.add_argument(
            "--v2-latency-ms", type=float, help="Evaluation latency added to v2 requests."
        )
        parser.add_argument(
            "--base-latency-ms",
            type=float,
            help="Evaluation work every request carries, on v1 and v2 alike (default 0).",
        )
        parser.add_argument(
            "--fault-after", type=float, help="Seconds of clean traffic before faults start."
        )
        parser.add_argument(
            "--run-monitor-every",
            type=float,
            metavar="SECONDS",
            help="Also run the canary monitor in this process every SECONDS (and once at the end).",
        )
        parser.add_argument("--url", help="Send over HTTP to this server instead of in process.")
        parser.add_argument("--token", help="API token for --url (default: $CANARY_TOKEN).")
        parser.add_argument("--seed", type=int, help="Random seed for users and inputs.")

    def handle(self, *args: Any, **options: Any) -> None:
        plan = _plan(options)
        backend = self._backend(options)
        self.verbosity = int(options.get("verbosity", 1))
        self.tty = self.stdout.isatty()
        canary = self._canary(backend, plan)
        self._check_injection(backend, canary, plan)
        sizes = self._calibrate(backend, canary, plan)
        self._announce(backend, canary, plan)
        Run(self, backend, canary, plan, sizes).go()

    # -- preparation --

    def _backend(self, options: Mapping[str, Any]) -> Backend:
        url = options.get("url")
        if not url:
            if options.get("token"):
                raise CommandError("--token only applies with --url.")
            return InProcessBackend()
        if not url.startswith(("http://", "https://")):
            raise CommandError(f"--url must start with http:// or https://, got '{url}'.")
        token = options.get("token") or os.environ.get("CANARY_TOKEN")
        if not token:
            raise CommandError("--url needs --token (or CANARY_TOKEN): an API token.")
        return HttpBackend(url, token)

    def _canary(self, backend: Backend, plan: Plan) -> DeploymentInfo:
        found = backend.find_ruleset(plan.ruleset)
        if found is None and not plan.setup:
            raise CommandError(
                f"No rule set named or with id '{plan.ruleset}'. Create it with --setup, or "
                "use --scenario healthy|error-rate|breaker."
            )
        if found is None:
            if _as_uuid(plan.ruleset):
                raise CommandError(f"No rule set with id '{plan.ruleset}'; --setup needs a name.")
            ruleset_id = backend.create_ruleset(
                plan.ruleset, f"Created by simulate_traffic ({plan.scenario.name})."
            )
            self._say(f"Created rule set '{plan.ruleset}' ({ruleset_id}).")
            name = plan.ruleset
        else:
            ruleset_id, name = found
        running = backend.deployments(ruleset_id, "canary")
        if running:
            if plan.setup:
                self._say(
                    f"Rule set '{name}' already has a canary; using it as it is "
                    f"(traffic {running[0].traffic_percentage}%, its own canary_config)."
                )
            return running[0]
        if not plan.setup:
            raise CommandError(
                f"Rule set '{name}' has no deployment in canary. Start one (admin or API), "
                "or pass --setup to create one."
            )
        return self._setup(backend, ruleset_id, name, plan)

    def _setup(self, backend: Backend, ruleset_id: str, name: str, plan: Plan) -> DeploymentInfo:
        """v1 and v2 versions if missing, v1 released if nothing is active, then a v2 canary."""
        versions = backend.version_rules(ruleset_id)
        for version, rules, changelog in (
            (sim.V1_VERSION, sim.V1_RULES, sim.V1_CHANGELOG),
            (sim.V2_VERSION, sim.V2_RULES, sim.V2_CHANGELOG),
        ):
            if version not in versions:
                backend.create_version(ruleset_id, version, rules, changelog)
                self._say(f"Created version {version} of '{name}'.")
        active = backend.deployments(ruleset_id, "active")
        if active and active[0].version == sim.V2_VERSION:
            raise CommandError(
                f"{sim.V2_VERSION} of rule set '{name}' is already active (an earlier run "
                "promoted it), so there is nothing left to canary. Use another name, e.g. "
                f"--ruleset {name}-2."
            )
        if not active:
            first = backend.create_deployment(ruleset_id, sim.V1_VERSION, {}, sim.V1_CHANGELOG)
            backend.promote(first)
            self._say(f"Released {sim.V1_VERSION} as the first release (deployment {first}).")
        draft = backend.create_deployment(
            ruleset_id, sim.V2_VERSION, plan.canary_config, sim.V2_CHANGELOG
        )
        backend.start_canary(draft, plan.canary_pct)
        self._say(f"Started {sim.V2_VERSION} in canary at {plan.canary_pct}% (deployment {draft}).")
        return backend.deployment(draft)

    def _check_injection(self, backend: Backend, canary: DeploymentInfo, plan: Plan) -> None:
        """Faults are real only when the versions have the rules that read the faulty fields."""
        versions = backend.version_rules(canary.ruleset_id)

        def names(version: str | None) -> set[str]:
            return {rule.get("name") for rule in versions.get(version or "", [])}

        needed = []
        if plan.v2_error_rate > 0 and sim.ERROR_RULE not in names(canary.version):
            needed.append(f"{canary.version} has no rule '{sim.ERROR_RULE}'")
        latency_versions = [canary.version] if plan.v2_latency_ms > 0 else []
        if plan.base_latency_ms > 0:
            latency_versions = [canary.version, canary.baseline_version]
        for version in dict.fromkeys(latency_versions):
            if sim.LATENCY_RULE not in names(version):
                needed.append(f"{version} has no rule '{sim.LATENCY_RULE}'")
        if needed:
            raise CommandError(
                f"{'; '.join(needed)}, so this command cannot make it fail or slow down for "
                "real. Use a rule set made by --setup or --scenario, or drop "
                "--v2-error-rate / --v2-latency-ms / --base-latency-ms."
            )

    def _calibrate(self, backend: Backend, canary: DeploymentInfo, plan: Plan) -> tuple[int, int]:
        """The sim_work lengths whose real evaluation takes the base and the slow v2 latency."""

        def measure(size: int) -> float:
            data = {"temperature": 20, sim.ERROR_KEY: "C", sim.LATENCY_FIELD: [0] * size}
            return sim.median([backend.dry_run_ms(canary, data) for _ in range(3)])

        sizes = []
        for label, target, wanted in (
            ("every request carries", plan.base_latency_ms, plan.base_latency_ms > 0),
            (
                "slow v2 requests carry",
                plan.base_latency_ms + plan.v2_latency_ms,
                plan.v2_latency_ms > 0,
            ),
        ):
            if not wanted:
                sizes.append(0)
                continue
            size, observed = sim.calibrate_work_size(measure, target)
            sizes.append(size)
            self._say(
                f"Latency: {label} {sim.LATENCY_FIELD} of {size} items; a dry run of "
                f"{canary.version} took {observed:.1f} ms (target {target:g} ms)."
            )
        return sizes[0], sizes[1]

    def _announce(self, backend: Backend, canary: DeploymentInfo, plan: Plan) -> None:
        if plan.scenario.summary:
            self._say(f"Scenario {plan.scenario.name}: {plan.scenario.summary}")
        faults = []
        if plan.v2_error_rate:
            faults.append(
                f"{plan.v2_error_rate:.0%} of v2 requests omit '{sim.ERROR_KEY}' "
                f"(fails rule {sim.ERROR_RULE})"
            )
        if plan.v2_latency_ms:
            faults.append(f"v2 evaluation +{plan.v2_latency_ms:g} ms")
        when = f" after {plan.fault_after:g}s" if plan.fault_after and faults else ""
        if plan.base_latency_ms:
            when += f"; both versions evaluate in ~{plan.base_latency_ms:g} ms"
        self._say(
            f"Deployment {canary.id}: {canary.version} in canary at "
            f"{canary.traffic_percentage}% against {canary.baseline_version}."
        )
        self._say(
            f"Sending {plan.rps:g} req/s for {plan.duration:g}s ({backend.label}) from "
            f"{plan.users} users; faults: {', '.join(faults) or 'none'}{when}."
        )
        if plan.monitor_every:
            self._say(f"Running the canary monitor here every {plan.monitor_every:g}s.")
        if isinstance(backend, InProcessBackend) and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            self._say(
                "Note: in-process Prometheus counters stay in this process; "
                "use --url to see them on the server's /metrics and in Grafana."
            )

    # -- output --

    def _say(self, message: str) -> None:
        if self.verbosity >= 1:
            self.stdout.write(message)


class Run:
    """One traffic run: pace, send, tally, poll the deployment, stop when it leaves canary."""

    def __init__(
        self,
        command: Command,
        backend: Backend,
        canary: DeploymentInfo,
        plan: Plan,
        sizes: tuple[int, int],
    ) -> None:
        self.command = command
        self.out = command.stdout
        self.backend = backend
        self.plan = plan
        self.canary = canary
        self.view = sim.CanaryView.from_target_filter(
            canary.id, canary.traffic_percentage, canary.target_filter
        )
        rng = random.Random(plan.seed)
        self.planner = sim.FaultPlanner(
            predictor=sim.RoutePredictor(self.view),
            users=plan.users,
            v2_error_rate=plan.v2_error_rate,
            base_size=sizes[0],
            slow_size=sizes[1],
            fault_after=plan.fault_after,
            rng=rng,
        )
        self.tally = sim.Tally()
        self.breaker = "CLOSED"
        self.first_failure: str | None = None
        self.first_error: dict[str, Any] | None = None
        self.monitor_runs = 0
        self.poll_failures = 0
        self._line_width = 0

    def go(self) -> None:
        plan = self.plan
        start = time.monotonic()
        pacer = sim.Pacer(plan.rps, start)
        end = start + plan.duration
        last_poll = next_poll = start
        next_report = start + REPORT_SECONDS
        next_monitor = start + plan.monitor_every if plan.monitor_every else float("inf")
        stopped_by = "duration"
        try:
            while True:
                now = time.monotonic()
                if now >= next_poll:
                    self._poll()
                    last_poll, next_poll = now, now + self.backend.poll_seconds
                    if self.tty_progress:
                        self._draw(now - start)
                    elif self.verbose and now >= next_report:
                        self.out.write(self._line(now - start))
                        next_report = now + REPORT_SECONDS
                    if self.canary.status != "canary":
                        stopped_by = "deployment"
                        break
                if now >= next_monitor:
                    self._monitor()
                    next_monitor = time.monotonic() + (plan.monitor_every or 0)
                    next_poll = 0.0
                    continue
                if now >= end:
                    break
                if plan.max_requests is not None and self.tally.sent >= plan.max_requests:
                    stopped_by = "requests"
                    break
                wait = pacer.wait(now)
                if wait > 0:
                    time.sleep(min(wait, max(0.0, next_poll - now), 0.1) or 0.001)
                    continue
                if self._send(now - start):
                    # The answer hints the canary ended (or the breaker opened): look soon.
                    next_poll = min(next_poll, last_poll + self.backend.fast_poll_seconds)
                pacer.sent()
        except KeyboardInterrupt:  # Ctrl-C: stop sending, still say where things stand
            stopped_by = "interrupted"
            if self.tty_progress:
                self.out.write("")
        elapsed = time.monotonic() - start
        if self.canary.status == "canary" and plan.monitor_every and stopped_by != "interrupted":
            self._monitor()  # one last look at everything this run sent
            self._poll()
            if self.canary.status != "canary":
                stopped_by = "deployment"
        if self.tty_progress:
            self._draw(elapsed)
            self.out.write("")
        self._summary(elapsed, stopped_by)

    @property
    def verbose(self) -> bool:
        return self.command.verbosity >= 1

    @property
    def tty_progress(self) -> bool:
        return self.verbose and self.command.tty

    # -- one request --

    def _send(self, elapsed: float) -> bool:
        """Send one request; True when its answer says the canary is no longer running."""
        planned = self.planner.next(elapsed)
        self.tally.sent += 1
        try:
            outcome = self.backend.execute(self.canary.ruleset_id, planned.input, planned.user_id)
        except TransientFailure as exc:
            self.tally.failed_requests += 1
            self.first_failure = self.first_failure or str(exc)
            return False
        self.tally.record(planned, outcome.served, outcome.success, outcome.latency_ms)
        self.planner.predictor.learn(planned.user_id, outcome.served, outcome.priority)
        if outcome.served == "v2" and not outcome.success and self.first_error is None:
            self.first_error = outcome.error
        return outcome.deployment_id != self.canary.id or outcome.priority is None

    # -- the deployment's side --

    def _poll(self) -> None:
        try:
            self.canary = self.backend.deployment(self.canary.id)
        except CommandError:  # a blip (or a 429) while watching: keep the last view
            self.poll_failures += 1
            if self.poll_failures >= MAX_POLL_FAILURES:
                raise
            return
        self.poll_failures = 0
        self.view.traffic_percentage = self.canary.traffic_percentage
        if self.canary.status in ("canary", "rolled_back"):  # a rollback leaves it OPEN
            self.breaker = self.backend.breaker_state(self.canary)
        else:
            self.breaker = "-"
        self.view.breaker_open = self.breaker in ("OPEN", "UNKNOWN")

    def _monitor(self) -> None:
        from monitoring.automation.monitor import monitor_run

        report = monitor_run()
        self.monitor_runs += 1
        if report.skipped:
            text = "monitor: skipped (another run holds the lease, e.g. Celery beat's)"
        else:
            text = (
                f"monitor: checked {report.checked} canaries, rolled back "
                f"{len(report.rolled_back)}, raised traffic of {len(report.progressed)}, "
                f"promoted {len(report.promoted)}"
            )
        if self.verbose:
            self._print_above(text)

    # -- display --

    def _line(self, elapsed: float) -> str:
        return sim.summary_line(
            tally=self.tally,
            elapsed=elapsed,
            duration=self.plan.duration,
            breaker_state=self.breaker,
            status=self.canary.status,
            traffic=self.canary.traffic_percentage,
        )

    def _draw(self, elapsed: float) -> None:
        line = self._line(elapsed)
        padding = " " * max(0, self._line_width - len(line))
        self._line_width = len(line)
        self.out.write("\r" + line + padding, ending="")
        self.out.flush()

    def _print_above(self, text: str) -> None:
        if self.tty_progress and self._line_width:
            self.out.write("\r" + " " * self._line_width + "\r", ending="")
            self._line_width = 0
        self.out.write(text)

    def _summary(self, elapsed: float, stopped_by: str) -> None:
        tally, canary, write = self.tally, self.canary, self.out.write
        v1, v2 = tally.versions["v1"], tally.versions["v2"]
        rate = tally.sent / elapsed if elapsed > 0 else 0.0
        write("")
        write(
            f"Sent {tally.sent} requests in {elapsed:.1f}s ({rate:.1f}/s, asked "
            f"{self.plan.rps:g}/s)."
        )
        for name, version in (("v1", v1), ("v2", v2)):
            share = f"{version.served / max(1, tally.sent - tally.failed_requests):.1%}"
            errors = f"{version.errors} errors ({_pct(version.error_rate)})"
            write(
                f"  {name}: {version.served} served ({share}), {errors}, p95 latency "
                f"{sim.format_ms(version.p95())}"
            )
        if tally.injected_errors or tally.injected_latency:
            write(
                f"  injected: {tally.injected_errors} inputs without '{sim.ERROR_KEY}', "
                f"{tally.injected_latency} slow inputs, to requests predicted for v2 "
                f"({tally.mispredicted} predictions missed)"
            )
        if self.first_error:
            write(f"  first v2 error: {self.first_error}")
        if tally.failed_requests:
            write(f"  {tally.failed_requests} requests got no answer; first: {self.first_failure}")
        if self.monitor_runs:
            write(f"  monitor runs in this process: {self.monitor_runs}")
        write(self._outcome(stopped_by))
        comparison = self._comparison()
        if comparison:
            write(comparison)
        base = self.backend.base_url
        write(f"Admin:      {base}/admin/deployments/deployment/{canary.id}/change/")
        write(f"Comparison: {base}/api/v1/deployments/{canary.id}/comparison")
        write(f"Health:     {base}/api/v1/deployments/{canary.id}/health")

    def _outcome(self, stopped_by: str) -> str:
        canary = self.canary
        label = f"Deployment {canary.id} ({canary.version})"
        if canary.status == "rolled_back":
            actor = self.backend.last_actor(canary.id, canary.status)
            return (
                f"{label} was ROLLED BACK by {actor}: {canary.rollback_reason} "
                f"(v1 serves everyone; circuit breaker {self.breaker})"
            )
        if canary.status == "active":
            actor = self.backend.last_actor(canary.id, canary.status)
            return f"{label} was PROMOTED by {actor}: it now serves every request."
        if canary.status != "canary":
            return f"{label} left canary: it is {canary.status}."
        why = {
            "duration": "the duration ended",
            "requests": "--requests was reached",
            "interrupted": "it was interrupted",
        }[stopped_by]
        return (
            f"{label} is still in canary at {canary.traffic_percentage}% "
            f"(breaker {self.breaker}); stopped because {why}."
        )

    def _comparison(self) -> str | None:
        try:
            answer = self.backend.comparison(self.canary.id)
        except CommandError:
            return None
        if not answer:
            return None
        verdict = answer["comparison"]["recommendation"]
        breaches = [b.get("message", "") for b in answer.get("evidence", {}).get("breaches", [])]
        text = f"Comparison now recommends: {verdict}"
        return text + (f" ({' '.join(breaches)})" if breaches else "")


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"
