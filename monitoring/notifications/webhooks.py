"""Webhooks (SPEC 10.4): every lifecycle event to any HTTP receiver, signed and retried.

A delivery row is written in the transaction of the event it announces
(``deployment_event_announce``, called through ``deployments.hooks.release_hooks``), and
queued for the Celery worker when that transaction commits: a rolled-back change sends
nothing, a committed one is never lost (a sweep re-queues deliveries whose task went
missing). Each attempt POSTs a CloudEvents 1.0 structured JSON body signed per Standard
Webhooks through the SSRF-safe sender; a non-2xx answer or a timeout is retried with
exponential backoff and jitter, always with the same id (at-least-once).
"""

from __future__ import annotations

import base64
import json
import logging
import random
import secrets
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from cloudevents.core.bindings.http import to_structured_event
from cloudevents.core.v1.event import CloudEvent
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.utils import timezone
from standardwebhooks.webhooks import Webhook as Signer

from canary.dispatch import enqueue
from canary.errors import NotFound, ValidationFailed
from deployments.api.serializers import DeploymentEventOutputSerializer, DeploymentOutputSerializer
from deployments.choices import EventAction
from deployments.models import Deployment, DeploymentEvent, RuleSet
from monitoring.models import DeliveryStatus, Webhook, WebhookDelivery
from monitoring.notifications import sender

logger = logging.getLogger(__name__)

DELIVER_TASK = "monitoring.tasks.webhook_deliver_task"

EVENT_TYPES = (
    "deployment.created",
    "deployment.canary_started",
    "deployment.traffic_changed",
    "deployment.approved",
    "deployment.promoted",
    "deployment.rolled_back",
    "deployment.deprecated",
    "deployment.paused",
    "deployment.resumed",
    "deployment.plan_step",
    "deployment.breaker_opened",
    "deployment.ready",
    "deployment.bake_completed",
    "backtest.completed",
)

# The event row's action -> the webhook event type. Matched by name, so actions other
# features record (plan steps, pause, resume, bake) are announced once they exist.
EVENT_TYPE_OF_ACTION = {
    EventAction.CREATE.value: "deployment.created",
    EventAction.START_CANARY.value: "deployment.canary_started",
    EventAction.SET_TRAFFIC.value: "deployment.traffic_changed",
    EventAction.APPROVE.value: "deployment.approved",
    EventAction.PROMOTE.value: "deployment.promoted",
    EventAction.ROLLBACK.value: "deployment.rolled_back",
    EventAction.DEPRECATE.value: "deployment.deprecated",
    EventAction.BREAKER_OPEN.value: "deployment.breaker_opened",
    "pause": "deployment.paused",
    "resume": "deployment.resumed",
    "plan_step": "deployment.plan_step",
    "bake_complete": "deployment.bake_completed",
}

MAX_NAME = 100
MAX_URL = 2000
MAX_RULESETS = 100
MAX_BACKOFF_SECONDS = 3600.0

# --- webhooks: create, change, delete ------------------------------------------------------


