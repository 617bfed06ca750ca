"""Triggers (SPEC 10.4): a secret URL an alerting tool POSTs to, to roll a canary back."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from django.test import override_settings
from knox.crypto import hash_token
from rest_framework.test import APIClient

from deployments import services
from deployments.models import Deployment, DeploymentEvent
from monitoring.models import Trigger
from tests.servers import free_port, gunicorn

ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")


def create(client: APIClient, ruleset: Any, **body: Any) -> Any:
    body = {"name": "error-budget", "ruleset_id": str(ruleset), "action": "rollback", **body}
    return client.post("/api/v1/triggers", body, format="json")


def path_of(url: str) -> str:
    return "/api/v1/" + url.split("/api/v1/", 1)[1]


@pytest.mark.django_db
def test_create_shows_the_url_once_and_keeps_only_a_digest(
    admin_api: APIClient, canary_v2: Deployment
) -> None:
    created = create(admin_api, canary_v2.ruleset_id)
    assert created.status_code == 201, created.content
    body = created.json()
    assert set(body) == {"id", "name", "ruleset_id", "action", "url", "created_at", "last_fired_at"}
    secret = body["url"].rstrip("/").rsplit("/", 1)[1]
    stored = Trigger.objects.get(pk=body["id"])
    assert stored.secret_digest == hash_token(secret)
    assert secret not in json.dumps(admin_api.get("/api/v1/triggers").json())


@pytest.mark.django_db
def test_only_admins_manage_triggers(approver: APIClient, canary_v2: Deployment) -> None:
    assert create(approver, canary_v2.ruleset_id).status_code == 403
    assert approver.get("/api/v1/triggers").status_code == 403


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"action": "explode"}, "action"),
        ({"name": ""}, "name"),
        ({"ruleset_id": "x"}, "ruleset_id"),
    ],
)
def test_bad_input_names_the_field(
    admin_api: APIClient, canary_v2: Deployment, body: dict, field: str
) -> None:
    answer = create(admin_api, canary_v2.ruleset_id, **body)
    assert answer.status_code == 400
    assert field in answer.json()


@pytest.mark.django_db
def test_posting_the_url_rolls_the_canary_back_as_the_trigger(
    admin_api: APIClient, canary_v2: Deployment
) -> None:
    url = create(admin_api, canary_v2.ruleset_id).json()["url"]
    anonymous = APIClient()
    fired = anonymous.post(path_of(url), {"reason": "p99 over budget"}, format="json")
    assert fired.status_code == 202, fired.content
    assert fired.json() == {"acted": True, "deployment_id": str(canary_v2.pk), "action": "rollback"}
    rolled = Deployment.objects.get(pk=canary_v2.pk)
    assert rolled.status == "rolled_back"
    assert rolled.rollback_reason == "p99 over budget"
    event = DeploymentEvent.objects.get(deployment=canary_v2, action="rollback")
    assert event.actor == "system:trigger:error-budget"
    again = anonymous.post(path_of(url), data="not json", content_type="text/plain")
    assert again.status_code == 200
    assert again.json()["acted"] is False
    assert "No canary" in again.json()["detail"]


@pytest.mark.django_db
def test_the_reason_defaults_to_the_trigger_name(
    admin_api: APIClient, canary_v2: Deployment
) -> None:
    url = create(admin_api, canary_v2.ruleset_id, name="grafana-alert").json()["url"]
    grafana = {"receiver": "canary", "status": "firing", "alerts": [{"status": "firing"}]}
    assert APIClient().post(path_of(url), grafana, format="json").status_code == 202
    assert Deployment.objects.get(pk=canary_v2.pk).rollback_reason == "grafana-alert"


@pytest.mark.django_db
def test_a_resolved_alert_acts_on_nothing(admin_api: APIClient, canary_v2: Deployment) -> None:
    url = create(admin_api, canary_v2.ruleset_id).json()["url"]
    resolved = APIClient().post(path_of(url), {"status": "resolved", "alerts": []}, format="json")
    assert resolved.status_code == 200
    assert resolved.json()["acted"] is False
    assert Deployment.objects.get(pk=canary_v2.pk).status == "canary"


@pytest.mark.django_db
def test_a_wrong_or_revoked_url_is_a_404(admin_api: APIClient, canary_v2: Deployment) -> None:
    created = create(admin_api, canary_v2.ruleset_id).json()
    path = path_of(created["url"])
    anonymous = APIClient()
    wrong_secret = path.rsplit("/", 1)[0] + "/" + "A" * 43
    assert anonymous.post(wrong_secret).status_code == 404
    other_id = path.replace(created["id"], "00000000-0000-0000-0000-000000000000")
    assert anonymous.post(other_id).status_code == 404
    assert anonymous.post(path.replace(created["id"], "not-a-uuid")).status_code == 404
    assert admin_api.delete(f"/api/v1/triggers/{created['id']}").status_code == 204
    assert anonymous.post(path).status_code == 404
    assert Deployment.objects.get(pk=canary_v2.pk).status == "canary"


@pytest.mark.django_db
@override_settings(CANARY_TRIGGER_RATE_PER_MINUTE=3)
def test_the_rate_limit_holds_per_trigger(admin_api: APIClient, canary_v2: Deployment) -> None:
    busy = path_of(create(admin_api, canary_v2.ruleset_id, name="busy").json()["url"])
    quiet = path_of(create(admin_api, canary_v2.ruleset_id, name="quiet").json()["url"])
    anonymous = APIClient()
    answers = [
        anonymous.post(busy, {"status": "resolved"}, format="json").status_code for _ in range(5)
    ]
    # NOTE: a minute's window can turn between calls; then the count restarts.
    assert answers[0] == 200
    assert 429 in answers
    assert anonymous.post(quiet, {"status": "resolved"}, format="json").status_code == 200


@pytest.mark.django_db
def test_a_pause_trigger_goes_through_the_pause_service(
    admin_api: APIClient, canary_v2: Deployment
) -> None:
    url = create(admin_api, canary_v2.ruleset_id, action="pause").json()["url"]
    answer = APIClient().post(path_of(url), {"reason": "error budget burn"}, format="json")

    assert answer.status_code == 202
    assert answer.json() == {
        "acted": True,
        "deployment_id": str(canary_v2.pk),
        "action": "pause",
    }
    assert Deployment.objects.get(pk=canary_v2.pk).status == "canary"
    assert admin_api.get(f"/api/v1/deployments/{canary_v2.pk}/plan").json()["state"] == "paused"
    event = canary_v2.events.get(action="pause")
    assert (event.actor, event.payload.get("reason")) == (
        "system:trigger:error-budget",
        "error budget burn",
    )


# --- a real Prometheus Alertmanager -------------------------------------------------------


def alertmanager(tmp_path: Path, webhook_url: str) -> tuple[subprocess.Popen, str]:
    assert ALERTMANAGER, "prometheus-alertmanager is not installed (.ci/run installs it)"
    config = tmp_path / "alertmanager.yml"
    config.write_text(
        "route:\n"
        "  receiver: canary\n"
        "  group_wait: 0s\n"
        "  group_interval: 1s\n"
        "  repeat_interval: 1h\n"
        "receivers:\n"
        "  - name: canary\n"
        "    webhook_configs:\n"
        f"      - url: '{webhook_url}'\n"
        "        send_resolved: false\n"
    )
    port = free_port()
    log = open(tmp_path / "alertmanager.log", "w")  # noqa: SIM115
    process = subprocess.Popen(
        [
            ALERTMANAGER,
            f"--config.file={config}",
            f"--storage.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{base}/-/ready", timeout=2)  # noqa: S310 - local test server
            break
        except OSError:
            time.sleep(0.2)
    return process, base


@pytest.mark.django_db(transaction=True)
def test_a_real_alertmanager_alert_rolls_the_canary_back(
    admin_api: APIClient, canary_v2: Deployment, tmp_path: Path
) -> None:
    with gunicorn() as base, override_settings(CANARY_BASE_URL=base):
        url = create(admin_api, canary_v2.ruleset_id, name="alertmanager").json()["url"]
        assert url.startswith(base)
        process, manager = alertmanager(tmp_path, url)
        try:
            alert = [
                {
                    "labels": {"alertname": "CanaryErrorBudget", "severity": "page"},
                    "annotations": {"summary": "v2 burns the error budget"},
                }
            ]
            request = urllib.request.Request(  # noqa: S310 - local test server
                f"{manager}/api/v2/alerts",
                data=json.dumps(alert).encode(),
                headers={"Content-Type": "application/json"},
                method="POST",
            )
            urllib.request.urlopen(request, timeout=5)  # noqa: S310 - local test server
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if Deployment.objects.get(pk=canary_v2.pk).status == "rolled_back":
                    break
                time.sleep(0.2)
        finally:
            process.terminate()
            process.wait(timeout=10)
    log = (tmp_path / "alertmanager.log").read_text()
    rolled = Deployment.objects.get(pk=canary_v2.pk)
    assert rolled.status == "rolled_back", log
    event = DeploymentEvent.objects.get(deployment=canary_v2, action="rollback")
    assert event.actor == "system:trigger:alertmanager"
    assert rolled.rollback_reason == "alertmanager"


@pytest.mark.django_db
def test_a_rollback_trigger_undoes_a_promotion_still_baking(
    admin_api: APIClient, canary_v2: Deployment
) -> None:
    Deployment.objects.filter(pk=canary_v2.pk).update(canary_config={"bake_minutes": 60})
    services.deployment_promote(deployment_id=canary_v2.pk, actor="alice")
    url = create(admin_api, canary_v2.ruleset_id).json()["url"]

    answer = APIClient().post(path_of(url), {"reason": "checkout errors"}, format="json")

    assert answer.status_code == 202
    assert answer.json()["deployment_id"] == str(canary_v2.pk)
    promoted = Deployment.objects.get(pk=canary_v2.pk)
    assert promoted.status == "rolled_back"
    assert Deployment.objects.get(pk=promoted.baseline_id).status == "active"
    assert promoted.events.get(action="rollback").actor == "system:trigger:error-budget"


@pytest.mark.django_db
def test_a_rollback_trigger_leaves_a_release_whose_bake_ended(
    admin_api: APIClient, canary_v2: Deployment
) -> None:
    services.deployment_promote(deployment_id=canary_v2.pk, actor="alice")
    url = create(admin_api, canary_v2.ruleset_id).json()["url"]

    answer = APIClient().post(path_of(url), {}, format="json")

    assert answer.status_code == 200
    assert answer.json()["acted"] is False
    assert Deployment.objects.get(pk=canary_v2.pk).status == "active"
