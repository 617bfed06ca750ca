"""SSRF rules of SPEC 10.4: what a webhook may point at, checked at creation and delivery."""

from __future__ import annotations

import pytest
from django.test import override_settings
from rest_framework.test import APIClient

from deployments.models import Deployment
from monitoring.models import WebhookDelivery
from monitoring.notifications import sender, webhooks
from tests.monitoring.receiver import receiver

pytestmark = pytest.mark.django_db

PUBLIC = "93.184.215.14"  # a public address: only ever resolved to here, never connected to


def resolving_to(*addresses: str) -> sender.Resolver:
    return lambda host, port: list(addresses)


@pytest.mark.parametrize(
    ("url", "allowed_with_private"),
    [
        ("http://127.0.0.1:9/hook", True),
        ("http://[::1]:9/hook", True),
        ("http://10.1.2.3/hook", True),
        ("http://192.168.1.20/hook", True),
        ("http://172.16.5.4/hook", True),
        ("http://169.254.169.254/latest/meta-data", False),
        ("http://[fe80::1]/hook", False),
        ("http://[::ffff:169.254.169.254]/hook", False),
    ],
)
def test_internal_addresses_are_refused_and_link_local_always(
    url: str, allowed_with_private: bool
) -> None:
    with pytest.raises(sender.UnsafeURL):
        sender.url_vet(url, allow_private=False)
    if allowed_with_private:
        sender.url_vet(url, allow_private=True)
    else:
        with pytest.raises(sender.UnsafeURL, match="link-local"):
            sender.url_vet(url, allow_private=True)


@pytest.mark.parametrize("url", ["ftp://example.com/x", "file:///etc/passwd", "gopher://x", "x"])
def test_only_http_and_https(url: str) -> None:
    with pytest.raises(sender.UnsafeURL, match="http"):
        sender.url_vet(url, allow_private=True)


def test_a_name_with_one_private_address_among_public_ones_is_refused() -> None:
    with pytest.raises(sender.UnsafeURL, match=r"10\.0\.0\.7"):
        sender.url_vet(
            "https://hooks.example.test/x",
            resolve=resolving_to(PUBLIC, "10.0.0.7"),
            allow_private=False,
        )


@override_settings(CANARY_WEBHOOK_ALLOW_PRIVATE=False)
@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8000/x", "http://10.0.0.1/x", "http://169.254.169.254/x"]
)
def test_creating_a_webhook_to_an_internal_address_is_a_400_naming_url(
    admin_api: APIClient, url: str
) -> None:
    answer = admin_api.post(
        "/api/v1/webhooks", {"name": "ci", "url": url, "events": ["*"]}, format="json"
    )
    assert answer.status_code == 400, answer.content
    assert "url" in answer.json()


@override_settings(CANARY_WEBHOOK_ALLOW_PRIVATE=True)
def test_link_local_is_refused_even_when_private_is_allowed(admin_api: APIClient) -> None:
    answer = admin_api.post(
        "/api/v1/webhooks",
        {"name": "meta", "url": "http://169.254.169.254/latest", "events": ["*"]},
        format="json",
    )
    assert answer.status_code == 400
    assert "link-local" in answer.json()["url"][0]


@override_settings(CANARY_WEBHOOK_ALLOW_PRIVATE=False)
def test_a_name_that_turns_private_after_creation_is_refused_at_delivery(
    canary_v2: Deployment,
) -> None:
    """DNS rebinding: vetted public at creation, private when delivered: nothing is sent."""
    answers = {"now": [PUBLIC]}

    def resolve(host: str, port: int) -> list[str]:
        assert host == "hooks.example.test"
        return answers["now"]

    webhook = webhooks.webhook_create(
        name="rebinding", url="http://hooks.example.test/hook", events=["*"], resolve=resolve
    )
    [delivery] = webhooks.webhook_announce(
        event_type="deployment.promoted",
        subject=str(canary_v2.pk),
        source="/test",
        data={"deployment": {}, "event": {}},
    )
    answers["now"] = ["10.0.0.5"]
    assert webhooks.delivery_attempt(delivery_id=delivery.pk, resolve=resolve) is not None
    delivery.refresh_from_db()
    assert delivery.webhook_id == webhook.pk
    assert delivery.last_status_code is None
    assert "10.0.0.5" in delivery.last_error and "private" in delivery.last_error
    assert delivery.status == "pending" and delivery.attempts == 1


@override_settings(CANARY_WEBHOOK_ALLOW_PRIVATE=True)
def test_a_redirect_is_not_followed(canary_v2: Deployment) -> None:
    with receiver(200) as target, receiver(("redirect", "")) as first:
        first.script = [("redirect", target.url)]
        webhooks.webhook_create(name="redirecting", url=first.url, events=["*"])
        [delivery] = webhooks.webhook_announce(
            event_type="deployment.promoted", subject="s", source="/t", data={}
        )
        webhooks.delivery_attempt(delivery_id=delivery.pk)
        delivery.refresh_from_db()
    assert len(first.received) == 1
    assert target.received == []
    assert delivery.last_status_code == 302
    assert delivery.status == "pending"


@override_settings(CANARY_WEBHOOK_ALLOW_PRIVATE=True, CANARY_WEBHOOK_MAX_RESPONSE_BYTES=100)
def test_only_the_capped_part_of_an_answer_is_read() -> None:
    with receiver(200, answer_body=b"x" * 100_000) as big:
        answer = sender.post(big.url, b"{}", {"Content-Type": "application/json"})
    assert answer.ok
    assert len(answer.body) == 100


@override_settings(CANARY_WEBHOOK_ALLOW_PRIVATE=False)
def test_slack_goes_through_the_same_sender(settings: object) -> None:
    from monitoring.notifications.channels import slack_send

    with (
        receiver(200) as slack,
        override_settings(SLACK_WEBHOOK_URL=slack.url),
        pytest.raises(sender.SendFailed, match="private"),
    ):
        slack_send("hello")
    assert slack.received == []
    assert WebhookDelivery.objects.count() == 0
