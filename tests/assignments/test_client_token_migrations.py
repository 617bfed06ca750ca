"""The client-token migrations go back and forth, and the Admin role holds the new permissions."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = [("assignments", "0003_assignment_fewer_indexes")]
AFTER = [("assignments", "0006_auth_generation")]


@pytest.mark.django_db(transaction=True)
def test_reversible_and_granted_to_admins() -> None:
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    assert "assignments_clienttoken" not in connection.introspection.table_names()

    executor = MigrationExecutor(connection)
    executor.migrate(AFTER)
    assert "assignments_clienttoken" in connection.introspection.table_names()
    granted = set(
        Group.objects.get(name="Admin")
        .permissions.filter(content_type__app_label="assignments")
        .values_list("codename", flat=True)
    )
    assert {"view_clienttoken", "add_clienttoken", "delete_clienttoken"} <= granted
    approver = Group.objects.get(name="Approver").permissions.values_list("codename", flat=True)
    assert "view_clienttoken" not in set(approver)
