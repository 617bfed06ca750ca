"""Admin-console fixtures: staff users in each role, made the way an operator makes them."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client

PASSWORD = "console-pass-123"


def make_staff(username: str, role: str) -> Any:
    """A user with a role and a password, through ``canary_user`` like a real operator."""
    call_command(
        "canary_user", username, "--role", role, "--password", PASSWORD, stdout=io.StringIO()
    )
    return get_user_model().objects.get(username=username)


@pytest.fixture
def console(roles: None) -> Callable[[str], Client]:
    """``console("approver")``: a Django test client logged in to the admin in that role."""
    clients: dict[str, Client] = {}

    def login(role: str) -> Client:
        if role not in clients:
            client = Client()
            client.force_login(make_staff(f"{role}-console", role))
            clients[role] = client
        return clients[role]

    return login
