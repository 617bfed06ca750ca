"""``canary``: drive releases from a pipeline (SPEC §10.5).

Reads ``CANARY_URL`` and ``CANARY_TOKEN`` (or ``--url``/``--token``). Every command
takes ``--json`` (the answer's document on stdout, progress on stderr). Exit codes:

\b
  0  success (``status --watch``: the deployment was promoted)
  1  the release failed: rolled back, a test case or a backtest failed, not ready at
     the timeout
  2  bad usage, an unreadable file, or the server refused the request (a 4xx)
  3  timed out waiting
  4  the server could not be reached (or kept answering 5xx)
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import wraps
from typing import Any, NoReturn, TypeVar

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from canary_client.client import Client, RetryPolicy
from canary_client.durations import parse_duration
from canary_client.errors import CanaryHTTPError, CanaryUnreachable
from canary_client.files import case_bodies, load_document, version_body

SUCCESS, FAILED, USAGE, TIMED_OUT, UNREACHABLE = 0, 1, 2, 3, 4
ENDED = {"rolled_back": FAILED, "active": SUCCESS}
F = TypeVar("F", bound=Callable[..., Any])


class Duration(click.ParamType):  # type: ignore[type-arg]
    """Seconds, or a duration such as ``90s``, ``30m``, ``2h``."""

    name = "duration"

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        if isinstance(value, int | float):
            return float(value)
        try:
            return parse_duration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


DURATION = Duration()


class Exit(Exception):
    """Leave with ``code`` after saying ``message`` (on stderr)."""

    def __init__(self, code: int, message: str = "", document: Any = None) -> None:
        super().__init__(message)
        self.code, self.message, self.document = code, message, document


@dataclass
class App:
    url: str | None
    token: str | None
    request_timeout: float
    retries: int
    interval: float = 2.0
    json: bool = False
    err: Console = field(default_factory=lambda: Console(stderr=True, highlight=False))
    _client: Client | None = None

    @property
    def client(self) -> Client:
        if self._client is None:
            if not self.url:
                raise Exit(USAGE, "no server: set CANARY_URL or pass --url")
            self._client = Client(
                self.url,
                self.token,
                timeout=self.request_timeout,
                retry=RetryPolicy(attempts=max(1, self.retries + 1)),
            )
        return self._client

    @property
    def interactive(self) -> bool:
        return self.err.is_terminal and not self.json

    def say(self, message: str) -> None:
        """A line for the person or the log (stderr), never mixed with ``--json``'s stdout."""
        if self.err.is_terminal:
            self.err.print(message)
        else:
            click.echo(message, err=True)

    def out(self, document: Any, human: str | None = None) -> None:
        if self.json:
            click.echo(json.dumps(document, indent=2, sort_keys=True, default=str))
        elif human is not None:
            click.echo(human)


def _run(app: App, function: Callable[..., Any], *args: Any, **kwargs: Any) -> NoReturn:
    code = SUCCESS
    try:
        result = function(app, *args, **kwargs)
        code = result if isinstance(result, int) else SUCCESS
    except Exit as exc:
        code = exc.code
        if exc.message:
            app.say(exc.message)
        if exc.document is not None and app.json:
            app.out(exc.document)
    except CanaryUnreachable as exc:
        code = UNREACHABLE
        app.say(f"canary: cannot reach the server: {exc}")
    except CanaryHTTPError as exc:
        code = USAGE if exc.is_client_error else UNREACHABLE
        app.say(f"canary: {exc.status_code} {exc.code or 'error'}: {exc.detail}")
        for name, messages in exc.fields.items():
            if name not in ("status", "allowed_actions"):
                app.say(f"  {name}: {messages}")
        if app.json:
            app.out({"error": {"status": exc.status_code, "code": exc.code, **exc.fields,
                               "detail": exc.detail}})  # fmt: skip
    except ValueError as exc:
        code = USAGE
        app.say(f"canary: {exc}")
    finally:
        if app._client is not None:
            app._client.close()
    sys.exit(code)


