"""An Admin manages users but cannot grant superuser status or raw permissions."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.http import HttpRequest
from django.test import Client

pytestmark = pytest.mark.django_db


def login(username: str, role: str) -> Client:
    call_command("canary_user", username, "--role", role, "--password", "a-long-password-1")
    client = Client()
    # NOTE: django-axes checks every authenticate() against its lockout and needs
    # the request to know the address; the test client's login() has none.
    assert client.login(request=HttpRequest(), username=username, password="a-long-password-1")
    return client


def test_admin_role_cannot_make_anyone_superuser(roles: None) -> None:
    admin_client = login("boss", "admin")
    me = User.objects.get(username="boss")
    page = admin_client.get(f"/admin/auth/user/{me.pk}/change/")
    assert page.status_code == 200
    assert 'name="is_superuser"' not in page.content.decode()
    assert 'name="groups"' in page.content.decode()


def test_viewer_cannot_open_users(roles: None) -> None:
    viewer = login("watcher", "viewer")
    assert viewer.get("/admin/auth/user/").status_code == 403


# --- an Admin never acts on anyone more powerful than itself -----------------------

SUPER_PASSWORD = "the-superusers-password-1"


@pytest.fixture
def superuser(roles: None) -> User:
    return User.objects.create_superuser("root", "root@example.com", SUPER_PASSWORD)


@pytest.fixture
def boss(roles: None) -> Client:
    return login("boss", "admin")


def test_admin_role_cannot_set_a_superusers_password(boss: Client, superuser: User) -> None:
    url = f"/admin/auth/user/{superuser.pk}/password/"
    assert boss.get(url).status_code == 403
    response = boss.post(url, {"password1": "taken-over-123", "password2": "taken-over-123"})
    assert response.status_code == 403
    superuser.refresh_from_db()
    assert superuser.check_password(SUPER_PASSWORD)


def test_admin_role_cannot_edit_or_delete_a_superuser(boss: Client, superuser: User) -> None:
    change = f"/admin/auth/user/{superuser.pk}/change/"
    page = boss.get(change)
    assert page.status_code == 200  # read-only view
    assert 'name="username"' not in page.content.decode()
    response = boss.post(change, {"username": "renamed", "is_active": ""})
    assert response.status_code == 403
    assert boss.post(f"/admin/auth/user/{superuser.pk}/delete/", {"post": "yes"}).status_code == 403
    bulk = boss.post(
        "/admin/auth/user/",
        {"action": "delete_selected", "_selected_action": [superuser.pk], "post": "yes"},
    )
    assert bulk.status_code in (200, 302, 403)
    superuser.refresh_from_db()
    assert (superuser.username, superuser.is_active) == ("root", True)


def test_admin_role_cannot_take_over_an_inactive_user_of_a_stronger_group(
    boss: Client, roles: None
) -> None:
    from django.contrib.auth.models import Group, Permission

    strong = Group.objects.create(name="Operators")
    strong.permissions.add(Permission.objects.get(codename="delete_group"))
    dormant = User.objects.create_user("dormant", password="old-password-123", is_active=False)
    dormant.groups.add(strong)
    url = f"/admin/auth/user/{dormant.pk}/password/"
    response = boss.post(url, {"password1": "taken-over-123", "password2": "taken-over-123"})
    assert response.status_code == 403
    dormant.refresh_from_db()
    assert dormant.check_password("old-password-123")


def user_form(user: User, **changes: object) -> dict[str, object]:
    data: dict[str, object] = {
        "username": user.username,
        "first_name": "",
        "last_name": "",
        "email": "",
        "is_active": "on",
        "is_staff": "on" if user.is_staff else "",
        "groups": [group.pk for group in user.groups.all()],
        "date_joined_0": user.date_joined.strftime("%Y-%m-%d"),
        "date_joined_1": user.date_joined.strftime("%H:%M:%S"),
    }
    data.update(changes)
    return {key: value for key, value in data.items() if value != ""}


def test_admin_role_may_grant_only_groups_within_its_own_rights(boss: Client, roles: None) -> None:
    from django.contrib.auth.models import Group, Permission

    call_command("canary_user", "watcher", "--role", "viewer", stdout=None)
    watcher = User.objects.get(username="watcher")
    strong = Group.objects.create(name="Operators")
    strong.permissions.add(Permission.objects.get(codename="delete_group"))
    approver = Group.objects.get(name="Approver")
    url = f"/admin/auth/user/{watcher.pk}/change/"

    refused = boss.post(url, user_form(watcher, groups=[strong.pk]))
    assert refused.status_code == 200  # the form again, with an error
    assert "groups" in refused.context["adminform"].form.errors
    assert list(watcher.groups.values_list("name", flat=True)) == ["Viewer"]

    granted = boss.post(url, user_form(watcher, groups=[approver.pk]))
    assert granted.status_code == 302
    assert list(watcher.groups.values_list("name", flat=True)) == ["Approver"]


def test_admin_role_still_manages_weaker_users(boss: Client, roles: None) -> None:
    call_command("canary_user", "watcher", "--role", "viewer", stdout=None)
    watcher = User.objects.get(username="watcher")
    url = f"/admin/auth/user/{watcher.pk}/password/"
    response = boss.post(url, {"password1": "a-new-password-1", "password2": "a-new-password-1"})
    assert response.status_code == 302
    watcher.refresh_from_db()
    assert watcher.check_password("a-new-password-1")


def test_admin_role_cannot_issue_or_revoke_a_superusers_token(
    boss: Client, superuser: User
) -> None:
    from urllib.parse import quote

    from knox.models import AuthToken

    add = boss.post("/admin/knox/authtoken/add/", {"user": superuser.pk})
    assert add.status_code == 200  # the form again: not a user this Admin may choose
    assert not AuthToken.objects.filter(user=superuser).exists()
    issued, token = AuthToken.objects.create(user=superuser)
    listing = boss.get("/admin/knox/authtoken/").content.decode()
    assert issued.token_key not in listing and token not in listing
    delete = boss.post(f"/admin/knox/authtoken/{quote(issued.digest)}/delete/", {"post": "yes"})
    assert delete.status_code in (302, 403, 404)
    assert AuthToken.objects.filter(user=superuser).exists()


def test_an_admin_issues_a_token_shown_once_and_listed_by_prefix(boss: Client, db: Any) -> None:
    from django.contrib.auth import get_user_model
    from knox.models import AuthToken

    engine = get_user_model().objects.create(username="rule-engine")
    added = boss.post("/admin/knox/authtoken/add/", {"user": engine.pk}, follow=True)
    assert added.status_code == 200
    shown = [str(message) for message in added.context["messages"]]
    token = next(text.split()[-1] for text in shown if text.startswith("TOKEN"))
    issued = AuthToken.objects.get(user=engine)
    assert issued.token_key == token[:15]
    listing = boss.get("/admin/knox/authtoken/").content.decode()
    assert issued.token_key in listing and token not in listing
    api = Client()
    answer = api.get("/api/v1/deployments", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert answer.status_code == 403  # authenticated (no role): the token works
