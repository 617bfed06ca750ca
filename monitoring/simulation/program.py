"""What simulate_traffic does: set up the canary, send paced traffic, report; the command parses."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Mapping
from typing import Any

from django.core.management.base import CommandError, OutputWrapper

from monitoring.simulation import traffic as sim
from monitoring.simulation.backends import (
    Backend,
    DeploymentInfo,
    HttpBackend,
    InProcessBackend,
    TransientFailure,
    _as_uuid,
)
from monitoring.simulation.plan import Plan, _plan

MAX_POLL_FAILURES = 10
REPORT_SECONDS = 5.0  # progress lines when stdout is not a terminal


def simulate(options: Mapping[str, Any], stdout: OutputWrapper) -> None:
    """Run ``manage.py simulate_traffic`` with its parsed ``options``, writing to ``stdout``."""
    Simulation(stdout).run(options)


class Simulation:
    """One invocation: picks the target, prepares the canary, then hands over to ``Run``."""

    def __init__(self, stdout: OutputWrapper) -> None:
        self.stdout = stdout

    def run(self, options: Mapping[str, Any]) -> None:
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
        command: Simulation,
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