def command(group: click.Group, name: str | None = None, **settings: Any) -> Callable[[F], F]:
    """A subcommand with ``--json`` whose errors become the documented exit codes."""

    def decorate(function: F) -> F:
        @group.command(name, **settings)
        @click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON.")
        @click.pass_obj
        @wraps(function)
        def wrapper(app: App, as_json: bool, *args: Any, **kwargs: Any) -> None:
            app.json = as_json
            _run(app, function, *args, **kwargs)

        return function

    return decorate


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, help=__doc__)
@click.option("--url", envvar="CANARY_URL", help="The server, e.g. https://canary.example.")
@click.option("--token", envvar="CANARY_TOKEN", help="An API token (Approver for changes).")
@click.option(
    "--request-timeout", type=DURATION, default="10s", show_default=True, help="Per request."
)
@click.option(
    "--retries",
    type=click.IntRange(0, 20),
    default=4,
    envvar="CANARY_RETRIES",
    show_default=True,
    help="Retries of reads and guarded lifecycle calls on 429/503 and connection errors.",
)
@click.version_option("1.0.0", prog_name="canary")
@click.pass_context
def cli(ctx: click.Context, url: str | None, token: str | None, request_timeout: float,
        retries: int) -> None:  # fmt: skip
    ctx.obj = App(url=url, token=token, request_timeout=request_timeout, retries=retries)


def main() -> None:
    cli(prog_name="canary")


# --- rule sets and versions ----------------------------------------------------------------


@cli.group()
def rulesets() -> None:
    """Rule sets: list, show, create."""


@command(rulesets, "list")
def rulesets_list(app: App) -> None:
    found = app.client.rulesets()
    app.out(found, "\n".join(f"{r['id']}  {r['name']}" for r in found) or "no rule sets")


@command(rulesets, "get")
@click.argument("ruleset")
def rulesets_get(app: App, ruleset: str) -> None:
    found = app.client.ruleset(app.client.ruleset_id(ruleset))
    app.out(found, f"{found['id']}  {found['name']}  {found.get('description', '')}")


@command(rulesets, "create")
@click.argument("name")
@click.option("--description", default="")
@click.option("--if-missing", is_flag=True, help="Succeed when it already exists (reruns).")
def rulesets_create(app: App, name: str, description: str, if_missing: bool) -> None:
    existing = app.client.ruleset_by_name(name) if if_missing else None
    created = existing or app.client.create_ruleset(name, description)
    app.out(created, str(created["id"]))


@cli.group()
def versions() -> None:
    """Rule-set versions, created from YAML or JSON files."""


@command(versions, "list")
@click.argument("ruleset")
def versions_list(app: App, ruleset: str) -> None:
    found = app.client.versions(app.client.ruleset_id(ruleset))
    app.out(found, "\n".join(str(v["version"]) for v in found) or "no versions")


@command(versions, "create")
@click.argument("ruleset")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--version", "version_tag", help="The version, instead of the file's.")
@click.option("--if-missing", is_flag=True, help="Succeed when this version already exists.")
def versions_create(
    app: App, ruleset: str, file: str, version_tag: str | None, if_missing: bool
) -> None:
    """Create a version from FILE: version, rules, default, changelog."""
    body = version_body(load_document(file), version=version_tag)
    ruleset_id = app.client.ruleset_id(ruleset)
    if if_missing:
        existing = next(
            (v for v in app.client.versions(ruleset_id) if v["version"] == body["version"]), None
        )
        if existing is not None:
            app.out(existing, f"{body['version']} exists")
            return
    created = app.client.create_version(ruleset_id, **body)
    app.out(created, f"{created['version']} created")


# --- test cases, test, backtest (SPEC §10.2) -------------------------------------------------


@cli.group("test-cases")
def test_cases() -> None:
    """A rule set's test cases (name, input, expected_output), from YAML or JSON files."""


@command(test_cases, "list")
@click.argument("ruleset")
def test_cases_list(app: App, ruleset: str) -> None:
    found = app.client.test_cases(app.client.ruleset_id(ruleset))
    app.out(found, "\n".join(f"{c['id']}  {c['name']}" for c in found) or "no test cases")


