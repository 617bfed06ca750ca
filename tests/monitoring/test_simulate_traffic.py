"""``manage.py simulate_traffic``: the guide's three scenarios reach their documented outcome.

Every run goes through the real data plane (execution logs, assignments, breaker,
monitor), so the outcomes below are the product's, not the simulator's.
"""

from __future__ import annotations

import io
import random
import re
from datetime import timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from assignments.models import Assignment
from deployments import services as lifecycle
from deployments.models import Deployment, DeploymentEvent, RuleSet
from monitoring.automation.monitor import monitor_run
from monitoring.models import ExecutionLog
from monitoring.simulation import traffic as sim
from tests.accounts import create_user
from tests.servers import gunicorn
from tests.stored import stored

# Short and fast: a request cap keeps every run the same size whatever the machine's speed.
FAST = ["--rps", "2000", "--duration", "120", "--seed", "7"]


@pytest.fixture(autouse=True)
def unhurried_evaluation(settings: Any) -> None:
    """The scenarios give evaluations milliseconds of real work; on a loaded machine
    the default 50 ms budget would turn some into budget errors the scenario did not
    plan (the budget has its own tests in tests/deployments/test_rule_cost.py)."""
    settings.CANARY_EVAL_BUDGET_MS = 5_000


def simulate(*args: str) -> str:
    out = io.StringIO()
    call_command("simulate_traffic", *args, stdout=out)
    return out.getvalue()


def canary_of(ruleset: str) -> Deployment:
    return Deployment.objects.filter(ruleset__name=ruleset, version__version="v2.0.0").get()


def sent(output: str) -> int:
    return int(re.search(r"Sent (\d+) requests", output).group(1))


def rollback_actor(deployment: Deployment) -> str:
    return DeploymentEvent.objects.get(deployment=deployment, action="rollback").actor


def v2_logs(deployment: Deployment) -> Any:
    return stored(ExecutionLog).filter(deployment=deployment, served_version="v2")


@pytest.mark.django_db
class TestScenarios:
    def test_healthy_stays_canary_then_the_monitor_advances_and_promotes_it(self) -> None:
        output = simulate(
            "--scenario", "healthy", "--canary-pct", "50", "--requests", "120",
            "--run-monitor-every", "0.5", *FAST,
        )  # fmt: skip
        canary = canary_of("sim-healthy")
        assert canary.status == "canary"
        assert "is still in canary at 50%" in output
        assert sent(output) == 120
        logs = v2_logs(canary)
        assert logs.count() >= 20
        assert not logs.filter(success=False).exists()
        # Sticky routing was exercised: one stored decision per user, fewer users than requests.
        assert 0 < stored(Assignment).filter(deployment=canary).count() < 120
        # auto_progress (duration_minutes=1): a minute later the monitor raises traffic ...
        later = timezone.now() + timedelta(minutes=1, seconds=1)
        assert monitor_run(now=later).progressed == [str(canary.pk)]
        canary.refresh_from_db()
        assert canary.traffic_percentage == 95
        event = DeploymentEvent.objects.filter(deployment=canary, action="set_traffic").get()
        assert event.actor == "system:monitor"

    def test_healthy_at_full_traffic_is_promoted_by_the_monitor(self) -> None:
        # Promote needs v2 shown within a point of v1: about a thousand paired inputs.
        simulate("--scenario", "healthy", "--canary-pct", "100", "--requests", "1100", *FAST)
        canary = canary_of("sim-healthy")
        assert canary.status == "canary"
        later = timezone.now() + timedelta(minutes=1, seconds=1)
        assert monitor_run(now=later).promoted == [str(canary.pk)]
        canary.refresh_from_db()
        assert canary.status == "active"
        promote = DeploymentEvent.objects.get(deployment=canary, action="promote")
        assert promote.actor == "system:monitor"

    def test_error_rate_is_rolled_back_by_the_monitor(self) -> None:
        output = simulate(
            "--scenario", "error-rate", "--canary-pct", "50", "--requests", "200",
            "--run-monitor-every", "0.5", *FAST,
        )  # fmt: skip
        canary = canary_of("sim-error-rate")
        assert canary.status == "rolled_back"
        assert rollback_actor(canary) == "system:monitor"
        assert "v2 failed where v1 succeeded" in canary.rollback_reason
        assert "ROLLED BACK by system:monitor" in output
        # The failures are v2's own evaluation errors, in the requested share of all
        # inputs: served on v2, or in v2's shadow beside v1's answer.
        failed = v2_logs(canary).filter(success=False)
        assert set(failed.values_list("error_rule", flat=True)) == {sim.ERROR_RULE}
        everything = stored(ExecutionLog).filter(deployment=canary)
        in_shadow = everything.filter(served_version="v1", shadow_success=False)
        assert set(in_shadow.values_list("shadow_rule", flat=True)) <= {sim.ERROR_RULE}
        v2_failures = failed.count() + in_shadow.count()
        assert abs(v2_failures - 0.08 * everything.count()) <= 1  # spread evenly, not drawn
        assert (
            not stored(ExecutionLog)
            .filter(deployment=canary, served_version="v1", success=False)
            .exists()
        )

    def test_breaker_opens_after_five_failures_and_rolls_back_at_once(self) -> None:
        output = simulate(
            "--scenario", "breaker", "--fault-after", "0", "--requests", "400", *FAST
        )  # fmt: skip
        canary = canary_of("sim-breaker")
        assert canary.status == "rolled_back"
        assert rollback_actor(canary) == "system:breaker"
        assert "Circuit breaker opened after 5 consecutive v2 failures" in canary.rollback_reason
        assert "ROLLED BACK by system:breaker" in output
        assert v2_logs(canary).filter(success=False).count() == 5
        # It stopped as soon as the deployment left canary, not at --requests.
        assert sent(output) < 400

    def test_latency_injection_is_real_evaluation_time(self) -> None:
        output = simulate(
            "--scenario", "healthy", "--ruleset", "sim-latency", "--canary-pct", "50",
            "--base-latency-ms", "0", "--v2-latency-ms", "20", "--requests", "40", *FAST,
        )  # fmt: skip
        canary = canary_of("sim-latency")
        slow = v2_logs(canary).filter(input__has_key=sim.LATENCY_FIELD)
        assert slow.exists()
        slow_median = sim.median(list(slow.values_list("latency_ms", flat=True)))
        v1 = stored(ExecutionLog).filter(deployment=canary, served_version="v1")
        v1_median = sim.median(list(v1.values_list("latency_ms", flat=True)))
        # Measured by the data plane: milliseconds of real work against v1's microseconds.
        assert slow_median >= 5
        assert slow_median > 20 * v1_median
        assert not v1.filter(input__has_key=sim.LATENCY_FIELD).exists()
        assert "Latency: slow v2 requests carry" in output

    def test_rerun_reuses_the_running_canary(self) -> None:
        simulate("--scenario", "healthy", "--requests", "5", *FAST)
        output = simulate("--scenario", "healthy", "--requests", "5", *FAST)
        assert "already has a canary; using it" in output
        assert Deployment.objects.filter(ruleset__name="sim-healthy").count() == 2


