"""The ``canary`` command as a pipeline runs it, against the production server (granian),
a Celery worker and beat, PostgreSQL and Redis: rule sets and versions from files, a
canary started, ``status --watch`` ending 0 on promotion, 1 on a rollback (the breaker's,
as real executions open it), 3 at ``--timeout``, 4 once the server is gone; ``--json``
parsed as a script would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from canary_client import Client
from tests.accounts import create_user
from tests.monitoring.test_scheduler_e2e import celery_processes
from tests.samples import DEFAULT_OUTPUT, V2_RULES
from tests.servers import granian

CANARY = str(Path(sys.executable).with_name("canary"))
FAILING_INPUT = {"temperature": 30, "zone": "C"}

# v3 reads a field no request has: every evaluation fails, where v2 answers.
V3_YAML = """\
version: v3.0.0
rules:
  - name: broken
    condition: input.humidity > 50
    output: {alert: damp}
default: {alert: none}
"""
V1_YAML = """\
version: v1.0.0
changelog: first release
rules:
  - name: hot
    condition: input.temperature > 25
    output: {alert: raise}
default: {alert: none}
"""


def client_version(base: str, token: str, ruleset_id: str) -> str:
    with Client(base, token) as client:
        return str(client.resolve(ruleset_id, user_id="after")["version"])


def canary(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CANARY, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def as_json(run: subprocess.CompletedProcess) -> Any:
    assert run.returncode == 0, (run.returncode, run.stdout, run.stderr)
    return json.loads(run.stdout)


def watch(env: dict[str, str], deployment_id: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [CANARY, "status", deployment_id, "--watch", "--interval", "0.3", "--json", *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen, timeout: float = 60) -> tuple[int, Any, str]:
    stdout, stderr = process.communicate(timeout=timeout)
    return process.returncode, json.loads(stdout) if stdout.strip() else None, stderr


@pytest.mark.django_db(transaction=True)
def test_a_pipeline_releases_with_the_canary_command(roles: None, tmp_path: Path) -> None:
    (tmp_path / "v1.yaml").write_text(V1_YAML)
    (tmp_path / "v2.json").write_text(
        json.dumps({"version": "v2.0.0", "rules": V2_RULES, "default": DEFAULT_OUTPUT})
    )
    (tmp_path / "broken.yaml").write_text(
        "version: v9.0.0\nrules:\n  - name: x\n    condition: 1 +\n"
    )
    (tmp_path / "v3.yaml").write_text(V3_YAML)
    token = create_user("pipeline", "approver")
    with granian(workers=1) as server, celery_processes(tmp_path):
        env = {**os.environ, "CANARY_URL": server.base, "CANARY_TOKEN": token}
        ruleset = as_json(canary(env, "rulesets", "create", "thermostat", "--json"))
        again = as_json(canary(env, "rulesets", "create", "thermostat", "--if-missing", "--json"))
        assert again["id"] == ruleset["id"]
        created = as_json(canary(env, "versions", "create", "thermostat", str(tmp_path / "v1.yaml"),
                                 "--json"))  # fmt: skip
        assert created["version"] == "v1.0.0"
        assert (
            canary(env, "versions", "create", ruleset["id"], str(tmp_path / "v2.json")).returncode
            == 0
        )
        assert canary(env, "versions", "create", "thermostat", str(tmp_path / "v2.json"),
                      "--if-missing").returncode == 0  # fmt: skip
        # A version the server refuses: exit 2, the field named.
        refused = canary(env, "versions", "create", "thermostat", str(tmp_path / "broken.yaml"))
        assert refused.returncode == 2 and "rules" in refused.stderr
        listed = as_json(canary(env, "versions", "list", "thermostat", "--json"))
        assert {v["version"] for v in listed} == {"v1.0.0", "v2.0.0"}

        # The first release is promoted directly.
        first = as_json(canary(env, "deploy", "thermostat", "--version", "v1.0.0", "--json"))
        assert (
            as_json(canary(env, "promote", first["deployment_id"], "--json"))["status"] == "active"
        )

        # A canary, followed to its promotion.
        second = canary(env, "deploy", "thermostat", "--version", "v2.0.0")
        assert second.returncode == 0
        v2 = second.stdout.strip()
        started = as_json(canary(env, "start", v2, "--traffic", "20", "--json"))
        assert (started["status"], started["traffic_percentage"]) == ("canary", 20)
        watcher = watch(env, v2)
        time.sleep(1.5)
        assert watcher.poll() is None  # still watching a running canary
        assert canary(env, "traffic", v2, "40").returncode == 0
        promoted = canary(env, "promote", v2)
        assert promoted.returncode == 0, promoted.stderr
        code, document, progress = finish(watcher)
        assert code == 0, progress
        assert document["deployment_id"] == v2 and document["status"] == "active"
        assert "status=canary traffic=20%" in progress  # plain lines: not a terminal
        assert "breaker=CLOSED" in progress

        # The next canary: --timeout while it runs is 3.
        v3_file = str(tmp_path / "v3.yaml")
        assert canary(env, "versions", "create", "thermostat", v3_file).returncode == 0
        third = as_json(
            canary(env, "deploy", "thermostat", "--version", "v3.0.0", "--config",
                   '{"failure_threshold": 3, "auto_rollback": true}', "--json")
        )["deployment_id"]  # fmt: skip
        assert canary(env, "start", third, "--traffic", "100").returncode == 0
        timed_out = canary(env, "status", third, "--watch", "--timeout", "2s", "--json")
        assert timed_out.returncode == 3
        assert json.loads(timed_out.stdout)["status"] == "canary"
        # Not ready (an hour at traffic is the default readiness): at the timeout, 1.
        waiting = canary(env, "promote", third, "--when-ready", "--timeout", "2s",
                         "--interval", "0.5", "--json")  # fmt: skip
        assert waiting.returncode == 1 and "not ready" in waiting.stderr
        checks = {check["name"] for check in json.loads(waiting.stdout)["checks"]}
        assert "time_at_traffic" in checks
        # Starting it twice is refused by the server: 2.
        assert canary(env, "start", third).returncode == 2

        # Real executions fail on the canary's version: the breaker opens and rolls it
        # back; the watching pipeline fails with 1.
        watcher = watch(env, third, "--timeout", "60s")
        with Client(server.base, token) as client:
            ruleset_id = ruleset["id"]
            n = 0
            while watcher.poll() is None and n < 400:
                client.execute(ruleset_id, FAILING_INPUT, user_id=f"u{n}")
                n += 1
                time.sleep(0.02)
        code, document, progress = finish(watcher)
        assert code == 1, progress
        assert document["status"] == "rolled_back"
        assert canary(env, "status", third, "--watch").returncode == 1  # at once, ended
        # rollback of what already ended: refused, 2
        assert canary(env, "rollback", third, "--reason", "again").returncode == 2
        manual = canary(env, "rollback", v2, "--reason", "pipeline says so", "--json")
        assert as_json(manual)["status"] == "rolled_back"
        # Rolling back the active v2 makes its baseline, v1, active again.
        assert client_version(server.base, token, ruleset["id"]) == "v1.0.0"
    # The server is gone: 4.
    gone = canary(env, "--retries", "1", "status", v2, "--json")
    assert gone.returncode == 4
    assert "cannot reach" in gone.stderr