@command(test_cases, "add")
@click.argument("ruleset")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--replace", is_flag=True, help="Replace cases of the same name.")
def test_cases_add(app: App, ruleset: str, file: str, replace: bool) -> None:
    """Add the cases in FILE (a list, ``{test_cases: [...]}`` or one case)."""
    cases = case_bodies(load_document(file))
    ruleset_id = app.client.ruleset_id(ruleset)
    if replace:
        names = {case["name"] for case in cases}
        for existing in app.client.test_cases(ruleset_id):
            if existing["name"] in names:
                app.client.delete_test_case(ruleset_id, existing["id"])
    created = [app.client.create_test_case(ruleset_id, **case) for case in cases]
    app.out(created, f"{len(created)} test case(s) added")


@command(test_cases, "delete")
@click.argument("ruleset")
@click.argument("case_id")
def test_cases_delete(app: App, ruleset: str, case_id: str) -> None:
    app.client.delete_test_case(app.client.ruleset_id(ruleset), case_id)
    app.out({"deleted": case_id}, f"{case_id} deleted")


@command(cli, "test")
@click.argument("ruleset")
@click.option("--version", "version_tag", required=True, help="The version to test.")
def test(app: App, ruleset: str, version_tag: str) -> int:
    """Run RULESET's test cases on a version: exit 1 when any fails."""
    result = app.client.run_test_cases(app.client.ruleset_id(ruleset), version_tag)
    lines = [
        f"{'PASS' if case['passed'] else 'FAIL'}  {case['name']}"
        + ("" if case["passed"] else f"  got {case.get('output')!r}"
           f" expected {case.get('expected_output')!r}{_rule_error(case.get('error'))}")
        for case in result.get("results", [])
    ]  # fmt: skip
    failed = result.get("failed", 0)
    lines.append(f"{result.get('total', 0) - failed}/{result.get('total', 0)} passed")
    app.out(result, "\n".join(lines))
    return SUCCESS if result.get("passed") and not failed else FAILED


def _rule_error(error: Any) -> str:
    """A case's evaluation error (``{rule, message}``) as the end of its FAIL line."""
    if not error:
        return ""
    if isinstance(error, dict):
        where = f" in rule {error['rule']}" if error.get("rule") else ""
        return f"  error{where}: {error.get('message')}"
    return f"  error: {error}"


@command(cli, "backtest")
@click.argument("ruleset")
@click.option("--version", "version_tag", required=True, help="The version to judge (v2).")
@click.option("--against", help="The version to compare with (default: the active one).")
@click.option("--limit", type=click.IntRange(1, 1_000_000), help="At most this many inputs.")
@click.option("--expect", "expect_changes", help="CEL over input: the changes you mean.")
@click.option("--wait", is_flag=True, help="Wait for the result; exit 1 when it fails.")
@click.option("--timeout", type=DURATION, default="30m", show_default=True)
def backtest(
    app: App,
    ruleset: str,
    version_tag: str,
    against: str | None,
    limit: int | None,
    expect_changes: str | None,
    wait: bool,
    timeout: float,
) -> int:
    """Replay recorded production inputs on a version; with --wait, exit 1 when the backtest
    fails or (with --expect) changes an input outside the expected ones."""
    created = app.client.create_backtest(
        app.client.ruleset_id(ruleset),
        version_tag,
        against=against,
        limit=limit,
        expect_changes=expect_changes,
    )
    if not wait:
        app.out(created, f"backtest {created['id']} {created.get('status', 'queued')}")
        return SUCCESS
    deadline = time.monotonic() + timeout
    with app_progress(app, f"backtest {created['id']}") as update:
        while True:
            current = app.client.backtest(created["id"])
            progress = current.get("progress") or {}
            update(progress.get("evaluated", 0), progress.get("total") or 0, current["status"])
            if current["status"] in ("done", "failed"):
                break
            if time.monotonic() >= deadline:
                raise Exit(
                    TIMED_OUT, f"backtest {created['id']} still {current['status']}", current
                )
            time.sleep(app.interval)
    unexpected = (current.get("unexpected") or {}).get("count") or 0
    summary = (
        f"backtest {current['id']} {current['status']}: {current.get('evaluated', 0)} inputs,"
        f" {current.get('disagreed', 0)} changed, {unexpected} unexpected"
    )
    if current["status"] == "failed":
        app.out(current, f"{summary}: {current.get('error')}")
        return FAILED
    app.out(current, summary)
    return FAILED if unexpected else SUCCESS


