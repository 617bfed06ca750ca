"""The three roles as Django groups holding model permissions.

The API (``RolePermission``) and the admin both check these permissions, so a
role means the same thing everywhere. ``sync_roles`` is idempotent and additive:
data migrations call it with their historical ``apps``, and ``canary_user`` calls
it so that roles exist even if permissions were added after the last migration.
"""

from __future__ import annotations

from typing import Any

VIEWER = "Viewer"
APPROVER = "Approver"
ADMIN = "Admin"
ROLE_BY_NAME = {"viewer": VIEWER, "approver": APPROVER, "admin": ADMIN}

# Running a version on an arbitrary input (the test endpoint and the admin's test
# form) costs evaluation time on the server, so it belongs to those who may
# author versions: Approver and up.
TEST_RULESETVERSION = "deployments.add_rulesetversion"

_VIEW = [
    ("deployments", "view_ruleset"),
    ("deployments", "view_rulesetversion"),
    ("deployments", "view_deployment"),
    ("deployments", "view_deploymentevent"),
    ("assignments", "view_assignment"),
    ("monitoring", "view_executionlog"),
    ("django_celery_beat", "view_periodictask"),
    ("django_celery_beat", "view_intervalschedule"),
    ("django_celery_beat", "view_crontabschedule"),
]
_ACT = [
    ("deployments", "add_ruleset"),
    ("deployments", "add_rulesetversion"),
    ("deployments", "add_deployment"),
    ("deployments", "change_deployment"),
]
_ADMINISTER = [
    ("deployments", "delete_deployment"),
    ("deployments", "change_ruleset"),
    ("auth", "view_user"),
    ("auth", "add_user"),
    ("auth", "change_user"),
    ("auth", "delete_user"),
    ("auth", "view_group"),
    ("knox", "view_authtoken"),
    ("knox", "add_authtoken"),
    ("knox", "delete_authtoken"),
    ("assignments", "view_clienttoken"),
    ("assignments", "add_clienttoken"),
    ("assignments", "delete_clienttoken"),
    ("django_celery_beat", "change_periodictask"),
    ("monitoring", "view_webhook"),
    ("monitoring", "add_webhook"),
    ("monitoring", "change_webhook"),
    ("monitoring", "delete_webhook"),
    ("monitoring", "view_webhookdelivery"),
    ("monitoring", "change_webhookdelivery"),
    ("monitoring", "view_trigger"),
    ("monitoring", "add_trigger"),
    ("monitoring", "delete_trigger"),
]

ROLE_PERMISSIONS: dict[str, list[tuple[str, str]]] = {
    VIEWER: _VIEW,
    APPROVER: _VIEW + _ACT,
    ADMIN: _VIEW + _ACT + _ADMINISTER,
}


def sync_roles(apps: Any = None) -> None:
    """Create the role groups and grant each the permissions it should hold.

    Permissions of apps not installed yet are skipped; a later migration of that
    app calls this again.
    """
    if apps is None:
        from django.apps import apps as global_apps

        apps = global_apps
    _ensure_permissions_exist(apps)
    group_model = apps.get_model("auth", "Group")
    permission_model = apps.get_model("auth", "Permission")
    for role, wanted in ROLE_PERMISSIONS.items():
        group, _ = group_model.objects.get_or_create(name=role)
        for app_label, codename in wanted:
            permission = permission_model.objects.filter(
                content_type__app_label=app_label, codename=codename
            ).first()
            if permission is not None:
                group.permissions.add(permission)


def holds_a_role(user: Any) -> bool:
    """True when ``user`` holds at least one of a Viewer's read permissions: a member
    of any role (every role includes the Viewer's), or a superuser.

    A token whose user holds no role may use the data plane and nothing else.
    """
    return any(user.has_perm(f"{app_label}.{codename}") for app_label, codename in _VIEW)


def _ensure_permissions_exist(apps: Any) -> None:
    # NOTE: Django creates permissions in post_migrate, after every migration of
    # a fresh database has run; create them now so groups can be granted them.
    from django.apps import apps as global_apps
    from django.contrib.auth.management import create_permissions

    for app_config in global_apps.get_app_configs():
        create_permissions(app_config, verbosity=0, apps=apps)


# --- who may manage whom ------------------------------------------------------------
#
# The Admin role manages users, but must never make anyone (itself included) more
# powerful than itself: otherwise `change_user` alone would let an Admin set a
# superuser's password, or put someone in a group holding more than the Admin
# holds, and then act as them. A non-superuser may change, delete or issue a
# token for only the users whose permissions are a subset of its own, and may
# grant only the groups whose permissions are a subset of its own.


def granted_permissions(user: Any) -> set[str]:
    """Every ``app_label.codename`` granted to ``user`` directly or through groups.

    NOTE: unlike ``get_all_permissions`` this ignores ``is_active``: an inactive
    user's grants come back the moment someone reactivates it.
    """
    from django.contrib.auth.models import Permission
    from django.db.models import Q

    rows = (
        Permission.objects.filter(Q(user=user) | Q(group__user=user))
        .values_list("content_type__app_label", "codename")
        .distinct()
    )
    return {f"{app_label}.{codename}" for app_label, codename in rows}


def may_manage_user(actor: Any, target: Any) -> bool:
    """True when ``actor`` may change, delete or issue a token for ``target``."""
    if actor.is_superuser:
        return True
    if target.is_superuser or (target.is_staff and not actor.is_staff):
        return False
    return granted_permissions(target) <= granted_permissions(actor)


def grantable_groups(actor: Any) -> Any:
    """The groups ``actor`` may put a user in: those granting nothing ``actor`` lacks."""
    from django.contrib.auth.models import Group

    groups = Group.objects.all()
    if actor.is_superuser:
        return groups
    held = granted_permissions(actor)
    allowed = [
        group.pk
        for group in groups.prefetch_related("permissions__content_type")
        if {f"{p.content_type.app_label}.{p.codename}" for p in group.permissions.all()} <= held
    ]
    return Group.objects.filter(pk__in=allowed)


def manageable_users(actor: Any) -> Any:
    """The users ``actor`` may manage (see ``may_manage_user``)."""
    from django.contrib.auth import get_user_model

    users = get_user_model().objects.all()
    if actor.is_superuser:
        return users
    held = granted_permissions(actor)
    candidates = users.filter(is_superuser=False)
    if not actor.is_staff:
        candidates = candidates.filter(is_staff=False)
    allowed = [user.pk for user in candidates if granted_permissions(user) <= held]
    return users.filter(pk__in=allowed)
