"""Production settings pass Django's deployment checks; logs are JSON with request ids."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import yaml
from django.conf import settings

from tests.servers import ROOT

PRODUCTION_ENV = {
    "DJANGO_SETTINGS_MODULE": "canary.settings_production",
    "SECRET_KEY": "p" * 20 + "-production-secret-with-enough-entropy-0123456789",
    "ALLOWED_HOSTS": "canary.example.com",
    "DATABASE_URL": "postgres://canary:canary@db.example.com:5432/canary",
    "REDIS_URL": "redis://redis.example.com:6379/0",
    "PATH": "/usr/bin:/bin",
}


def test_check_deploy_passes_with_the_documented_environment() -> None:
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=PRODUCTION_ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_refuses_to_start_without_a_secret() -> None:
    env = {key: value for key, value in PRODUCTION_ENV.items() if key != "SECRET_KEY"}
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


def test_json_log_lines_carry_the_request_id() -> None:
    from django_guid import clear_guid, set_guid
    from pythonjsonlogger.json import JsonFormatter

    config = settings.LOGGING["formatters"]["json"]
    formatter = JsonFormatter(config["format"], rename_fields=config["rename_fields"])
    from django_guid.log_filters import CorrelationId

    record = logging.LogRecord("canary", logging.INFO, __file__, 1, "rolled back", None, None)
    set_guid("abc123")
    try:
        CorrelationId().filter(record)
    finally:
        clear_guid()
    line = json.loads(formatter.format(record))
    assert line["request_id"] == "abc123"
    assert line["level"] == "INFO" and line["message"] == "rolled back"


def test_compose_file_defines_every_service_and_variable() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) >= {
        "postgres",
        "redis",
        "proxy",
        "backend",
        "worker",
        "beat",
        "prometheus",
        "grafana",
    }
    backend, proxy = services["backend"], services["proxy"]
    # Clients reach nginx (the configuration tests/canary/test_proxy.py runs), which
    # forwards to the backend; the backend trusts exactly that one proxy's address.
    assert "8000:8000" in proxy["ports"] and "ports" not in backend
    assert proxy["environment"]["CANARY_UPSTREAM"] == "backend:8000"
    assert proxy["volumes"] == [
        "./ops/nginx/canary.conf.template:/etc/nginx/templates/default.conf.template:ro"
    ]
    assert backend["environment"]["CANARY_TRUSTED_PROXY_COUNT"] == "1"
    # The backend runs what `make serve` runs: migrations, then granian.
    assert backend["command"] == ["./scripts/serve.sh"]
    serve = (ROOT / "scripts" / "serve.sh").read_text()
    assert "manage.py migrate" in serve
    assert "granian" in serve and "--interface wsgi" in serve
    assert backend["environment"]["CANARY_BIND"] == "0.0.0.0:8000"
    makefile = (ROOT / "Makefile").read_text()
    assert "./scripts/serve.sh" in makefile.split("serve: venv", 1)[1].split("\n\n")[0]
    for name in ("backend", "worker", "beat"):
        environment = services[name]["environment"]
        assert services[name]["depends_on"]
        for variable in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "DJANGO_SETTINGS_MODULE"):
            assert variable in environment, (name, variable)
        assert services[name]["restart"] == "unless-stopped"
    assert "healthcheck" in backend
    assert "9090:9090" in services["prometheus"]["ports"]
    assert "3000:3000" in services["grafana"]["ports"]