def _new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def _name_or_400(value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or len(value.strip()) > MAX_NAME:
        raise ValidationFailed({"name": [f"A non-empty name of at most {MAX_NAME} characters."]})
    return value.strip()


def _url_or_400(value: Any, resolve: sender.Resolver | None) -> str:
    if not isinstance(value, str) or len(value) > MAX_URL:
        raise ValidationFailed({"url": [f"An http or https URL of at most {MAX_URL} characters."]})
    try:
        sender.url_vet(value, resolve=resolve)
    except sender.UnsafeURL as exc:
        raise ValidationFailed({"url": [str(exc)]}) from exc
    return value.strip()


def _events_or_400(value: Any) -> list[str]:
    if value == ["*"]:
        return ["*"]
    if not isinstance(value, list) or not value:
        raise ValidationFailed({"events": ['A non-empty list of event types, or ["*"].']})
    unknown = [event for event in value if event not in EVENT_TYPES]
    if unknown:
        raise ValidationFailed(
            {"events": [f"Unknown event types: {unknown}. Known: {', '.join(EVENT_TYPES)}."]}
        )
    return list(dict.fromkeys(value))


def _rulesets_or_400(value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > MAX_RULESETS:
        raise ValidationFailed({"ruleset_ids": [f"A list of at most {MAX_RULESETS} rule set ids."]})
    try:
        ids = [str(uuid.UUID(str(item))) for item in value]
    except ValueError as exc:
        raise ValidationFailed({"ruleset_ids": ["Every item must be a rule set id."]}) from exc
    found = {str(pk) for pk in RuleSet.objects.filter(pk__in=ids).values_list("pk", flat=True)}
    missing = [pk for pk in ids if pk not in found]
    if missing:
        raise ValidationFailed({"ruleset_ids": [f"No rule set with id {missing[0]}."]})
    return list(dict.fromkeys(ids))


def webhook_create(
    *,
    name: Any,
    url: Any,
    events: Any,
    ruleset_ids: Any = None,
    created_by: AbstractBaseUser | None = None,
    resolve: sender.Resolver | None = None,
) -> Webhook:
    """A new webhook with a fresh signing secret (``webhook.secret``: show it once)."""
    return Webhook.objects.create(
        name=_name_or_400(name),
        url=_url_or_400(url, resolve),
        events=_events_or_400(events),
        ruleset_ids=_rulesets_or_400(ruleset_ids),
        secret=_new_secret(),
        created_by=created_by if created_by is not None and created_by.pk else None,
    )


def webhook_get(*, webhook_id: Any) -> Webhook:
    try:
        webhook = Webhook.objects.filter(pk=webhook_id).first()
    except (ValueError, TypeError, DjangoValidationError):  # a malformed id
        webhook = None
    if webhook is None:
        raise NotFound(f"No webhook with id '{webhook_id}'.")
    return webhook


def webhook_update(
    *, webhook_id: Any, changes: dict[str, Any], resolve: sender.Resolver | None = None
) -> Webhook:
    """Change name, url, events, ruleset_ids or active; the URL is vetted again."""
    webhook = webhook_get(webhook_id=webhook_id)
    fields: list[str] = []
    if "name" in changes:
        webhook.name = _name_or_400(changes["name"])
        fields.append("name")
    if "url" in changes:
        webhook.url = _url_or_400(changes["url"], resolve)
        fields.append("url")
    if "events" in changes:
        webhook.events = _events_or_400(changes["events"])
        fields.append("events")
    if "ruleset_ids" in changes:
        webhook.ruleset_ids = _rulesets_or_400(changes["ruleset_ids"])
        fields.append("ruleset_ids")
    if "active" in changes:
        if not isinstance(changes["active"], bool):
            raise ValidationFailed({"active": ["Must be true or false."]})
        webhook.active = changes["active"]
        fields.append("active")
    if fields:
        webhook.save(update_fields=fields)
    return webhook


def webhook_delete(*, webhook_id: Any) -> None:
    webhook_get(webhook_id=webhook_id).delete()


# --- announcing: deliveries written in the event's transaction ------------------------------


def json_safe(data: Any) -> Any:
    return json.loads(json.dumps(data, cls=DjangoJSONEncoder))


def event_source(path: str) -> str:
    return f"{settings.CANARY_BASE_URL.rstrip('/')}/api/v1/{path}"


def _subscribed(webhook: Webhook, event_type: str, ruleset_id: str | None) -> bool:
    if webhook.events != ["*"] and event_type not in webhook.events:
        return False
    return not webhook.ruleset_ids or (ruleset_id is not None and ruleset_id in webhook.ruleset_ids)


def webhooks_reaching(ruleset_id: str) -> int:
    """How many active webhooks hear of this rule set's rollbacks (the preflight's channel)."""
    return sum(
        1
        for webhook in Webhook.objects.filter(active=True)
        if _subscribed(webhook, "deployment.rolled_back", ruleset_id)
    )


def webhook_announce(
    *,
    event_type: str,
    subject: str,
    source: str,
    data: dict[str, Any] | Any,
    ruleset_id: str | None = None,
    at: datetime | None = None,
) -> list[WebhookDelivery]:
    """Write one delivery per subscribed webhook, sent once the caller's transaction commits.

    Public for events that are not deployment events (``backtest.completed``): call it
    inside the transaction that records what it announces. ``data`` may be a callable
    returning the data, so nothing is serialised when no webhook listens.
    """
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown webhook event type {event_type!r}")
    listening = [
        webhook
        for webhook in Webhook.objects.filter(active=True)
        if _subscribed(webhook, event_type, ruleset_id)
    ]
    if not listening:
        return []
    try:
        # NOTE: a savepoint: a delivery that cannot be written is logged, and never
        # fails the lifecycle change it announces (a rollback must always go through).
        with transaction.atomic():
            deliveries = _deliveries_write(listening, event_type, subject, source, data, at)
    except Exception:
        logger.exception("webhook deliveries of %s for %s not written", event_type, subject)
        return []
    ids = [str(delivery.pk) for delivery in deliveries]
    transaction.on_commit(lambda: _enqueue_all(ids), robust=True)
    return deliveries


def _deliveries_write(
    listening: list[Webhook],
    event_type: str,
    subject: str,
    source: str,
    data: Any,
    at: datetime | None,
) -> list[WebhookDelivery]:
    at = at or timezone.now()
    event_id = uuid.uuid4()
    body = json_safe(data() if callable(data) else data)
    attributes = {
        "specversion": "1.0",
        "id": str(event_id),
        "source": source,
        "type": f"io.canary.{event_type}",
        "time": at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "subject": subject,
        "datacontenttype": "application/json",
    }
    deliveries = WebhookDelivery.objects.bulk_create(
        [
            WebhookDelivery(
                webhook=webhook,
                event_id=event_id,
                event_type=event_type,
                event={"attributes": attributes, "data": body},
                next_attempt_at=at,
                created_at=at,
            )
            for webhook in listening
        ]
    )
    return deliveries


def _enqueue_all(ids: Iterable[str]) -> None:
    for delivery_id in ids:
        enqueue(DELIVER_TASK, delivery_id, retry=False)


def deployment_event_announce(event: DeploymentEvent) -> None:
    """The ``release_hooks.event_recorded`` hook: announce a deployment event if mapped."""
    event_type = EVENT_TYPE_OF_ACTION.get(str(event.action))
    if event_type is None:
        return
    deployment = event.deployment
    webhook_announce(
        event_type=event_type,
        subject=str(deployment.pk),
        source=event_source(f"deployments/{deployment.pk}"),
        data=lambda: {
            "deployment": deployment_data(deployment),
            "event": DeploymentEventOutputSerializer(event).data,
        },
        ruleset_id=str(deployment.ruleset_id),
        at=event.created_at,
    )


def deployment_announce(
    *, deployment: Deployment, event_type: str, event: dict[str, Any], at: datetime
) -> list[WebhookDelivery]:
    """Announce what happened to a deployment without an event row (``deployment.ready``)."""
    return webhook_announce(
        event_type=event_type,
        subject=str(deployment.pk),
        source=event_source(f"deployments/{deployment.pk}"),
        data=lambda: {"deployment": deployment_data(deployment), "event": event},
        ruleset_id=str(deployment.ruleset_id),
        at=at,
    )


def deployment_data(deployment: Deployment) -> dict[str, Any]:
    fresh = Deployment.objects.select_related(
        "ruleset", "version", "baseline__version", "created_by"
    ).get(pk=deployment.pk)
    return dict(DeploymentOutputSerializer(fresh).data)


# --- sending -------------------------------------------------------------------------------


def cloudevent_body(event: dict[str, Any]) -> tuple[dict[str, str], bytes]:
    """The structured-mode HTTP message (headers, body) of a stored CloudEvent."""
    attributes = dict(event["attributes"])
    attributes["time"] = datetime.fromisoformat(attributes["time"].replace("Z", "+00:00"))
    message = to_structured_event(CloudEvent(attributes, event["data"]))
    return dict(message.headers), message.body


def signed_headers(secret: str, message_id: str, body: bytes, at: datetime) -> dict[str, str]:
    """Standard Webhooks' three headers for ``body``, signed with the official library."""
    at = at.astimezone(UTC)
    signature = Signer(secret).sign(message_id, at, body.decode())
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signature,
    }


def signed_message(
    secret: str, event: dict[str, Any], at: datetime
) -> tuple[dict[str, str], bytes]:
    headers, body = cloudevent_body(event)
    headers = {
        "Content-Type": headers.get("content-type", "application/cloudevents+json"),
        **signed_headers(secret, event["attributes"]["id"], body, at),
    }
    return headers, body


def backoff_seconds(attempts: int) -> float:
    """Exponential backoff with jitter: about base x 2^(attempts-1), between half and all."""
    base = float(settings.CANARY_WEBHOOK_BACKOFF_SECONDS)
    ceiling = min(MAX_BACKOFF_SECONDS, base * 2 ** max(0, attempts - 1))
    return ceiling * random.uniform(0.5, 1.0)


def _lease() -> timedelta:
    return timedelta(seconds=3 * float(settings.CANARY_WEBHOOK_TIMEOUT_SECONDS) + 30)


def delivery_attempt(
    *, delivery_id: Any, now: datetime | None = None, resolve: sender.Resolver | None = None
) -> float | None:
    """Make one attempt if the delivery is due; the seconds until the next one, or None.

    The attempt is claimed with a compare-and-set on ``next_attempt_at``, so a duplicate
    task (the sweep, a redelivered message) sends nothing twice at once.
    """
    now = now or timezone.now()
    claimed = WebhookDelivery.objects.filter(
        pk=delivery_id, status=DeliveryStatus.PENDING, next_attempt_at__lte=now
    ).update(next_attempt_at=now + _lease())
    if not claimed:
        return None
    delivery = WebhookDelivery.objects.select_related("webhook").get(pk=delivery_id)
    webhook = delivery.webhook
    attempts = delivery.attempts + 1
    if not webhook.active:
        answer = sender.Answer(None, error="the webhook is inactive")
        attempts = max(attempts, int(settings.CANARY_WEBHOOK_MAX_ATTEMPTS))
    else:
        headers, body = signed_message(webhook.secret, delivery.event, timezone.now())
        answer = sender.post(webhook.url, body, headers, resolve=resolve)
    done = timezone.now()
    update: dict[str, Any] = {
        "attempts": attempts,
        "last_status_code": answer.status_code,
        "last_error": answer.error or ("" if answer.ok else f"answered {answer.status_code}"),
        "last_response": answer.body[:2000],
    }
    delay: float | None = None
    if answer.ok:
        update.update(status=DeliveryStatus.SUCCEEDED, delivered_at=done, next_attempt_at=None)
    elif attempts >= int(settings.CANARY_WEBHOOK_MAX_ATTEMPTS):
        update.update(status=DeliveryStatus.FAILED, next_attempt_at=None)
    else:
        delay = backoff_seconds(attempts)
        update["next_attempt_at"] = done + timedelta(seconds=delay)
    WebhookDelivery.objects.filter(pk=delivery_id, status=DeliveryStatus.PENDING).update(**update)
    logger.info(
        "webhook delivery %s attempt %s: %s",
        delivery_id,
        attempts,
        answer.status_code or answer.error,
    )
    return delay


def delivery_redeliver(*, webhook_id: Any, delivery_id: Any) -> WebhookDelivery:
    """Send a delivery again (same id) whatever became of it; the attempts start anew."""
    webhook = webhook_get(webhook_id=webhook_id)
    try:
        delivery = WebhookDelivery.objects.filter(pk=delivery_id, webhook=webhook).first()
    except (ValueError, TypeError, DjangoValidationError):
        delivery = None
    if delivery is None:
        raise NotFound(f"No delivery with id '{delivery_id}' for this webhook.")
    now = timezone.now()
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        status=DeliveryStatus.PENDING, attempts=0, next_attempt_at=now
    )
    transaction.on_commit(lambda: _enqueue_all([str(delivery.pk)]), robust=True)
    delivery.refresh_from_db()
    return delivery


def deliveries_due(*, now: datetime | None = None) -> list[str]:
    """Pending deliveries whose next attempt is overdue (a lost task): the sweep re-queues."""
    now = now or timezone.now()
    overdue = now - timedelta(seconds=30)
    return [
        str(pk)
        for pk in WebhookDelivery.objects.filter(
            status=DeliveryStatus.PENDING, next_attempt_at__lte=overdue
        ).values_list("pk", flat=True)[:1000]
    ]


def deliveries_sweep(*, now: datetime | None = None) -> int:
    due = deliveries_due(now=now)
    _enqueue_all(due)
    return len(due)
