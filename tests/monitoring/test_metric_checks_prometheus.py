"""Metric checks against a real Prometheus (Debian's) scraping an exporter this test controls.

A breach rolls the canary back naming the check; no data, or Prometheus stopped, is
inconclusive: the plan holds, health warns ``metric_check_inconclusive: <name>``,
readiness's ``metric:<name>`` fails, and nothing is rolled back.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.test import override_settings
from django.utils import timezone
from prometheus_client import CollectorRegistry, Gauge, start_http_server
from rest_framework.test import APIClient

from deployments import services
from deployments.models import Deployment, DeploymentEvent, DeploymentPlan, RuleSet
from monitoring.automation.monitor import monitor_run
from tests.monitoring.logs import add_logs
from tests.samples import DEFAULT_OUTPUT, V1_RULES
from tests.servers import free_port

pytestmark = pytest.mark.django_db

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
QUERY = 'checkout_error_ratio{deployment="{deployment_id}"}'


@dataclass
class Exporter:
    gauge: Gauge
    port: int


@dataclass
class Prometheus:
    url: str
    process: subprocess.Popen

    def query(self, promql: str) -> list[Any]:
        address = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(address, timeout=5) as answer:  # noqa: S310 (loopback)
            return json.load(answer)["data"]["result"]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


@contextmanager
def exporter() -> Iterator[Exporter]:
    registry = CollectorRegistry()
    gauge = Gauge(
        "checkout_error_ratio", "Checkout errors per order.", ["deployment"], registry=registry
    )
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        yield Exporter(gauge, port)
    finally:
        server.shutdown()
        thread.join(timeout=5)


@contextmanager
def prometheus(tmp_path: Path, target_port: int) -> Iterator[Prometheus]:
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: shop\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{target_port}']\n"
    )
    port = free_port()
    log = open(tmp_path / "prometheus.log", "w")  # noqa: SIM115
    process = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    server = Prometheus(f"http://127.0.0.1:{port}", process)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                server.query("up")
                break
            except OSError:
                time.sleep(0.2)
        yield server
    finally:
        if process.poll() is None:
            server.stop()
        log.close()


def wait_for_sample(server: Prometheus, promql: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.query(promql):
            return
        time.sleep(0.25)
    raise AssertionError(f"Prometheus never scraped {promql}")


def start(ruleset: RuleSet, url: str, **config: Any) -> Deployment:
    with override_settings(CANARY_PROMETHEUS_URL=url):
        draft = services.deployment_create(
            ruleset_id=ruleset.pk,
            version="v2.0.0",
            canary_config={
                "steps": [{"traffic": 10}, {"pause_minutes": 1}, {"traffic": 20}],
                "metric_checks": [{"name": "checkout_errors", "query": QUERY, "max": 0.1}],
                **config,
            },
            actor="tests",
        )
    return services.deployment_start_canary(deployment_id=draft.pk, actor="tests")


def run_monitor(canary: Deployment, url: str) -> None:
    later = timezone.now() + timedelta(minutes=2)
    add_logs(canary, "v2", [1.0] * 60, at=later - timedelta(minutes=1), paired=True)
    add_logs(canary, "v1", [1.0] * 240, at=later - timedelta(minutes=1), paired=True)
    with override_settings(CANARY_PROMETHEUS_URL=url, CANARY_PROMETHEUS_TIMEOUT_SECONDS=2):
        monitor_run(now=later)


def assert_held_and_warned(canary: Deployment, viewer: APIClient, url: str) -> None:
    current = Deployment.objects.get(pk=canary.pk)
    assert (current.status, current.traffic_percentage) == ("canary", 10)
    plan = DeploymentPlan.objects.get(deployment=canary)
    assert plan.current_step == 1
    assert "metric check checkout_errors is inconclusive" in plan.waiting_for
    with override_settings(CANARY_PROMETHEUS_URL=url):
        health = viewer.get(f"/api/v1/deployments/{canary.pk}/health").json()
        readiness = viewer.get(f"/api/v1/deployments/{canary.pk}/readiness").json()
    assert any(
        w.startswith("metric_check_inconclusive: checkout_errors") for w in health["warnings"]
    )
    [check] = [c for c in readiness["checks"] if c["name"] == "metric:checkout_errors"]
    assert (check["passed"], check["required"]) == (False, True)
    assert readiness["ready"] is False


def test_a_breach_rolls_back_naming_the_check(
    tmp_path: Path, ruleset: RuleSet, active_v1: Deployment
) -> None:
    with exporter() as shop, prometheus(tmp_path, shop.port) as server:
        canary = start(ruleset, server.url)
        shop.gauge.labels(str(canary.pk)).set(0.25)
        wait_for_sample(server, QUERY.replace("{deployment_id}", str(canary.pk)))
        run_monitor(canary, server.url)
    rolled = Deployment.objects.get(pk=canary.pk)
    assert rolled.status == "rolled_back"
    assert "Metric check checkout_errors breached: 0.25 is above max 0.1" in rolled.rollback_reason


def test_a_breach_without_automatic_rollback_is_the_decision_and_holds(
    tmp_path: Path, ruleset: RuleSet, active_v1: Deployment, viewer: APIClient, approver: APIClient
) -> None:
    # SPEC 9.6: one decision. A breached check is a rollback rule like the paired ones:
    # with auto_rollback off the canary keeps running, but every surface says roll back.
    with exporter() as shop, prometheus(tmp_path, shop.port) as server:
        canary = start(ruleset, server.url, auto_rollback=False)
        shop.gauge.labels(str(canary.pk)).set(0.25)
        wait_for_sample(server, QUERY.replace("{deployment_id}", str(canary.pk)))
        run_monitor(canary, server.url)
        run_monitor(canary, server.url)  # a second run holds; it does not hold again
        with override_settings(CANARY_PROMETHEUS_URL=server.url):
            health = viewer.get(f"/api/v1/deployments/{canary.pk}/health").json()
            comparison = viewer.get(f"/api/v1/deployments/{canary.pk}/comparison").json()
    current = Deployment.objects.get(pk=canary.pk)
    assert (current.status, current.traffic_percentage) == ("canary", 10)
    [detected] = DeploymentEvent.objects.filter(deployment=canary, action="regression_detected")
    assert detected.actor == "system:monitor"
    assert detected.payload["rules"] == ["metric:checkout_errors"]
    assert "Metric check checkout_errors breached: 0.25 is above max 0.1" in (
        " ".join(detected.payload["reasons"])
    )
    assert health["health_status"] == "unhealthy"
    assert comparison["comparison"]["recommendation"] == "rollback"
    assert DeploymentPlan.objects.get(deployment=canary).current_step == 1  # never advanced
    dismissed = approver.post(
        f"/api/v1/deployments/{canary.pk}/dismiss-regression",
        {"reason": "the checkout dashboard was misconfigured"},
        format="json",
    )
    assert dismissed.status_code == 200, dismissed.content


def test_a_passing_check_lets_the_plan_advance(
    tmp_path: Path, ruleset: RuleSet, active_v1: Deployment
) -> None:
    with exporter() as shop, prometheus(tmp_path, shop.port) as server:
        canary = start(ruleset, server.url)
        shop.gauge.labels(str(canary.pk)).set(0.01)
        wait_for_sample(server, QUERY.replace("{deployment_id}", str(canary.pk)))
        run_monitor(canary, server.url)
    assert Deployment.objects.get(pk=canary.pk).traffic_percentage == 20


def test_no_data_holds_the_plan_with_the_warning(
    tmp_path: Path, ruleset: RuleSet, active_v1: Deployment, viewer: APIClient
) -> None:
    with exporter() as shop, prometheus(tmp_path, shop.port) as server:
        canary = start(ruleset, server.url)
        shop.gauge.labels("another-deployment").set(0.9)  # scraped, but not this canary's
        wait_for_sample(server, 'checkout_error_ratio{deployment="another-deployment"}')
        run_monitor(canary, server.url)
        assert_held_and_warned(canary, viewer, server.url)


def test_prometheus_stopped_holds_the_plan_and_never_rolls_back(
    tmp_path: Path, ruleset: RuleSet, active_v1: Deployment, viewer: APIClient
) -> None:
    with exporter() as shop, prometheus(tmp_path, shop.port) as server:
        canary = start(ruleset, server.url)
        shop.gauge.labels(str(canary.pk)).set(0.9)  # would breach, if anyone could read it
        server.stop()
        for _ in range(2):
            run_monitor(canary, server.url)
        assert_held_and_warned(canary, viewer, server.url)


@contextmanager
def silent_prometheus() -> Iterator[str]:
    """A port that accepts connections and never answers: the slowest Prometheus there is."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()


