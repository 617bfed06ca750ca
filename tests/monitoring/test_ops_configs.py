"""The shipped Grafana dashboard and Prometheus config use the metrics the service exports."""

import json
from pathlib import Path

import yaml

from tests.servers import ROOT

OPS = Path(ROOT) / "ops"


def test_dashboard_queries_every_canary_metric() -> None:
    dashboard = json.loads((OPS / "grafana/dashboards/canary.json").read_text())
    titles = {panel["title"] for panel in dashboard["panels"]}
    assert {
        "Success rate per version",
        "Error rate per version",
        "p95 latency per version",
        "Canary traffic percentage",
    } <= titles
    queries = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    for name in (
        "canary_v1_requests_total",
        "canary_v2_requests_total",
        "canary_v1_errors_total",
        "canary_v2_errors_total",
        "canary_v2_latency_seconds_bucket",
        "canary_traffic_percentage",
        "canary_deployment_status",
    ):
        assert name in queries
    assert "histogram_quantile(0.95, sum(rate(canary_v2_latency_seconds_bucket" in queries


def test_prometheus_scrapes_the_backend() -> None:
    config = yaml.safe_load((OPS / "prometheus/prometheus.yml").read_text())
    [job] = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == ["backend:8000"]
