"""Compose's nginx in front of granian (ops/nginx/canary.conf.template): what granian
would answer with an empty body is answered in JSON, everything else passes through,
and the client address the service counts cannot be forged in X-Forwarded-For."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from string import Template

import pytest
import requests
from django.core.cache import cache

from tests.servers import ROOT, free_port, granian

TEMPLATE = ROOT / "ops" / "nginx" / "canary.conf.template"

pytestmark = pytest.mark.django_db(transaction=True)


def nginx_binary() -> str:
    binary = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("nginx is missing; CI must provide it (apt-get install -y nginx-light)")
        pytest.skip("nginx is not installed (apt-get install -y nginx-light)")
    return binary


@contextmanager
def nginx_in_front(upstream: str, directory: Path) -> Iterator[str]:
    """The compose proxy's configuration, rendered as the nginx image renders it."""
    port = free_port()
    site = Template(TEMPLATE.read_text()).safe_substitute(
        CANARY_UPSTREAM=upstream, CANARY_LISTEN=f"127.0.0.1:{port}"
    )
    (directory / "site.conf").write_text(site)
    temp = " ".join(
        f"{kind}_temp_path {directory / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    (directory / "nginx.conf").write_text(
        f"daemon off;\npid {directory / 'nginx.pid'};\nerror_log {directory / 'error.log'} warn;\n"
        f"events {{ worker_connections 64; }}\n"
        f"http {{ access_log off; {temp} include {directory / 'site.conf'}; }}\n"
    )
    process = subprocess.Popen(
        [nginx_binary(), "-p", str(directory), "-c", str(directory / "nginx.conf")],
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                requests.get(f"{base}/healthz", timeout=2)
                break
            except requests.ConnectionError:
                if process.poll() is not None or time.monotonic() > deadline:
                    message = process.stderr.read().decode() if process.stderr else ""
                    raise RuntimeError(message) from None
                time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def proxied(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(nginx's base URL, granian's), granian trusting exactly that one proxy."""
    with granian(
        workers=1, CANARY_TRUSTED_PROXY_COUNT="1", CANARY_AUTH_FAILURES_PER_MINUTE="3"
    ) as server:
        upstream = server.base.removeprefix("http://")
        with nginx_in_front(upstream, tmp_path) as proxy:
            yield proxy, server.base


def test_too_long_for_the_server_is_answered_in_json(proxied: tuple[str, str]) -> None:
    proxy, direct = proxied
    long_query = "/api/v1/deployments?q=" + "a" * 70_000
    # Without the proxy, granian's HTTP parser answers before the application: no body.
    bare = requests.get(direct + long_query, timeout=10)
    assert bare.status_code == 414 and bare.content == b""

    line = requests.get(proxy + long_query, timeout=10)
    assert line.status_code == 414
    assert line.headers["Content-Type"] == "application/json"
    assert line.json()["code"] == "uri_too_long"
    header = requests.get(
        proxy + "/api/v1/deployments", headers={"X-Big": "b" * 40_000}, timeout=10
    )
    assert header.status_code == 431 and header.json()["code"] == "header_too_large"
    body = requests.post(proxy + "/api/v1/rulesets", data=b"x" * (11 << 20), timeout=30)
    assert body.status_code == 413 and body.json()["code"] == "body_too_large"


def test_everything_else_passes_through(proxied: tuple[str, str]) -> None:
    proxy, _ = proxied
    assert requests.get(f"{proxy}/healthz", timeout=10).status_code == 200
    answer = requests.get(f"{proxy}/api/v1/deployments?q=" + "a" * 8_000, timeout=10)
    assert answer.status_code == 401  # the application's own answer, in its own JSON
    assert answer.json()["code"] == "not_authenticated"
    assert answer.headers["X-Request-ID"]


def test_a_forged_forwarded_address_does_not_escape_the_wrong_token_limit(
    proxied: tuple[str, str],
) -> None:
    proxy, _ = proxied
    # Wrong tokens from this machine earlier in the run count against the same address.
    cache.delete("auth-failures:127.0.0.1")
    statuses = [
        requests.get(
            f"{proxy}/api/v1/deployments",
            headers={"Authorization": "Bearer wrong", "X-Forwarded-For": f"10.0.0.{n}"},
            timeout=10,
        ).status_code
        for n in range(6)
    ]
    # Counted for the address nginx saw, whatever the client wrote: 3 refusals, then 429.
    assert statuses == [401, 401, 401, 429, 429, 429]