# --- deployments ---------------------------------------------------------------------------


def _config(value: str | None, plan: str | None) -> dict[str, Any] | None:
    config: dict[str, Any] | None = None
    if value:
        stripped = value.strip()
        document = json.loads(stripped) if stripped.startswith("{") else load_document(value)
        if not isinstance(document, dict):
            raise ValueError("--config: a mapping of canary_config fields")
        config = document
    if plan:
        config = dict(config or {})
        config["steps"] = plan if plan == "guide" else _plan_steps(load_document(plan))
    return config


def _plan_steps(document: Any) -> Any:
    """A plan file's steps: a list of steps, or a mapping with ``steps`` (as in
    ``canary_config``); the server validates the steps themselves."""
    if isinstance(document, dict):
        if set(document) != {"steps"}:
            raise ValueError("--plan: a list of steps, or a mapping with only 'steps'")
        return document["steps"]
    return document


@command(cli, "deploy")
@click.argument("ruleset")
@click.option("--version", "version_tag", required=True)
@click.option("--changelog", default="")
@click.option("--config", help="canary_config: a YAML/JSON file or inline JSON.")
@click.option("--plan", help="Rollout steps: 'guide' or a YAML/JSON file of steps.")
@click.option(
    "--compensation",
    type=click.Choice(["rollback_only", "notify_and_rollback", "manual"]),
    help="compensation_strategy",
)
def deploy(
    app: App,
    ruleset: str,
    version_tag: str,
    changelog: str,
    config: str | None,
    plan: str | None,
    compensation: str | None,
) -> None:
    """Create a draft deployment of a version; prints its id."""
    created = app.client.create_deployment(
        app.client.ruleset_id(ruleset),
        version_tag,
        changelog=changelog,
        canary_config=_config(config, plan),
        compensation_strategy=compensation,
    )
    app.out(created, str(created["deployment_id"]))


def _target_filter(users: tuple[str, ...], workflows: tuple[str, ...]) -> dict[str, Any] | None:
    target: dict[str, Any] = {}
    if users:
        target["user_ids"] = list(users)
    if workflows:
        target["workflow_ids"] = list(workflows)
    return target or None


def _line(deployment: dict[str, Any]) -> str:
    return (
        f"{deployment['deployment_id']}  {deployment['status']}"
        f"  {deployment.get('traffic_percentage', 0)}%"
    )


@command(cli, "start")
@click.argument("deployment_id")
@click.option("--traffic", type=click.IntRange(0, 100), help="canary_pct (default: the config's)")
@click.option("--user", "users", multiple=True, help="Only these users may get v2.")
@click.option("--workflow", "workflows", multiple=True, help="Only these workflows may get v2.")
@click.option("--override-reason", help="Start although preflight is not ready.")
def start(
    app: App,
    deployment_id: str,
    traffic: int | None,
    users: tuple[str, ...],
    workflows: tuple[str, ...],
    override_reason: str | None,
) -> None:
    """Start the canary (its plan's first step when it has one)."""
    started = app.client.start_canary(
        deployment_id,
        canary_pct=traffic,
        target_filter=_target_filter(users, workflows),
        override_reason=override_reason,
    )
    app.out(started, _line(started))


@command(cli, "traffic")
@click.argument("deployment_id")
@click.argument("percentage", type=click.IntRange(0, 100))
@click.option("--reason", help="Needed to raise traffic by more than max_traffic_jump.")
def traffic(app: App, deployment_id: str, percentage: int, reason: str | None) -> None:
    """Set the canary's traffic."""
    changed = app.client.set_traffic(deployment_id, percentage, reason=reason)
    app.out(changed, _line(changed))


