"""The active deployment's bake after its promotion (SPEC 10.3), as the console shows it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from deployments.admin.display import when
from deployments.admin.panels import shadow_panel

_LEVELS = {"unhealthy": "error", "degraded": "warning"}
# The decision in words, as the canary's verdict says it.
_DECISIONS = {
    "rollback": "roll back",
    "promote": "keep the promotion",
    "collect_more_data": "keep collecting data",
}
_HEALTH = {"no_data": "no data yet"}


def bake_panel(data: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """ "Baking until ..." with the pairs since the promotion and the one decision on them;
    None when the deployment is not baking (or monitoring is not installed)."""
    if not data:
        return None
    return {
        **data,
        "started": when(data.get("started_at")),
        "until": when(data.get("ends_at")),
        "level": _LEVELS.get(str(data.get("health_status")), "ok"),
        "decision": _DECISIONS.get(str(data.get("recommendation")), data.get("recommendation")),
        "health": _HEALTH.get(str(data.get("health_status")), data.get("health_status")),
        "shadow": shadow_panel(data.get("shadow")),
    }
