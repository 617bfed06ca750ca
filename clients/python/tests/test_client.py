"""The client: errors carry the answer, reads and guarded lifecycle calls are retried."""

from __future__ import annotations

import socket

import pytest

from canary_client import CanaryHTTPError, CanaryUnreachable, Client, RetryPolicy
from canary_client.durations import parse_duration
from canary_client.files import case_bodies, load_document, version_body

FAST = RetryPolicy(attempts=3, backoff_seconds=0.01, max_backoff_seconds=0.02)
DEPLOYMENT = "/api/v1/deployments/d1"


def test_errors_carry_code_detail_and_fields(server) -> None:
    server.on(
        "POST",
        "/api/v1/rulesets/r1/versions",
        (400, {"detail": "Invalid rules.", "code": "invalid", "rules": ["rule 'a': syntax"]}),
    )
    with (
        Client(server.url, "t0ken", retry=FAST) as client,
        pytest.raises(CanaryHTTPError) as raised,
    ):
        client.create_version("r1", "v2.0.0", [{"name": "a"}])
    error = raised.value
    assert (error.status_code, error.code, error.detail) == (400, "invalid", "Invalid rules.")
    assert error.fields == {"rules": ["rule 'a': syntax"]}
    assert error.is_client_error
    assert len(server.calls("POST", "/api/v1/rulesets/r1/versions")) == 1  # a write: once
    headers = server.seen[0][3]
    assert headers["Authorization"] == "Bearer t0ken"


def test_reads_retry_429_and_503_honouring_retry_after(server) -> None:
    server.on(
        "GET",
        DEPLOYMENT,
        (429, {"detail": "slow down", "code": "throttled"}, {"Retry-After": "0"}),
        (503, {"detail": "busy"}),
        (200, {"deployment_id": "d1", "status": "canary"}),
    )
    with Client(server.url, retry=FAST) as client:
        assert client.deployment("d1")["status"] == "canary"
    assert len(server.calls("GET", DEPLOYMENT)) == 3


def test_retries_end_with_the_last_answer(server) -> None:
    server.on("GET", DEPLOYMENT, (503, {"detail": "busy", "code": "unavailable"}))
    with Client(server.url, retry=FAST) as client, pytest.raises(CanaryHTTPError) as raised:
        client.deployment("d1")
    assert raised.value.status_code == 503
    assert len(server.calls("GET", DEPLOYMENT)) == 3


def test_lifecycle_calls_retry_only_with_expected_status(server) -> None:
    server.on("POST", f"{DEPLOYMENT}/promote", (503, {"detail": "busy"}))
    with Client(server.url, retry=FAST) as client:
        with pytest.raises(CanaryHTTPError):
            client.promote("d1")
        assert len(server.calls("POST", f"{DEPLOYMENT}/promote")) == 1
        with pytest.raises(CanaryHTTPError):
            client.promote("d1", expected_status="canary")
    sent = server.calls("POST", f"{DEPLOYMENT}/promote")
    assert len(sent) == 4 and sent[-1] == {"expected_status": "canary"}


def test_a_retry_that_finds_the_call_landed_returns_the_deployment(server) -> None:
    # The first attempt promoted, its answer was lost (503 from a proxy); the retry's
    # 409 is recognised by reading the deployment back.
    server.on(
        "POST",
        f"{DEPLOYMENT}/promote",
        (503, {"detail": "gateway"}),
        (409, {"detail": "Deployment is active.", "code": "conflict", "status": "active"}),
    )
    server.on("GET", DEPLOYMENT, (200, {"deployment_id": "d1", "status": "active"}))
    with Client(server.url, retry=FAST) as client:
        assert client.promote("d1", expected_status="canary")["status"] == "active"


def test_a_retried_pause_that_landed_returns_the_plan(server) -> None:
    server.on(
        "POST",
        f"{DEPLOYMENT}/pause",
        (503, {"detail": "gateway"}),
        (409, {"detail": "The plan is paused.", "code": "plan_state", "plan_state": "paused"}),
    )
    server.on("GET", f"{DEPLOYMENT}/plan", (200, {"state": "paused", "current_step": 1}))
    with Client(server.url, retry=FAST) as client:
        assert client.pause("d1", expected_status="canary")["state"] == "paused"
        # Without a retry, the 409 is the answer.
        server.on("POST", f"{DEPLOYMENT}/pause", (409, {"detail": "x", "code": "plan_state"}))
        with pytest.raises(CanaryHTTPError):
            client.pause("d1", expected_status="canary")


def test_connection_errors_are_retried_then_unreachable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = Client(f"http://127.0.0.1:{port}", retry=FAST)
    with client, pytest.raises(CanaryUnreachable):
        client.deployment("d1")


def test_pages_are_followed(server) -> None:
    server.on(
        "GET",
        "/api/v1/rulesets",
        (200, {"results": [{"id": "a", "name": "one"}], "next": "page=2"}),
        (200, {"results": [{"id": "b", "name": "two"}], "next": None}),
    )
    with Client(server.url, retry=FAST) as client:
        assert client.ruleset_id("two") == "b"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("30m", 1800), ("2h", 7200), ("1h30m", 5400), ("1.5", 1.5)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "2x", "m", "-3", "1h 2m", "s30"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_versions_and_cases_from_yaml_and_json(tmp_path) -> None:
    yaml_file = tmp_path / "v2.yaml"
    yaml_file.write_text(
        "version: v2.0.0\nrules:\n  - name: hot\n    condition: input.t > 27\n"
        "    output: {alert: raise}\ndefault: {alert: none}\n"
    )
    body = version_body(load_document(yaml_file))
    assert body["rules"][0]["condition"] == "input.t > 27"
    assert version_body(load_document(yaml_file), version="v2.0.1")["version"] == "v2.0.1"
    json_file = tmp_path / "cases.json"
    json_file.write_text('[{"name": "hot", "input": {"t": 30}, "expected_output": {"a": 1}}]')
    assert case_bodies(load_document(json_file))[0]["name"] == "hot"
    broken = tmp_path / "broken.json"
    broken.write_text("{nope")
    with pytest.raises(ValueError, match=r"broken\.json"):
        load_document(broken)
    with pytest.raises(ValueError, match="unknown fields"):
        version_body({"version": "1", "rules": [], "extra": 1})
    with pytest.raises(ValueError, match="needs name"):
        case_bodies([{"name": "x"}])


def test_a_first_attempt_s_409_is_the_answer(server) -> None:
    server.on("POST", f"{DEPLOYMENT}/start-canary", (409, {"detail": "Deployment is canary."}))
    server.on("GET", DEPLOYMENT, (200, {"deployment_id": "d1", "status": "canary"}))
    with Client(server.url, retry=FAST) as client, pytest.raises(CanaryHTTPError) as raised:
        client.start_canary("d1")
    assert raised.value.status_code == 409
