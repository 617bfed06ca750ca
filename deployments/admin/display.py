"""Shared pieces of the console: read-only base admin, badges, number and text formatting.

Everything here turns a value into something an approver reads; nothing acts.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from django import forms
from django.contrib import admin
from django.http import Http404, HttpRequest
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from canary.errors import DomainError, ValidationFailed
from deployments.choices import DeploymentStatus

CHANGE_DEPLOYMENT = "deployments.change_deployment"
DELETE_DEPLOYMENT = "deployments.delete_deployment"
NONE = "—"


class ReadOnlyAdmin(admin.ModelAdmin):
    """Browse and search only; writes happen through services, never model forms."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def status_badge(status: str) -> SafeString:
    """A coloured status label; the colours live in ``deployments/admin.css``."""
    label = DeploymentStatus(status).label if status in DeploymentStatus.values else status
    return format_html('<span class="canary-badge canary-status-{}">{}</span>', status, label)


def health_badge(health_status: str | None) -> SafeString:
    if not health_status:
        return format_html("{}", NONE)
    return format_html(
        '<span class="canary-badge canary-health-{}">{}</span>', health_status, health_status
    )


def percent(value: float | None, digits: int = 2) -> str:
    return NONE if value is None else f"{value * 100:.{digits}f}%"


def milliseconds(value: float | None) -> str:
    return NONE if value is None else f"{value:.2f} ms"


def pretty_json(value: Any) -> SafeString:
    if value is None:
        return format_html("{}", NONE)
    text = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)
    return format_html('<pre class="canary-json">{}</pre>', text)


def domain_error_text(exc: DomainError) -> str:
    """One readable sentence for an admin message, field errors included."""
    if isinstance(exc, ValidationFailed):
        fields = "; ".join(_flatten_field_errors(exc.field_errors))
        if fields and fields not in exc.detail:
            return f"{exc.detail} ({fields})"
    return exc.detail


def _flatten_field_errors(errors: Mapping[str, Any], prefix: str = "") -> Iterable[str]:
    for field, value in errors.items():
        name = f"{prefix}{field}"
        if isinstance(value, Mapping):
            yield from _flatten_field_errors(value, prefix=f"{name}.")
        elif isinstance(value, list | tuple):
            yield from (f"{name}: {message}" for message in value)
        else:
            yield f"{name}: {value}"


def form_error_text(form: forms.Form) -> str:
    parts = []
    for field, errors in form.errors.items():
        label = form.fields[field].label if field in form.fields else None
        name = str(label or field).rstrip(":") if field != "__all__" else ""
        parts.extend(f"{name}: {error}" if name else str(error) for error in errors)
    return "; ".join(parts)


def admin_link(url_name: str, *args: Any, query: str = "") -> str | None:
    """A link to another app's admin page, or None when that page is not registered."""
    try:
        return reverse(url_name, args=args) + query
    except NoReverseMatch:
        return None


def uuid_or_404(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except ValueError as exc:
        raise Http404("Malformed id.") from exc