@pytest.mark.django_db
class TestArguments:
    def test_unknown_ruleset(self) -> None:
        with pytest.raises(CommandError, match="No rule set named or with id 'nope'"):
            simulate("--ruleset", "nope")

    def test_ruleset_by_id_needs_a_running_canary(self, active_v1: Deployment) -> None:
        with pytest.raises(CommandError, match="has no deployment in canary"):
            simulate("--ruleset", str(active_v1.ruleset_id))

    def test_faults_need_the_simulation_rules(self, canary_v2: Deployment) -> None:
        with pytest.raises(CommandError, match="has no rule 'zone_watch'"):
            simulate("--ruleset", "thermostat", "--v2-error-rate", "0.1")

    def test_plain_traffic_runs_on_any_canary(self, canary_v2: Deployment) -> None:
        output = simulate("--ruleset", str(canary_v2.ruleset_id), "--requests", "10", *FAST)
        assert sent(output) == 10
        assert stored(ExecutionLog).filter(deployment=canary_v2).count() == 10

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            ((), "--ruleset NAME_OR_ID"),
            (("--scenario", "healthy", "--rps", "0"), "--rps must be greater than 0"),
            (("--scenario", "healthy", "--duration", "-1"), "--duration must be greater"),
            (("--scenario", "healthy", "--v2-error-rate", "8"), "--v2-error-rate must be from 0"),
            (("--scenario", "healthy", "--canary-pct", "0"), "--canary-pct must be from 1"),
            (("--scenario", "healthy", "--users", "0"), "--users must be at least 1"),
            (("--scenario", "healthy", "--v2-latency-ms", "99999"), "--v2-latency-ms must be"),
            (("--scenario", "healthy", "--run-monitor-every", "0"), "--run-monitor-every"),
            (("--scenario", "healthy", "--canary-config", "{"), "not valid JSON"),
            (("--scenario", "healthy", "--token", "x"), "--token only applies with --url"),
            (("--scenario", "healthy", "--url", "127.0.0.1:8000"), "must start with http"),
        ],
    )
    def test_bad_options(self, args: tuple[str, ...], message: str) -> None:
        with pytest.raises(CommandError, match=re.escape(message)):
            simulate(*args)
        assert not RuleSet.objects.exists()

    def test_invalid_canary_config_names_the_field(self) -> None:
        with pytest.raises(CommandError, match="error_threshold"):
            simulate("--scenario", "error-rate", "--canary-config", '{"error_threshold": 7}')

    def test_promoted_ruleset_cannot_be_reused(self) -> None:
        simulate("--scenario", "healthy", "--canary-pct", "100", "--requests", "30", *FAST)
        lifecycle.deployment_promote(deployment_id=canary_of("sim-healthy").pk, actor="t")
        with pytest.raises(CommandError, match="already active"):
            simulate("--scenario", "healthy", "--requests", "5", *FAST)


