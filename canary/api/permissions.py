from __future__ import annotations

from typing import Any

from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from canary.roles import holds_a_role


class RolePermission(BasePermission):
    """Checks the Django permission a view names for the current action.

    Roles are groups holding model permissions (see ``canary.roles``), so the
    API and the admin enforce the same rules. An action the view does not list is
    refused: a new endpoint must state who may call it. OPTIONS only describes an
    endpoint (the fields of what the caller may send), so a caller holding any role
    gets it whatever the view's actions; one holding none is refused it as every
    other method (403): it learns nothing of an API it may not use.
    """

    message = "Your role does not allow this action."

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        if not (user and user.is_authenticated):
            return False
        # NOTE: plain APIViews name their one action as a class attribute, which
        # would otherwise apply to OPTIONS too; viewsets already say "metadata".
        if request.method == "OPTIONS":
            return holds_a_role(user)
        action = getattr(view, "action", None) or "metadata"
        permissions: dict[str, str | None] = getattr(view, "required_permissions", {})
        if action == "metadata":
            return holds_a_role(user)
        if action not in permissions:
            return False
        required = permissions[action]
        return required is None or user.has_perm(required)
