"""The deployment lifecycle as data: which action moves which status where.

Django-free on purpose, so the whole table is tested exhaustively without a
database and every caller (API, admin, monitor) reads the same truth.
"""

from __future__ import annotations

from dataclasses import dataclass

DRAFT = "draft"
CANARY = "canary"
ACTIVE = "active"
ROLLED_BACK = "rolled_back"
DEPRECATED = "deprecated"
STATUSES = (DRAFT, CANARY, ACTIVE, ROLLED_BACK, DEPRECATED)

# Actions a user (or the monitor) asks for, named as the API names them.
START_CANARY = "start-canary"
TRAFFIC = "traffic"
PROMOTE = "promote"
ROLLBACK = "rollback"
DEPRECATE = "deprecate"
UPDATE = "update"
DELETE = "delete"
ACTIONS = (START_CANARY, TRAFFIC, PROMOTE, ROLLBACK, DEPRECATE, UPDATE, DELETE)

# Side effects on the baseline of a promoted or rolled-back deployment; never
# requested directly, so they are not offered as allowed actions.
SUPERSEDE = "supersede"
RESTORE = "restore"

# NOTE: ``None`` as a target means the deployment row is removed.
TRANSITIONS: dict[tuple[str, str], str | None] = {
    (DRAFT, START_CANARY): CANARY,
    (DRAFT, UPDATE): DRAFT,
    (DRAFT, DELETE): None,
    # Initial release only: the service refuses it when the rule set already has
    # an active deployment.
    (DRAFT, PROMOTE): ACTIVE,
    (CANARY, TRAFFIC): CANARY,
    (CANARY, PROMOTE): ACTIVE,
    (CANARY, ROLLBACK): ROLLED_BACK,
    (ACTIVE, ROLLBACK): ROLLED_BACK,
    (ACTIVE, DEPRECATE): DEPRECATED,
}

SYSTEM_TRANSITIONS: dict[tuple[str, str], str] = {
    (ACTIVE, SUPERSEDE): DEPRECATED,
    (DEPRECATED, RESTORE): ACTIVE,
}


@dataclass(frozen=True)
class TransitionNotAllowed(Exception):
    status: str
    action: str
    allowed_actions: tuple[str, ...]

    def __str__(self) -> str:
        allowed = ", ".join(self.allowed_actions) or "none (read only)"
        return (
            f"Cannot {self.action} a deployment in status '{self.status}'. "
            f"Allowed actions: {allowed}."
        )


def allowed_actions(status: str) -> tuple[str, ...]:
    """Actions a user may request in ``status``, in the order of ``ACTIONS``."""
    return tuple(action for action in ACTIONS if (status, action) in TRANSITIONS)


def next_status(status: str, action: str) -> str | None:
    """The status ``action`` leads to from ``status``; raises ``TransitionNotAllowed``."""
    key = (status, action)
    if key in TRANSITIONS:
        return TRANSITIONS[key]
    if key in SYSTEM_TRANSITIONS:
        return SYSTEM_TRANSITIONS[key]
    raise TransitionNotAllowed(status, action, allowed_actions(status))