@dataclass
class Snapshot:
    deployment: dict[str, Any]
    health: dict[str, Any] | None
    plan: dict[str, Any] | None

    @property
    def status(self) -> str:
        return str(self.deployment["status"])

    def summary(self) -> str:
        d = self.deployment
        parts = [f"status={d['status']}", f"traffic={d.get('traffic_percentage', 0)}%"]
        plan = self.plan or {}
        if plan.get("state") not in (None, "none"):
            steps = plan.get("steps") or []
            index = plan.get("current_step", 0)
            step = steps[index] if isinstance(index, int) and index < len(steps) else None
            label = ",".join(f"{k}={v}" for k, v in step.items()) if isinstance(step, dict) else ""
            parts.append(f"plan={plan['state']} step={min(index + 1, len(steps))}/{len(steps)}")
            if label:
                parts.append(f"({label})")
            if plan.get("waiting_for"):  # why the plan does not advance (a pause, the evidence)
                parts.append(f"waiting={plan['waiting_for']!r}")
        health = self.health or {}
        if health:
            verdict = health.get("recommendation") or (health.get("decision") or {}).get(
                "recommendation"
            )
            if verdict:
                parts.append(f"verdict={verdict}")
            parts.append(f"health={health.get('health_status')}")
            parts.append(f"breaker={health.get('circuit_breaker_state')}")
        if d["status"] == "rolled_back" and d.get("rollback_reason"):
            parts.append(f"reason={d['rollback_reason']!r}")
        return " ".join(parts)


def _optional(read: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
    """A read that may not apply yet (a draft's health) or not exist on this server (404)."""
    try:
        return read()
    except CanaryHTTPError as exc:
        if exc.is_client_error:
            return None
        raise


def snapshot(app: App, deployment_id: str) -> Snapshot:
    deployment = app.client.deployment(deployment_id)
    health = plan = None
    if deployment["status"] == "canary":
        health = _optional(lambda: app.client.health(deployment_id))
        plan = _optional(lambda: app.client.plan(deployment_id))
    return Snapshot(deployment, health, plan)


def _ended(deployment: dict[str, Any]) -> int | None:
    status = deployment["status"]
    if status == "deprecated":  # promoted once, since replaced or retired
        return SUCCESS if deployment.get("promoted_at") else FAILED
    return ENDED.get(status)


@contextmanager
def app_progress(app: App, title: str) -> Iterator[Callable[[float, float, str], None]]:
    """``update(done, total, text)``: a rich bar on a terminal, a plain line per change
    otherwise (a CI log)."""
    if app.interactive:
        columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[text]}"),
                   TimeElapsedColumn())  # fmt: skip
        with Progress(*columns, console=app.err, transient=False) as progress:
            task = progress.add_task(title, total=100, text="")

            def update_bar(done: float, total: float, text: str) -> None:
                progress.update(task, completed=done, total=total or 100, text=text)

            yield update_bar
        return
    last: list[str] = []

    def update_line(done: float, total: float, text: str) -> None:
        if last != [text]:
            stamp = datetime.now(UTC).strftime("%H:%M:%SZ")
            app.say(f"{stamp} {title} {text}")
            last[:] = [text]

    yield update_line


@command(cli, "status")
@click.argument("deployment_id")
@click.option("--watch", is_flag=True, help="Follow it until it ends: 0 promoted, 1 rolled back.")
@click.option("--timeout", type=DURATION, help="With --watch: give up (exit 3) after this.")
@click.option("--interval", type=DURATION, default="2s", show_default=True)
def status(
    app: App, deployment_id: str, watch: bool, timeout: float | None, interval: float
) -> int:
    """A deployment's status; with --watch, follow it (traffic, plan step, verdict, breaker)."""
    current = snapshot(app, deployment_id)
    if not watch:
        app.out(current.deployment, f"{deployment_id} {current.summary()}")
        return SUCCESS
    deadline = None if timeout is None else time.monotonic() + timeout
    with app_progress(app, deployment_id[:8]) as update:
        while True:
            update(current.deployment.get("traffic_percentage") or 0, 100, current.summary())
            code = _ended(current.deployment)
            if code is not None:
                break
            if deadline is not None and time.monotonic() >= deadline:
                raise Exit(TIMED_OUT, f"{deployment_id} still {current.status}", current.deployment)
            time.sleep(
                interval
                if deadline is None
                else max(0.0, min(interval, deadline - time.monotonic()))
            )
            current = snapshot(app, deployment_id)
    app.out(current.deployment, f"{deployment_id} {current.summary()}")
    return code


