"""Admin console logins are locked out per username and per address (django-axes)."""

from __future__ import annotations

import io
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client

from canary.login_lockout import client_address

pytestmark = pytest.mark.django_db

PASSWORD = "the-right-password-1"
LIMIT = 10


@pytest.fixture
def alice(roles: None) -> User:
    call_command(
        "canary_user", "alice", "--role", "admin", "--password", PASSWORD, stdout=io.StringIO()
    )
    return User.objects.get(username="alice")


def attempt(username: str, password: str, address: str = "198.51.100.7") -> Any:
    return Client(REMOTE_ADDR=address).post(
        "/admin/login/?next=/admin/", {"username": username, "password": password}
    )


def logged_in(response: Any) -> bool:
    return response.status_code == 302 and response["Location"] == "/admin/"


def test_the_defaults_lock_after_ten_failures_for_fifteen_minutes(settings: Any) -> None:
    from datetime import timedelta

    assert settings.AXES_ENABLED is True
    assert settings.AXES_FAILURE_LIMIT == LIMIT
    assert timedelta(minutes=15) == settings.AXES_COOLOFF_TIME
    assert settings.AXES_LOCKOUT_PARAMETERS == ["username", "ip_address"]


def test_a_username_is_locked_after_the_limit_even_with_the_right_password(
    alice: User,
) -> None:
    # A different address for every guess: the per-user counter still locks.
    codes = [
        attempt("alice", f"wrong-{n}", address=f"203.0.113.{n}").status_code for n in range(LIMIT)
    ]
    # The form again (with an error) until the limit; the failure that reaches it locks.
    assert codes == [200] * (LIMIT - 1) + [429]
    locked = attempt("alice", PASSWORD, address="192.0.2.1")
    assert locked.status_code == 429
    assert not logged_in(locked)


def test_an_address_is_locked_after_the_limit_across_usernames(alice: User) -> None:
    for n in range(LIMIT):
        attempt(f"someone-{n}", "guess", address="198.51.100.50")
    assert attempt("alice", PASSWORD, address="198.51.100.50").status_code == 429
    # Alice herself, from her own address, is not locked.
    assert logged_in(attempt("alice", PASSWORD, address="198.51.100.51"))


def test_fewer_failures_than_the_limit_do_not_lock(alice: User) -> None:
    for n in range(LIMIT - 1):
        attempt("alice", f"wrong-{n}")
    assert logged_in(attempt("alice", PASSWORD))


def test_the_lockout_ends_after_the_cool_off(alice: User, settings: Any) -> None:
    from datetime import timedelta

    from axes.models import AccessAttempt

    for n in range(LIMIT):
        attempt("alice", f"wrong-{n}")
    assert attempt("alice", PASSWORD).status_code == 429
    # Age the recorded failures past the cool-off instead of sleeping.
    for record in AccessAttempt.objects.all():
        AccessAttempt.objects.filter(pk=record.pk).update(
            attempt_time=record.attempt_time - timedelta(minutes=16)
        )
    assert logged_in(attempt("alice", PASSWORD))


def test_the_limit_comes_from_the_environment(alice: User, settings: Any) -> None:
    settings.AXES_FAILURE_LIMIT = 2
    attempt("alice", "wrong-1")
    attempt("alice", "wrong-2")
    assert attempt("alice", PASSWORD).status_code == 429


def test_api_tokens_are_not_subject_to_the_console_lockout(alice: User, client_for: Any) -> None:
    for n in range(LIMIT):
        attempt("admin-user", f"wrong-{n}", address="127.0.0.1")
    assert client_for("admin").get("/api/v1/deployments").status_code == 200


@pytest.mark.parametrize(
    ("proxies", "forwarded", "expected"),
    [
        (0, "203.0.113.9", "10.0.0.2"),
        (1, "203.0.113.9", "203.0.113.9"),
        (1, "1.2.3.4, 203.0.113.9", "203.0.113.9"),  # the client wrote 1.2.3.4
        (2, "1.2.3.4, 203.0.113.9, 10.0.0.1", "203.0.113.9"),
        (2, "203.0.113.9", "10.0.0.2"),  # fewer hops than promised: not trusted
        (1, "", "10.0.0.2"),
    ],
)
def test_client_address_trusts_only_the_configured_proxies(
    settings: Any, proxies: int, forwarded: str, expected: str
) -> None:
    from django.test import RequestFactory

    settings.CANARY_TRUSTED_PROXY_COUNT = proxies
    request = RequestFactory().get("/", REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR=forwarded)
    assert client_address(request) == expected
