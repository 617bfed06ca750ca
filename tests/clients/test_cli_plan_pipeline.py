"""The ``canary`` command's pre-release and plan commands as a pipeline runs them, against
the production server (granian), a Celery worker and beat, PostgreSQL and Redis: test
cases from files and ``canary test`` (0 all pass, 1 a failing case), ``canary backtest
--wait --expect`` run by the worker over captured inputs (0 nothing unexpected, 1 an
unexpected change), and a canary started on a plan, paused and resumed with ``canary
pause|resume`` (2 on the server's 409) and followed by ``status --watch`` to promotion.

One server and one worker for the whole pipeline: each step builds on the one before."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.utils import timezone

from canary_client import Client
from deployments.models import Deployment
from monitoring.models import CapturedInput
from tests.accounts import create_user
from tests.clients.test_cli_pipeline import V1_YAML, as_json, canary, watch
from tests.monitoring.logs import add_logs
from tests.monitoring.test_scheduler_e2e import celery_processes
from tests.samples import DEFAULT_OUTPUT, V2_RULES
from tests.servers import granian


def case(name: str, temperature: int, zone: str, alert: str) -> dict[str, Any]:
    input_ = {"temperature": temperature, "zone": zone}
    return {"name": name, "input": input_, "expected_output": {"alert": alert}}


CASES = [
    case("hot", 30, "C", "raise"),
    case("zone A", 20, "A", "watch"),
    case("mild", 20, "C", "none"),
]
# v2 moved "hot" from 25 to 27: 26 no longer raises, so this case fails on v2.
FAILING_CASE = case("warm raises", 26, "C", "raise")
# Recorded production inputs: v2 changes the 26 (hot moved) and the zone A one (new rule).
CAPTURED = [
    {"temperature": 26, "zone": "C"},
    {"temperature": 20, "zone": "A"},
    {"temperature": 30, "zone": "C"},
    {"temperature": 10, "zone": "C"},
]
MEANT = "(input.temperature > 25 && input.temperature <= 27) || input.zone in ['A', 'B']"
ONLY_HOT = "input.temperature > 25 && input.temperature <= 27"
# An approval step between two traffic steps: the plan waits for ``canary resume``.
PLAN = {"steps": [{"traffic": 10}, {"pause": "approval"}, {"traffic": 30}, {"promote": True}]}


class Following:
    """A ``status --watch --json`` whose progress lines (stderr) are read as they come, so
    the test can wait until the watcher has shown a state before changing it."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.process = process
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)

    def shown(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def finish(self, timeout: float) -> tuple[int, Any, str]:
        assert self.process.stdout is not None
        stdout = self.process.stdout.read()
        self.process.wait(timeout=timeout)
        self._reader.join(timeout=10)
        return self.process.returncode, json.loads(stdout), "".join(self.lines)


def wait_for(check: Callable[[], Any], seconds: float, logs: Path) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.25)
    text = "\n".join(p.read_text() for p in logs.glob("*.log"))
    raise AssertionError(f"not reached within {seconds} s\n{text[-5000:]}")