@pytest.mark.django_db(transaction=True)
def test_breaker_scenario_over_http(roles: None) -> None:
    """The same scenario against a real server: setup and traffic through the REST API."""
    token = create_user("sim-approver", "approver")
    with gunicorn() as base:
        output = simulate(
            "--scenario", "breaker", "--fault-after", "0", "--requests", "400",
            "--base-latency-ms", "1", "--url", base, "--token", token, *FAST,
        )  # fmt: skip
    canary = canary_of("sim-breaker")
    assert canary.status == "rolled_back"
    assert rollback_actor(canary) == "system:breaker"
    assert "ROLLED BACK by system:breaker" in output
    assert "(HTTP)" in output
    assert sent(output) < 400
    # Setup went through the API as the token's user.
    start = DeploymentEvent.objects.get(deployment=canary, action="start_canary")
    assert start.actor == "sim-approver"


class TestHelpers:
    def test_fault_share_is_exact_over_all_inputs(self) -> None:
        view = sim.CanaryView(deployment_id="d", traffic_percentage=50)
        planner = sim.FaultPlanner(
            predictor=sim.RoutePredictor(view), users=500, v2_error_rate=0.08,
            rng=random.Random(1),
        )  # fmt: skip
        planned = [planner.next(elapsed=1.0) for _ in range(2000)]
        bad = [p for p in planned if sim.ERROR_KEY not in p.input]
        assert len(bad) == 160  # exactly 8% of the inputs, whichever version serves them
        # Only those served on v2 are the caller's errors; v1 ignores the key.
        assert all(p.injected_error == (p.predicted == "v2") for p in bad)

    def test_faults_wait_for_fault_after(self) -> None:
        view = sim.CanaryView(deployment_id="d", traffic_percentage=100)
        planner = sim.FaultPlanner(
            predictor=sim.RoutePredictor(view), users=10, v2_error_rate=1.0, fault_after=5
        )
        assert not planner.next(elapsed=4.9).injected_error
        assert planner.next(elapsed=5.0).injected_error

    def test_prediction_follows_stickiness_and_the_breaker(self) -> None:
        view = sim.CanaryView(deployment_id="d", traffic_percentage=0)
        predictor = sim.RoutePredictor(view)
        assert predictor.predict("u1") == "v1"
        predictor.learn("u1", "v2", "user")
        assert predictor.predict("u1") == "v2"
        predictor.learn("u2", "v1", None)  # breaker-forced: not a sticky answer
        assert "u2" not in predictor.known
        view.breaker_open = True
        assert predictor.predict("u1") == "v1"

    def test_target_filter_limits_v2(self) -> None:
        view = sim.CanaryView.from_target_filter("d", 100, {"user_ids": ["vip"]})
        predictor = sim.RoutePredictor(view)
        assert predictor.predict("vip") == "v2"
        assert predictor.predict("someone") == "v1"

    def test_calibration_converges_on_a_quadratic_cost(self) -> None:
        size, observed = sim.calibrate_work_size(lambda n: 7e-5 * n * n, 50.0)
        assert abs(observed - 50.0) <= 5.0
        assert 780 <= size <= 900

    def test_calibration_stops_at_the_budget(self) -> None:
        size, _ = sim.calibrate_work_size(lambda n: 1e-9 * n * n, 1000.0)
        assert size == sim.MAX_WORK_SIZE

    def test_pacer_spaces_requests_and_does_not_burst_after_a_stall(self) -> None:
        pacer = sim.Pacer(rps=10, start=100.0)
        assert pacer.wait(100.0) == 0
        pacer.sent()
        assert pacer.wait(100.0) == pytest.approx(0.1)
        assert pacer.wait(105.0) == 0  # 5 s late: resume now ...
        pacer.sent()
        assert pacer.wait(105.0) == pytest.approx(0.1)  # ... and keep the pace

    def test_percentile_matches_percentile_cont(self) -> None:
        assert sim.percentile([1, 2, 3, 4], 0.5) == 2.5
        assert sim.percentile([], 0.95) is None
        assert sim.percentile(list(range(101)), 0.95) == 95

    def test_summary_line(self) -> None:
        tally = sim.Tally(sent=10)
        tally.versions["v2"].served, tally.versions["v2"].errors = 4, 1
        line = sim.summary_line(
            tally=tally, elapsed=5, duration=10, breaker_state="CLOSED", status="canary",
            traffic=10,
        )  # fmt: skip
        assert "[##########..........]" in line
        assert "v2 errors 1 (25.0%)" in line
        assert "breaker CLOSED | canary 10%" in line
