"""Many first requests for one workflow at the same instant: one row, one answer."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from assignments import router, services
from assignments.models import Assignment
from deployments import services as lifecycle
from tests.samples import DEFAULT_OUTPUT, V1_RULES, V2_RULES
from tests.stored import stored

REQUESTS = 200
THREADS = 40  # below PostgreSQL's default max_connections with room to spare


@pytest.mark.django_db(transaction=True)
def test_concurrent_first_requests_for_one_workflow() -> None:
    ruleset = lifecycle.ruleset_create(name="concurrency", actor="t")
    for version, rules in (("v1.0.0", V1_RULES), ("v2.0.0", V2_RULES)):
        lifecycle.ruleset_version_create(
            ruleset=ruleset, version=version, rules=rules, default=DEFAULT_OUTPUT, actor="t"
        )
    first = lifecycle.deployment_create(ruleset_id=ruleset.pk, version="v1.0.0", actor="t")
    lifecycle.deployment_promote(deployment_id=first.pk, actor="t")
    draft = lifecycle.deployment_create(ruleset_id=ruleset.pk, version="v2.0.0", actor="t")
    lifecycle.deployment_start_canary(deployment_id=draft.pk, canary_pct=50, actor="t")

    barrier = threading.Barrier(THREADS)
    answers: list[str] = []
    failures: list[BaseException] = []
    lock = threading.Lock()

    def worker(offset: int) -> None:
        try:
            barrier.wait(timeout=30)
            for n in range(offset, REQUESTS, THREADS):
                # Different users and sessions, one workflow: the workflow tier decides.
                context = router.RoutingContext(
                    workflow_id="wf-shared", session_id=f"s-{n}", user_id=f"u-{n}"
                )
                result = services.dataplane_execute(
                    ruleset_id=ruleset.pk, input={"temperature": 30}, context=context
                )
                with lock:
                    answers.append(result.resolution.canary_version)
        except BaseException as exc:
            failures.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert not failures, failures
    assert len(answers) == REQUESTS
    assert len(set(answers)) == 1
    rows = stored(Assignment).filter(deployment=draft, tier="workflow", identifier="wf-shared")
    assert rows.count() == 1
    assert rows.get().assigned_version == answers[0]
    assert stored(Assignment).filter(deployment=draft).count() == 1
