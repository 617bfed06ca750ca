"""A real Celery worker SIGKILLed mid-backtest: the backtest resumes and completes with the
same numbers (never stuck ``running``)."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from deployments import services
from monitoring.automation.backtests import backtest_create, backtest_report, backtest_sweep
from monitoring.models import Backtest, CapturedInput
from tests.monitoring.test_backtests import EXPECT, independent
from tests.samples import DEFAULT_OUTPUT, V1_RULES, V2_RULES
from tests.servers import ROOT, server_env

INPUTS = 20_000
STALE_SECONDS = 2


@contextmanager
def worker(tmp_path: Path, name: str) -> Iterator[subprocess.Popen]:
    environment = server_env(
        CANARY_VAR_DIR=str(tmp_path),
        CANARY_BACKTEST_CHUNK="200",
        CANARY_BACKTEST_STALE_SECONDS=str(STALE_SECONDS),
    )
    log = open(tmp_path / f"{name}.log", "w")  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "canary", "worker", "--pool=solo",
         "--loglevel=INFO", "-n", f"{name}@%h"],
        cwd=ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        log.close()


def wait_for(predicate: Any, timeout: float, logs: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    text = "\n".join(p.read_text() for p in logs.glob("*.log"))
    raise AssertionError(f"timed out; worker logs:\n{text[-4000:]}")


@pytest.mark.django_db(transaction=True)
def test_a_killed_worker_leaves_a_backtest_that_completes_with_the_same_numbers(
    roles: None, tmp_path: Path, settings: Any
) -> None:
    settings.CANARY_BACKTEST_STALE_SECONDS = STALE_SECONDS
    ruleset = services.ruleset_create(name="killed", actor="tests")
    for version, rules in (("v1.0.0", V1_RULES), ("v2.0.0", V2_RULES)):
        services.ruleset_version_create(
            ruleset=ruleset, version=version, rules=rules, default=DEFAULT_OUTPUT, actor="tests"
        )
    draft = services.deployment_create(ruleset_id=ruleset.pk, version="v1.0.0", actor="tests")
    services.deployment_promote(deployment_id=draft.pk, actor="tests")
    rng = random.Random(11)
    now = timezone.now()
    documents = []
    for _n in range(INPUTS):
        document: dict[str, Any] = {"temperature": rng.randint(18, 32)}
        if rng.random() < 0.8:
            document["zone"] = rng.choice(["A", "B", "C"])
        documents.append(document)
    CapturedInput.objects.bulk_create(
        CapturedInput(ruleset=ruleset, input=document, created_at=now - timedelta(seconds=n + 1))
        for n, document in enumerate(documents)
    )

    with worker(tmp_path, "first") as first:
        backtest = backtest_create(
            ruleset_id=ruleset.pk,
            version="v2.0.0",
            limit=INPUTS,
            expect_changes=EXPECT,
            actor="tests",
        )  # committed: the task is queued on the broker

        def progressed() -> bool:
            return Backtest.objects.filter(pk=backtest.pk, evaluated__gt=0).exists()

        wait_for(progressed, 120, tmp_path)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    killed = Backtest.objects.get(pk=backtest.pk)
    assert killed.status == "running"
    assert 0 < killed.evaluated < INPUTS

    with worker(tmp_path, "second"):
        time.sleep(STALE_SECONDS + 0.5)
        assert backtest_sweep() == 1  # the silent run is queued again

        def finished() -> bool:
            return Backtest.objects.filter(pk=backtest.pk, status__in=["done", "failed"]).exists()

        wait_for(finished, 240, tmp_path)

    done = Backtest.objects.get(pk=backtest.pk)
    assert done.status == "done", done.error
    report = backtest_report(done)
    truth = independent(documents)
    assert report["evaluated"] == INPUTS
    assert report["outcomes"] == {
        name: truth["outcomes"][name]
        for name in ("both_succeeded", "only_v1_failed", "only_v2_failed", "both_failed")
    }
    assert report["disagreed"] == sum(truth["changes"].values())
    assert report["unexpected"]["count"] == len(truth["unexpected"])
    assert done.attempts == 2