@pytest.mark.django_db(transaction=True)
def test_a_pipeline_tests_backtests_and_follows_a_plan(roles: None, tmp_path: Path) -> None:
    (tmp_path / "v1.yaml").write_text(V1_YAML)
    (tmp_path / "v2.json").write_text(
        json.dumps({"version": "v2.0.0", "rules": V2_RULES, "default": DEFAULT_OUTPUT})
    )
    (tmp_path / "cases.yaml").write_text(yaml.safe_dump({"test_cases": CASES}))
    (tmp_path / "failing.json").write_text(json.dumps([FAILING_CASE]))
    (tmp_path / "plan.yaml").write_text(yaml.safe_dump(PLAN))
    token = create_user("pipeline", "approver")
    with granian(workers=1) as server, celery_processes(tmp_path):
        env = {**os.environ, "CANARY_URL": server.base, "CANARY_TOKEN": token}
        ruleset_id = as_json(canary(env, "rulesets", "create", "thermostat", "--json"))["id"]
        for file in ("v1.yaml", "v2.json"):
            assert (
                canary(env, "versions", "create", "thermostat", str(tmp_path / file)).returncode
                == 0
            )
        first = as_json(canary(env, "deploy", "thermostat", "--version", "v1.0.0", "--json"))
        assert canary(env, "promote", first["deployment_id"]).returncode == 0

        # Test cases from a YAML file; all pass on v2: 0.
        added = as_json(canary(env, "test-cases", "add", "thermostat", str(tmp_path / "cases.yaml"),
                               "--json"))  # fmt: skip
        assert sorted(case["name"] for case in added) == sorted(case["name"] for case in CASES)
        # A rerun of the pipeline: --replace swaps same-named cases; without it, refused (2).
        cases_file = str(tmp_path / "cases.yaml")
        assert (
            canary(env, "test-cases", "add", "thermostat", cases_file, "--replace").returncode == 0
        )
        duplicate = canary(env, "test-cases", "add", "thermostat", cases_file)
        assert duplicate.returncode == 2 and "name" in duplicate.stderr
        listed = as_json(canary(env, "test-cases", "list", "thermostat", "--json"))
        assert sorted(case["name"] for case in listed) == sorted(case["name"] for case in CASES)
        passing = as_json(canary(env, "test", "thermostat", "--version", "v2.0.0", "--json"))
        assert (passing["passed"], passing["total"], passing["failed"]) == (True, 3, 0)
        # A case v2 fails (from a JSON file): 1, the failure in the parsed report.
        assert (
            canary(
                env, "test-cases", "add", "thermostat", str(tmp_path / "failing.json")
            ).returncode
            == 0
        )
        failing = canary(env, "test", "thermostat", "--version", "v2.0.0", "--json")
        assert failing.returncode == 1, failing.stderr
        report = json.loads(failing.stdout)
        assert (report["passed"], report["total"], report["failed"]) == (False, 4, 1)
        [failed] = [case for case in report["results"] if not case["passed"]]
        assert (failed["name"], failed["output"]) == ("warm raises", {"alert": "none"})
        plain = canary(env, "test", "thermostat", "--version", "v2.0.0")
        assert plain.returncode == 1 and "FAIL  warm raises" in plain.stdout
        # Removing it (by id, as listed) makes the run pass again.
        case_id = str(failed["case_id"])
        assert canary(env, "test-cases", "delete", "thermostat", case_id).returncode == 0
        assert canary(env, "test", "thermostat", "--version", "v2.0.0").returncode == 0

        # Backtests in the worker over recorded production inputs.
        now = timezone.now()
        CapturedInput.objects.bulk_create(
            CapturedInput(
                ruleset_id=ruleset_id, input=document, created_at=now - timedelta(seconds=n)
            )
            for n, document in enumerate(CAPTURED, start=1)
        )
        meant = canary(env, "backtest", "thermostat", "--version", "v2.0.0", "--expect", MEANT,
                       "--wait", "--json", timeout=120)  # fmt: skip
        assert meant.returncode == 0, meant.stderr
        done = json.loads(meant.stdout)
        assert (done["status"], done["against"], done["evaluated"]) == ("done", "v1.0.0", 4)
        assert (done["disagreed"], done["unexpected"]["count"]) == (2, 0)
        narrow = canary(env, "backtest", "thermostat", "--version", "v2.0.0", "--expect", ONLY_HOT,
                        "--wait", timeout=120)  # fmt: skip
        assert narrow.returncode == 1, narrow.stderr
        assert "2 changed, 1 unexpected" in narrow.stdout
        # A condition the server refuses: 2, the field named.
        refused = canary(env, "backtest", "thermostat", "--version", "v2.0.0", "--expect", "1 +")
        assert refused.returncode == 2 and "expect_changes" in refused.stderr

        # A canary on a plan: its first traffic step at the start.
        v2 = as_json(canary(env, "deploy", "thermostat", "--version", "v2.0.0", "--plan",
                            str(tmp_path / "plan.yaml"), "--json"))["deployment_id"]  # fmt: skip
        started = as_json(canary(env, "start", v2, "--json"))
        assert (started["status"], started["traffic_percentage"]) == ("canary", 10)
        # Healthy, paired evidence enough for the decision to raise traffic and promote.
        canary_row = Deployment.objects.get(pk=v2)
        add_logs(canary_row, "v2", [1.0] * 1_500, at=timezone.now(), paired=True)
        add_logs(canary_row, "v1", [1.0] * 3_000, at=timezone.now(), paired=True)
        watcher = Following(watch(env, v2, "--timeout", "120s"))
        waiting = "plan=waiting_approval step=2/4 (pause=approval)"
        wait_for(lambda: watcher.shown(waiting), 60, tmp_path)
        paused = as_json(canary(env, "pause", v2, "--reason", "change freeze", "--json"))
        assert (paused["state"], paused["current_step"]) == ("paused", 1)
        with Client(server.base, token) as client:
            assert client.plan(v2)["state"] == "paused"
        again = canary(env, "pause", v2)  # already paused: the server's 409
        assert again.returncode == 2 and "plan_state" in again.stderr
        wait_for(lambda: watcher.shown("plan=paused step=2/4"), 30, tmp_path)
        # Resuming a pause taken at the approval step returns to waiting for it...
        assert as_json(canary(env, "resume", v2, "--json"))["state"] == "waiting_approval"
        # ...and resuming that approves the step: the plan runs on to its promote step.
        approved = as_json(canary(env, "resume", v2, "--json"))
        assert (approved["state"], approved["current_step"]) == ("running", 2)
        code, document, progress = watcher.finish(timeout=150)
        assert code == 0, progress
        assert (document["deployment_id"], document["status"]) == (v2, "active")
        assert "status=active" in progress.splitlines()[-1]
        # The plan ended with the canary: resuming it now is refused (409): 2.
        ended = canary(env, "resume", v2)
        assert ended.returncode == 2
