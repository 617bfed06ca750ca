"""Actors, input limits and small validators: shared by every services module, writing nothing."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractBaseUser

from canary.errors import ValidationFailed

SYSTEM_MONITOR = "system:monitor"
SYSTEM_BREAKER = "system:breaker"

Actor = AbstractBaseUser | str | None

MAX_CHANGELOG = 10_000
MAX_REASON = 2_000
MAX_TARGET_IDS = 10_000
MAX_IDENTIFIER = 200


def actor_label(actor: Actor) -> str:
    if actor is None:
        return "system"
    if isinstance(actor, str):
        return actor
    return actor.get_username()


def _actor_user(actor: Actor) -> AbstractBaseUser | None:
    return None if actor is None or isinstance(actor, str) else actor


def _text_or_400(field: str, value: Any, limit: int) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValidationFailed({field: ["Must be a string."]})
    if len(value) > limit:
        raise ValidationFailed({field: [f"Must be at most {limit} characters."]})
    return value


def _percentage_or_400(field: str, value: Any, *, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= 100:
        raise ValidationFailed({field: [f"Must be an integer from {low} to 100."]})
    return value
