"""The auth generation: the database bumps it on every way of revoking a token, and only then.

The data plane's token cache is valid only at the generation a process knows
(``canary.api.authentication``); these tests pin what moves it. The fast path's
answer to each revocation, within a second, is in tests/assignments/test_fastpath.py.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from knox.models import AuthToken
from rest_framework.test import APIClient

from canary.api.authentication import AUTH_GENERATION_TABLE
from tests.accounts import issue_token

pytestmark = pytest.mark.django_db


def generation() -> int:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT value FROM {AUTH_GENERATION_TABLE} WHERE id = 1")  # noqa: S608
        return cursor.fetchone()[0]


def raw(sql: str, *params: Any) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql, list(params))


@pytest.fixture
def holder() -> Any:
    user = get_user_model().objects.create(username="holder")
    issue_token(user)
    return user


def deactivate(user: Any) -> None:
    user.is_active = False
    user.save()


REVOCATIONS: dict[str, Callable[[Any], Any]] = {
    "deactivated by save()": lambda user: deactivate(user),
    "deactivated in bulk": lambda user: (
        get_user_model().objects.filter(pk=user.pk).update(is_active=False)
    ),
    "deactivated in raw SQL": lambda user: raw(
        "UPDATE auth_user SET is_active = false WHERE id = %s", user.pk
    ),
    "user deleted": lambda user: user.delete(),
    "token deleted in bulk": lambda user: AuthToken.objects.filter(user=user).delete(),
    "token deleted in raw SQL": lambda user: raw(
        "DELETE FROM knox_authtoken WHERE user_id = %s", user.pk
    ),
    "token moved to another user": lambda user: AuthToken.objects.filter(user=user).update(
        user=get_user_model().objects.create(username="other")
    ),
    "token cut short": lambda user: AuthToken.objects.filter(user=user).update(
        expiry=timezone.now() - timedelta(seconds=1)
    ),
}


@pytest.mark.parametrize("revoke", REVOCATIONS.values(), ids=REVOCATIONS.keys())
def test_every_revocation_bumps_the_generation(revoke: Callable[[Any], Any], holder: Any) -> None:
    before = generation()
    revoke(holder)
    assert generation() > before


NOT_REVOCATIONS: dict[str, Callable[[Any], Any]] = {
    "a login": lambda user: (
        get_user_model().objects.filter(pk=user.pk).update(last_login=timezone.now())
    ),
    "a save that keeps the user active": lambda user: user.save(),
    "a new token": issue_token,
    "a new user": lambda user: get_user_model().objects.create(username="newcomer"),
    "a token's expiry extended": lambda user: AuthToken.objects.filter(user=user).update(
        expiry=timezone.now() + timedelta(days=400)
    ),
}


@pytest.mark.parametrize("change", NOT_REVOCATIONS.values(), ids=NOT_REVOCATIONS.keys())
def test_other_changes_leave_cached_tokens_valid(change: Callable[[Any], Any], holder: Any) -> None:
    before = generation()
    change(holder)
    assert generation() == before


@pytest.mark.django_db(transaction=True)
def test_the_migration_is_reversible() -> None:
    executor = MigrationExecutor(connection)
    executor.migrate([("assignments", "0005_client_token_roles")])
    assert AUTH_GENERATION_TABLE not in connection.introspection.table_names()
    user = get_user_model().objects.create(username="before")
    get_user_model().objects.filter(pk=user.pk).update(is_active=False)  # no trigger left

    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())
    assert AUTH_GENERATION_TABLE in connection.introspection.table_names()
    before = generation()
    get_user_model().objects.filter(pk=user.pk).update(is_active=True)
    assert generation() == before + 1


def test_only_the_data_plane_caches_tokens(
    settings: Any, client_for: Callable[[str | None], APIClient], canary_v2: Any
) -> None:
    """The fast path serves execute and resolve only: other calls neither read the auth
    generation (a query count stays what it was) nor write the token to Redis."""
    if not settings.REDIS_URL:
        pytest.skip("the token cache needs Redis")
    from canary.api import authentication
    from canary.redis import redis_client

    viewer = client_for("viewer")
    token = viewer._credentials["HTTP_AUTHORIZATION"].removeprefix("Bearer ")
    key = f"canary:tok:{authentication.token_digest(token)}"
    redis_client().delete(key)
    authentication._known_generation = None  # as if the last read were long ago
    with CaptureQueriesContext(connection) as queries:
        assert viewer.get("/api/v1/deployments").status_code == 200
    assert not any(AUTH_GENERATION_TABLE in query["sql"] for query in queries.captured_queries)
    assert redis_client().get(key) is None

    resolved = viewer.get(f"/api/v1/rulesets/{canary_v2.ruleset_id}/resolve", {"user_id": "u"})
    assert resolved.status_code == 200
    assert redis_client().get(key) == f"{viewer_pk(token)}|{generation()}".encode()


def viewer_pk(token: str) -> int:
    return AuthToken.objects.get(token_key=token[:15]).user_id


def test_the_remembered_digests_are_knox_digests_however_many_tokens_come() -> None:
    from knox.crypto import hash_token

    from canary.api.authentication import token_digest

    tokens = [f"{n:064x}" for n in range(600)]  # more than the process remembers
    for _ in range(2):
        assert [token_digest(token) for token in tokens] == [hash_token(t) for t in tokens]
