"""The command's exit codes and ``--json``, against a scripted server."""

from __future__ import annotations

import json
from typing import Any

from click.testing import CliRunner

from canary_client.cli import cli

D = "/api/v1/deployments/d1"


def run(server: Any, *args: str) -> Any:
    env = {"CANARY_URL": server.url, "CANARY_TOKEN": "t"}
    return CliRunner().invoke(cli, ["--retries", "1", *args], env=env, catch_exceptions=False)


def deployment(status: str, traffic: int = 10, **extra: Any) -> tuple[int, dict]:
    return (200, {"deployment_id": "d1", "status": status, "traffic_percentage": traffic, **extra})


def test_watch_ends_0_on_promotion_with_the_deployment_as_json(server) -> None:
    server.on("GET", D, deployment("canary"), deployment("canary", 50), deployment("active", 100))
    server.on("GET", f"{D}/health", (200, {"health_status": "healthy",
                                           "circuit_breaker_state": "CLOSED"}))  # fmt: skip
    result = run(server, "status", "d1", "--watch", "--interval", "0", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["status"] == "active"
    assert "status=canary traffic=50%" in result.stderr
    assert "breaker=CLOSED" in result.stderr


def test_watch_shows_the_plan_step_and_why_it_waits(server) -> None:
    server.on("GET", D, deployment("canary"), deployment("active", 100))
    server.on("GET", f"{D}/plan", (200, {"state": "running", "current_step": 1,
              "steps": [{"traffic": 10}, {"pause_minutes": 30}, {"promote": True}],
              "waiting_for": "pausing until 2026-01-01T10:30:00+00:00"}))  # fmt: skip
    result = run(server, "status", "d1", "--watch", "--interval", "0", "--json")
    assert result.exit_code == 0, result.output
    assert "plan=running step=2/3 (pause_minutes=30)" in result.stderr
    assert "waiting='pausing until 2026-01-01T10:30:00+00:00'" in result.stderr


def test_watch_ends_1_on_rollback_and_3_at_the_timeout(server) -> None:
    server.on("GET", D, deployment("rolled_back", 0, rollback_reason="breaker"))
    assert run(server, "status", "d1", "--watch").exit_code == 1
    server.on("GET", D, deployment("canary"))
    timed_out = run(server, "status", "d1", "--watch", "--timeout", "0.3s", "--interval", "0.1")
    assert timed_out.exit_code == 3


def test_a_4xx_is_2_and_names_the_field(server) -> None:
    server.on("GET", "/api/v1/rulesets", (200, {"results": [{"id": "r1", "name": "rs"}]}))
    server.on(
        "POST",
        "/api/v1/deployments",
        (400, {"detail": "Invalid.", "code": "invalid", "canary_config": ["Unknown key."]}),
    )
    result = run(server, "deploy", "rs", "--version", "v2", "--config", '{"x": 1}', "--json")
    assert result.exit_code == 2
    assert "canary_config" in result.stderr
    assert json.loads(result.stdout)["error"]["canary_config"] == ["Unknown key."]


def test_bad_usage_is_2(server) -> None:
    assert run(server, "status", "d1", "--timeout", "soon").exit_code == 2
    assert run(server, "rollback", "d1").exit_code == 2  # --reason is required


def test_a_server_that_keeps_failing_is_4(server) -> None:
    server.on("GET", D, (503, {"detail": "down"}))
    assert run(server, "status", "d1").exit_code == 4


def test_failing_test_cases_are_1(server) -> None:
    server.on("GET", "/api/v1/rulesets", (200, {"results": [{"id": "r1", "name": "rs"}]}))
    server.on(
        "POST",
        "/api/v1/rulesets/r1/test-cases/run",
        (200, {"version": "v2", "passed": False, "total": 2, "failed": 1, "results": [
            {"case_id": "c1", "name": "hot", "passed": True, "output": 1, "expected_output": 1},
            {"case_id": "c2", "name": "cold", "passed": False, "output": 2, "expected_output": 3},
        ]}),
    )  # fmt: skip
    result = run(server, "test", "rs", "--version", "v2")
    assert result.exit_code == 1
    assert "FAIL  cold" in result.stdout and "1/2 passed" in result.stdout
    assert server.calls("POST", "/api/v1/rulesets/r1/test-cases/run") == [{"version": "v2"}]


def test_backtest_wait_is_1_on_unexpected_changes(server) -> None:
    server.on("GET", "/api/v1/rulesets", (200, {"results": [{"id": "r1", "name": "rs"}]}))
    server.on("POST", "/api/v1/rulesets/r1/backtests", (202, {"id": "b1", "status": "queued"}))
    done = {"id": "b1", "status": "done", "evaluated": 10, "disagreed": 2,
            "progress": {"evaluated": 10, "total": 10}, "unexpected": {"count": 1}}  # fmt: skip
    server.on("GET", "/api/v1/backtests/b1", (200, {**done, "status": "running"}), (200, done))
    result = run(server, "backtest", "rs", "--version", "v2", "--expect", "input.t > 25", "--wait")
    assert result.exit_code == 1, result.output
    sent = server.calls("POST", "/api/v1/rulesets/r1/backtests")
    assert sent == [{"version": "v2", "expect_changes": "input.t > 25"}]


def plan(state: str, current_step: int = 1) -> tuple[int, dict]:
    steps = [{"traffic": 10}, {"pause": "approval"}, {"promote": True}]
    return (200, {"deployment_id": "d1", "state": state, "steps": steps,
                  "current_step": current_step})  # fmt: skip


def test_pause_and_resume_send_the_guard_and_answer_with_the_plan(server) -> None:
    server.on("POST", f"{D}/pause", plan("paused"))
    server.on("POST", f"{D}/resume", plan("waiting_approval"))
    paused = run(server, "pause", "d1", "--reason", "night")
    assert paused.exit_code == 0 and "plan=paused step=2/3" in paused.stdout
    resumed = run(server, "resume", "d1", "--json")
    assert resumed.exit_code == 0 and json.loads(resumed.stdout)["state"] == "waiting_approval"
    assert server.calls("POST", f"{D}/pause") == [{"reason": "night", "expected_status": "canary"}]
    assert server.calls("POST", f"{D}/resume") == [{"expected_status": "canary"}]


def test_promote_when_ready_times_out_not_ready_as_1(server) -> None:
    server.on("GET", D, deployment("canary"))
    server.on("GET", f"{D}/readiness", (200, {"ready": False, "checks": [
        {"name": "time_at_traffic", "passed": False, "required": True}]}))  # fmt: skip
    result = run(server, "promote", "d1", "--when-ready", "--timeout", "0.2", "--interval", "0.1")
    assert result.exit_code == 1
    assert "not ready" in result.stderr
    assert server.calls("POST", f"{D}/promote") == []


def test_a_plan_in_the_wrong_state_is_2(server) -> None:
    server.on("POST", f"{D}/resume", (409, {"detail": "The plan is running.", "code": "plan_state",
                                            "plan_state": "running"}))  # fmt: skip
    refused = run(server, "resume", "d1")
    assert refused.exit_code == 2 and "plan_state" in refused.stderr


def test_a_plan_file_is_a_list_of_steps_or_a_mapping_with_steps(server, tmp_path) -> None:
    server.on("GET", "/api/v1/rulesets", (200, {"results": [{"id": "r1", "name": "rs"}]}))
    server.on("POST", "/api/v1/deployments", (201, {"deployment_id": "d1", "status": "draft"}))
    steps = [{"traffic": 10}, {"promote": True}]
    (tmp_path / "list.yaml").write_text("- traffic: 10\n- promote: true\n")
    (tmp_path / "mapping.json").write_text(json.dumps({"steps": steps}))
    (tmp_path / "other.json").write_text(json.dumps({"steps": steps, "auto_progress": True}))
    for name in ("list.yaml", "mapping.json"):
        assert (
            run(server, "deploy", "rs", "--version", "v2", "--plan", str(tmp_path / name)).exit_code
            == 0
        )
    sent = server.calls("POST", "/api/v1/deployments")
    assert [body["canary_config"] for body in sent] == [{"steps": steps}] * 2
    assert (
        run(
            server, "deploy", "rs", "--version", "v2", "--plan", str(tmp_path / "other.json")
        ).exit_code
        == 2
    )
