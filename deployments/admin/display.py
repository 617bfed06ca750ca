"""Shared pieces of the console: read-only base admin, badges, number and text formatting.

Everything here turns a value into something an approver reads; nothing acts.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from django import forms
from django.contrib import admin
from django.http import Http404, HttpRequest
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.dateformat import format as date_format
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from canary.errors import DomainError, ValidationFailed
from deployments.choices import DeploymentStatus

CHANGE_DEPLOYMENT = "deployments.change_deployment"
DELETE_DEPLOYMENT = "deployments.delete_deployment"
NONE = "—"


class ReadOnlyAdmin(admin.ModelAdmin):
    """Browse and search only; writes happen through services, never model forms.

    Nothing in the console changes these objects, so Django's History would
    always be empty: its button is hidden and its page is not found, unless a
    subclass fills it (``keeps_history``, as the deployments do from their events).
    """

    keeps_history = False

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> Any:
        context = {"canary_hide_history": not self.keeps_history, **(extra_context or {})}
        return super().change_view(request, object_id, form_url, extra_context=context)

    def history_view(
        self, request: HttpRequest, object_id: str, extra_context: dict[str, Any] | None = None
    ) -> Any:
        if not self.keeps_history:
            raise Http404("This page keeps no history.")
        return super().history_view(request, object_id, extra_context=extra_context)

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
    """Three significant digits ("0.152 ms", "15.2 ms", "152 ms"): more is noise."""
    if value is None:
        return NONE
    if value == 0:
        return "0 ms"
    decimals = min(3, max(0, 2 - math.floor(math.log10(abs(value)))))
    return f"{value:.{decimals}f} ms"


def percent_of_one(value: float) -> str:
    """A 0-1 fraction as a percentage without trailing zeros: 0.05 → "5%", 0.955 → "95.5%"."""
    return f"{value * 100:.4g}%"


def minutes_text(value: int) -> str:
    return duration(value * 60)


def seconds_text(value: int) -> str:
    return duration(value)


def p_value(value: float | None) -> str:
    """A p-value as a statistician writes it: "p < 0.0001" rather than "p = 0.0000"."""
    if value is None:
        return f"p = {NONE}"
    if value < 0.0001:
        return "p < 0.0001"
    if value > 0.9999:
        return "p > 0.9999"  # not "p = 1.0000": no test is that certain of nothing
    return f"p = {value:.4f}"


DATETIME_FORMAT = "Y-m-d H:i:s T"  # the same as canary/formats/en/formats.py


def when(value: datetime | str | None) -> str:
    """Any moment (a datetime or the REST dicts' ISO string) in the console's one format."""
    if not value:
        return NONE
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
    if timezone.is_naive(value):
        value = timezone.make_aware(value, timezone.get_default_timezone())
    return date_format(timezone.localtime(value), DATETIME_FORMAT)


def duration(seconds: float | None) -> str:
    """A span an approver reads at a glance: "45 s", "12 min 5 s", "2 h 3 min"."""
    if seconds is None:
        return NONE
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, rest = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {rest} s" if rest else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def every(seconds: float) -> str:
    """A period as people say it: "every day", "every hour", "every 5 min", "every 30 s"."""
    seconds = round(seconds)
    for unit, name in ((86400, "day"), (3600, "hour"), (60, "minute")):
        if seconds == unit:
            return f"every {name}"
    if seconds and seconds % 86400 == 0:
        return f"every {seconds // 86400} days"
    return f"every {duration(seconds)}"


def plain_value(value: Any) -> str:
    """A scalar or list as words: yes/no, comma-separated lists, JSON for the rest."""
    if value is None:
        return NONE
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"  # one number format on every page: 2,001,500
    if isinstance(value, str | float):
        return str(value)
    if isinstance(value, list | tuple) and all(
        isinstance(item, str | int | float) for item in value
    ):
        return ", ".join(str(item) for item in value) or NONE
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


UNIT_SUFFIXES = ("_minutes", "_seconds", "_ms", "_percentage")


def key_value_table(
    mapping: Mapping[str, Any] | None,
    *,
    formatters: Mapping[str, Any] | None = None,
    labels: Mapping[str, str] | None = None,
    css: str = "",
) -> SafeString:
    """A JSON object as a two-column table (nested objects nest), not a block of JSON.

    ``formatters`` maps a key to a function giving its display (e.g. a rate as "5%");
    ``labels`` a key to its row label. A formatted value carries its unit, so the
    label drops a unit suffix ("cooldown: 1 min", not "cooldown seconds: 1 min").
    """
    if not mapping:
        return format_html("{}", NONE)
    formatters = formatters or {}
    labels = labels or {}

    def cell(key: str, value: Any) -> Any:
        if isinstance(value, Mapping):
            return key_value_table(value, formatters=formatters, labels=labels)
        if key in formatters and value is not None:
            return formatters[key](value)
        return plain_value(value)

    def label(key: str) -> str:
        if key in labels:
            return labels[key]
        if key in formatters:
            for suffix in UNIT_SUFFIXES:
                key = key.removesuffix(suffix)
        return key.replace("_", " ")

    rows = format_html_join(
        "",
        '<tr><th scope="row">{}</th><td>{}</td></tr>',
        ((label(key), cell(key, value)) for key, value in mapping.items()),
    )
    return format_html(
        '<table class="canary-table canary-kv {}"><tbody>{}</tbody></table>', css, rows
    )


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