@command(cli, "promote")
@click.argument("deployment_id")
@click.option("--when-ready", is_flag=True, help="Wait for readiness (and approvals) first.")
@click.option("--timeout", type=DURATION, help="With --when-ready: how long to wait.")
@click.option("--interval", type=DURATION, default="5s", show_default=True)
@click.option("--override-reason", help="Promote although not ready (recorded).")
def promote(
    app: App,
    deployment_id: str,
    when_ready: bool,
    timeout: float | None,
    interval: float,
    override_reason: str | None,
) -> int:
    """Promote the deployment (or record your approval when more are required)."""
    current = app.client.deployment(deployment_id)
    if not when_ready:
        answer = app.client.promote(
            deployment_id, override_reason=override_reason, expected_status=current["status"]
        )
        return _promoted(app, deployment_id, answer)
    deadline = None if timeout is None else time.monotonic() + timeout
    approved = False
    readiness: dict[str, Any] = {}
    with app_progress(app, deployment_id[:8]) as update:
        while True:
            code = _ended(current)
            if code is not None:
                break
            if current["status"] == "canary" and not approved:
                readiness = app.client.readiness(deployment_id)
                checks = readiness.get("checks") or []
                passed = sum(1 for check in checks if check.get("passed"))
                failing = [c["name"] for c in checks if c.get("required") and not c.get("passed")]
                waiting = f"waiting: {', '.join(failing)}"
                update(passed, len(checks) or 1, "ready" if readiness.get("ready") else waiting)
                if readiness.get("ready"):
                    answer = app.client.promote(deployment_id, expected_status="canary")
                    if answer.get("status") == "active":
                        current = answer
                        continue
                    approved = True  # approvals pending: another approver completes it
                    count = f"{answer.get('approvals')}/{answer.get('required_approvals')}"
                    update(passed, len(checks) or 1, f"approved {count}")
            if deadline is not None and time.monotonic() >= deadline:
                if approved:
                    raise Exit(TIMED_OUT, f"{deployment_id}: approvals still pending", current)
                raise Exit(FAILED, f"{deployment_id}: not ready at the timeout", readiness)
            time.sleep(
                interval
                if deadline is None
                else max(0.0, min(interval, deadline - time.monotonic()))
            )
            current = app.client.deployment(deployment_id)
    app.out(current, _line(current))
    return code


def _promoted(app: App, deployment_id: str, answer: dict[str, Any]) -> int:
    if answer.get("status") == "active":
        app.out(answer, _line(answer))
    else:
        app.out(
            answer,
            f"{deployment_id} approval recorded:"
            f" {answer.get('approvals')}/{answer.get('required_approvals')}",
        )
    return SUCCESS


@command(cli, "rollback")
@click.argument("deployment_id")
@click.option("--reason", required=True, help="Why (recorded on the event).")
@click.option("--no-compensation", is_flag=True, help="Only restore v1 (apply_compensation off).")
def rollback(app: App, deployment_id: str, reason: str, no_compensation: bool) -> None:
    """Roll the deployment back: v1 serves everyone again."""
    current = app.client.deployment(deployment_id)
    answer = app.client.rollback(
        deployment_id,
        reason,
        apply_compensation=not no_compensation,
        expected_status=current["status"],
    )
    app.out(answer, _line(answer))


@command(cli, "pause")
@click.argument("deployment_id")
@click.option("--reason", help="Recorded on the event.")
def pause(app: App, deployment_id: str, reason: str | None) -> None:
    """Stop the plan (or auto-progress) from advancing; rollbacks still happen."""
    answer = app.client.pause(deployment_id, reason, expected_status="canary")
    app.out(answer, f"{deployment_id} {_plan_line(answer)}")


@command(cli, "resume")
@click.argument("deployment_id")
def resume(app: App, deployment_id: str) -> None:
    """Let a paused plan run again, or complete its approval step."""
    answer = app.client.resume(deployment_id, expected_status="canary")
    app.out(answer, f"{deployment_id} {_plan_line(answer)}")


def _plan_line(plan: dict[str, Any]) -> str:
    """``plan=paused step=2/4``: pause and resume answer with the plan (``GET .../plan``)."""
    steps = plan.get("steps") or []
    index = plan.get("current_step", 0)
    if not steps:
        return f"plan={plan.get('state')}"
    return f"plan={plan.get('state')} step={min(index + 1, len(steps))}/{len(steps)}"
