"""The /demo/ page in Debian's Chromium against a real server: the React package end to end.

The server is a real gunicorn process (the data plane's fast path in front of
Django), the canary a real one (v2 for ``alice`` only), and the page resolves
with a client token through ``useCanaryVersion``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import requests
from django.db import connections

from assignments.demo.services import DEMO_RULESET
from assignments.models import ClientToken
from deployments.models import Deployment
from tests.servers import gunicorn

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def _browser(playwright: Any) -> Any:
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing; CI must provide it (apt-get install -y chromium)")
        pytest.skip(f"{CHROMIUM} is missing")
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def test_demo_shows_the_badge_to_the_canary_user_only(
    roles: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from playwright.sync_api import sync_playwright

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with gunicorn(CANARY_DEMO="1") as base, sync_playwright() as playwright:
        browser = _browser(playwright)
        page = browser.new_page()
        page.set_default_timeout(20_000)
        resolves: list[Any] = []
        page.on("response", lambda r: resolves.append(r) if "/resolve" in r.url else None)
        try:
            page.goto(f"{base}/demo/?user=alice")
            page.wait_for_selector("[data-testid=canary-badge]")
            assert page.inner_text("[data-testid=canary-badge]") == "Canary v2"
            assert page.inner_text("[data-testid=version]") == "v2.0.0"
            page.wait_for_selector("[data-testid=rules] li >> text=loyal-customer")
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "demo-alice.png"), full_page=True)

            # bob: the same page, re-resolved on the id change, no badge, v1's rules
            page.click("button >> text=bob")
            page.wait_for_selector("[data-testid=version] >> text=v1.0.0")
            assert page.query_selector("[data-testid=canary-badge]") is None
            page.wait_for_selector("[data-testid=rules] li >> text=big-basket")
            assert "loyal-customer" not in page.inner_text("[data-testid=rules]")

            page.goto(f"{base}/demo/?user=bob")
            page.wait_for_selector("[data-testid=version] >> text=v1.0.0")
            assert page.query_selector("[data-testid=canary-badge]") is None
            page.screenshot(path=str(ARTIFACTS / "demo-bob.png"), full_page=True)
        finally:
            browser.close()

        assert resolves and all(r.status == 200 for r in resolves)
        sent = resolves[0].request.headers["authorization"]
        assert sent.startswith("Bearer canary_ct_")  # a client token, never an API token
        # that token can do nothing but resolve
        executed = requests.post(
            f"{base}/api/v1/rulesets/{resolves[0].url.split('/')[-2]}/execute",
            json={"input": {"total": 120}},
            headers={"Authorization": sent},
            timeout=10,
        )
        assert executed.status_code == 403

    assert Deployment.objects.filter(ruleset__name=DEMO_RULESET, status="canary").exists()
    assert ClientToken.objects.filter(name="demo page").count() == 2  # one per page load
    connections.close_all()


def test_demo_is_off_without_the_setting(client: Any, settings: Any) -> None:
    settings.CANARY_DEMO = False
    assert client.get("/demo/").status_code == 404
    assert client.get("/demo/canary-demo.js").status_code == 404