def test_a_silent_prometheus_holds_its_canary_and_the_monitor_judges_the_others(
    ruleset: RuleSet, active_v1: Deployment
) -> None:
    with silent_prometheus() as url:
        held = start(ruleset, url)
        other = services.ruleset_create(name="other-rules", actor="tests")
        for version in ("v1.0.0", "v2.0.0"):
            services.ruleset_version_create(
                ruleset=other, version=version, rules=V1_RULES, default=DEFAULT_OUTPUT, actor="t"
            )
        first = services.deployment_create(ruleset_id=other.pk, version="v1.0.0", actor="t")
        services.deployment_promote(deployment_id=first.pk, actor="t")
        draft = services.deployment_create(ruleset_id=other.pk, version="v2.0.0", actor="t")
        failing = services.deployment_start_canary(deployment_id=draft.pk, actor="t")
        later = timezone.now() + timedelta(minutes=2)
        add_logs(
            failing, "v2", [1.0] * 100, errors=20, at=later - timedelta(minutes=1), paired=True
        )
        with override_settings(CANARY_PROMETHEUS_URL=url, CANARY_PROMETHEUS_TIMEOUT_SECONDS=0.5):
            report = monitor_run(now=later)
    assert report.checked == 2
    assert Deployment.objects.get(pk=failing.pk).status == "rolled_back"
    assert Deployment.objects.get(pk=held.pk).status == "canary"
    assert "inconclusive" in DeploymentPlan.objects.get(deployment=held).waiting_for
