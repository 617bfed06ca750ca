"""Client tokens in the admin: issued (shown once), listed by prefix, revoked; Admins only."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from assignments.models import ClientToken
from deployments.models import Deployment, RuleSet

pytestmark = pytest.mark.django_db

Console = Callable[[str], Client]


def test_admin_issues_lists_and_revokes(
    console: Console, ruleset: RuleSet, active_v1: Deployment
) -> None:
    admin = console("admin")
    add = reverse("admin:assignments_clienttoken_add")
    response = admin.post(
        add,
        {
            "name": "storefront",
            "rulesets": [str(ruleset.pk)],
            "allowed_origins": "https://Shop.example.com/\nhttp://localhost:5173\n",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    shown = [str(m) for m in get_messages(response.wsgi_request)]
    token = next(word for m in shown for word in m.split() if word.startswith("canary_ct_"))
    stored = ClientToken.objects.get()
    assert stored.allowed_origins == ["https://shop.example.com", "http://localhost:5173"]
    assert token not in str(stored.__dict__)

    # the token works, for resolve
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    assert client.get(f"/api/v1/rulesets/{ruleset.pk}/resolve").status_code == 200

    changelist = reverse("admin:assignments_clienttoken_changelist")
    assert token in admin.get(changelist).content.decode()  # the message, this once
    listing = admin.get(changelist).content.decode()
    assert stored.token_prefix in listing and "storefront" in listing
    assert ruleset.name in listing and "https://shop.example.com" in listing
    assert token not in listing
    page = admin.get(reverse("admin:assignments_clienttoken_change", args=[stored.pk]))
    assert page.status_code == 200 and token not in page.content.decode()

    delete = reverse("admin:assignments_clienttoken_delete", args=[stored.pk])
    assert admin.post(delete, {"post": "yes"}).status_code == 302
    assert not ClientToken.objects.exists()
    assert client.get(f"/api/v1/rulesets/{ruleset.pk}/resolve").status_code == 401


def test_a_bad_origin_is_named_on_the_form(console: Console, ruleset: RuleSet) -> None:
    response = console("admin").post(
        reverse("admin:assignments_clienttoken_add"),
        {"name": "x", "rulesets": [str(ruleset.pk)], "allowed_origins": "https://*.example.com"},
    )
    assert response.status_code == 200
    assert "allowed_origins" in response.context["adminform"].form.errors
    assert not ClientToken.objects.exists()


@pytest.mark.parametrize("role", ["viewer", "approver"])
def test_only_admins_see_client_tokens(console: Console, role: str) -> None:
    changelist = reverse("admin:assignments_clienttoken_changelist")
    assert console(role).get(changelist).status_code == 403
    assert console(role).get(reverse("admin:assignments_clienttoken_add")).status_code == 403
