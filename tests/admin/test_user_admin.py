"""An Admin manages users but cannot grant superuser status or raw permissions."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client

pytestmark = pytest.mark.django_db


def login(username: str, role: str) -> Client:
    call_command("canary_user", username, "--role", role, "--password", "a-long-password-1")
    client = Client()
    assert client.login(username=username, password="a-long-password-1")
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
