"""Pure helpers of ``manage.py simulate_traffic``: scenarios, fault planning, pacing, tallies.

Nothing here touches the database or the network, so the traffic shape is tested
on its own and the command only wires it to the data plane (in process or over
HTTP).

How faults stay honest: the simulation rule set's v2 has two rules that v1 does
not have. ``zone_watch`` reads ``input.zone``, a key v1 never reads, so an input
without ``zone`` is a real evaluation failure of v2 ("Key not found in map") and
a success on v1. ``sim_latency`` walks ``input.sim_work`` quadratically, so a
longer list is real evaluation time, measured by the data plane like any other.
The planner sends those inputs only to requests it expects v2 to serve: the
user's sticky version learned from earlier responses, else the data plane's own
bucket function (``assignments.router``) at the canary's current traffic.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from assignments import router

# --- the simulation rule set ---------------------------------------------------

V1_VERSION = "v1.0.0"
V2_VERSION = "v2.0.0"
ERROR_RULE = "zone_watch"
LATENCY_RULE = "sim_latency"
ERROR_KEY = "zone"
LATENCY_FIELD = "sim_work"
DEFAULT_OUTPUT = {"alert": "none"}
ZONES = ("A", "B", "C", "D")

LATENCY_CONDITION = (
    # False for every input; costs about len(sim_work)**2 comparisons when present,
    # within the cost budget a version must fit (docs/rules.md, "Bounded evaluation").
    f"has(input.{LATENCY_FIELD}) && !input.{LATENCY_FIELD}.all(w, !(-1 in input.{LATENCY_FIELD}))"
)
V1_RULES: list[dict[str, Any]] = [
    # The same cost rule as v2's: --base-latency-ms gives both versions real, equal work.
    {"name": LATENCY_RULE, "condition": LATENCY_CONDITION, "output": {"alert": "none"}},
    {"name": "hot", "condition": "input.temperature > 25", "output": {"alert": "raise"}},
    {
        # Guarded: v1 never fails on a missing zone, so a missing zone is a v2-only failure.
        "name": "zone_a",
        "condition": 'has(input.zone) && input.zone == "A"',
        "output": {"alert": "watch"},
    },
]
V2_RULES: list[dict[str, Any]] = [
    {"name": LATENCY_RULE, "condition": LATENCY_CONDITION, "output": {"alert": "none"}},
    # Unguarded on purpose: the v2 change that breaks callers which omit `zone`.
    {"name": ERROR_RULE, "condition": 'input.zone in ["A", "B"]', "output": {"alert": "watch"}},
    {"name": "hot", "condition": "input.temperature > 27", "output": {"alert": "raise"}},
]
V1_CHANGELOG = "Simulation baseline: alert above 25 degrees."
V2_CHANGELOG = (
    f"Simulation candidate: threshold 27 degrees, adds {ERROR_RULE} (reads input.{ERROR_KEY}, "
    f"which v1 never reads) and {LATENCY_RULE} (evaluation time grows with input.{LATENCY_FIELD})."
)

# The CEL budget is 10,000 iterations per condition; `all` over n items is n of them.
MAX_WORK_SIZE = 1_000
MAX_LATENCY_MS = 5_000.0


# --- scenarios -----------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """A preset: what to create (rule set, canary) and what traffic to send."""

    name: str
    ruleset: str
    summary: str
    canary_pct: int
    canary_config: Mapping[str, Any]
    v2_error_rate: float = 0.0
    v2_latency_ms: float = 0.0
    base_latency_ms: float = 0.0
    fault_after: float = 0.0
    rps: float = 20.0
    duration: float = 60.0


SCENARIOS: dict[str, Scenario] = {
    "healthy": Scenario(
        name="healthy",
        ruleset="sim-healthy",
        summary=(
            "v2 is as good as v1; with the monitor running, auto_progress raises the "
            "traffic after each healthy minute, then promotes."
        ),
        canary_pct=10,
        canary_config={
            "initial_traffic_percentage": 10,
            "increment": 45,
            "duration_minutes": 1,
            "min_samples": 20,
            "auto_progress": True,
            "auto_rollback": True,
        },
        base_latency_ms=5.0,
        duration=300.0,
    ),
    "error-rate": Scenario(
        name="error-rate",
        ruleset="sim-error-rate",
        summary=(
            "some of v2's requests fail to evaluate (no 'zone'); the next monitor run sees "
            "the 5-minute v2 error rate above error_threshold and rolls back as system:monitor."
        ),
        canary_pct=10,
        canary_config={
            "initial_traffic_percentage": 10,
            "error_threshold": 0.05,
            "min_samples": 20,
            "auto_rollback": True,
        },
        v2_error_rate=0.08,
        base_latency_ms=5.0,
        duration=180.0,
    ),
    "breaker": Scenario(
        name="breaker",
        ruleset="sim-breaker",
        summary=(
            "v2 is healthy at first, then every v2 request fails; failure_threshold "
            "consecutive failures open the circuit breaker, which rolls back at once as "
            "system:breaker."
        ),
        canary_pct=10,
        canary_config={
            "initial_traffic_percentage": 10,
            "failure_threshold": 5,
            "breaker_cooldown_seconds": 60,
            "auto_rollback": True,
        },
        v2_error_rate=1.0,
        fault_after=15.0,
        base_latency_ms=5.0,
        duration=120.0,
    ),
}

DEFAULTS = Scenario(
    name="custom", ruleset="", summary="", canary_pct=10, canary_config={}, duration=60.0
)


# --- routing prediction and fault planning ---------------------------------------


@dataclass
class CanaryView:
    """What the client last saw of the canary: enough to predict routing like the router."""

    deployment_id: str
    traffic_percentage: int
    target_user_ids: frozenset[str] | None = None
    target_workflow_ids: frozenset[str] | None = None
    breaker_open: bool = False

    @classmethod
    def from_target_filter(
        cls, deployment_id: str, traffic: int, target_filter: Mapping[str, Any] | None
    ) -> CanaryView:
        target_filter = target_filter or {}
        users, workflows = target_filter.get("user_ids"), target_filter.get("workflow_ids")
        return cls(
            deployment_id=str(deployment_id),
            traffic_percentage=int(traffic),
            target_user_ids=frozenset(users) if users is not None else None,
            target_workflow_ids=frozenset(workflows) if workflows is not None else None,
        )


class RoutePredictor:
    """Which version will serve a user: its sticky version if seen, else the router's bucket."""

    def __init__(self, view: CanaryView) -> None:
        self.view = view
        self.known: dict[str, str] = {}

    def predict(self, user_id: str) -> str:
        if self.view.breaker_open:
            return router.V1
        if user_id in self.known:
            return self.known[user_id]
        policy = router.CanaryPolicy(
            deployment_id=self.view.deployment_id,
            traffic_percentage=self.view.traffic_percentage,
            target_user_ids=self.view.target_user_ids,
            target_workflow_ids=self.view.target_workflow_ids,
        )
        if not policy.is_eligible(router.RoutingContext(user_id=user_id)):
            return router.V1
        bucket = router.bucket_for(self.view.deployment_id, router.USER, user_id)
        return router.version_for_bucket(bucket, self.view.traffic_percentage)

    def learn(self, user_id: str, served: str, priority: str | None) -> None:
        """Remember a sticky answer; a breaker-forced v1 (no priority) says nothing about it."""
        if priority == router.USER:
            self.known[user_id] = served


@dataclass
class PlannedRequest:
    user_id: str
    input: dict[str, Any]
    predicted: str
    injected_error: bool = False
    injected_latency: bool = False


class FaultPlanner:
    """Builds each request's input; spreads v2 faults evenly (error diffusion), not randomly.

    An exact share keeps a short demo from wandering around its threshold: with
    8%, every 12th or 13th request omits ``zone``, which only v2 reads.
    """

    def __init__(
        self,
        *,
        predictor: RoutePredictor,
        users: int,
        v2_error_rate: float,
        base_size: int = 0,
        slow_size: int = 0,
        fault_after: float = 0.0,
        rng: random.Random | None = None,
    ) -> None:
        self.predictor = predictor
        self.users = users
        self.v2_error_rate = v2_error_rate
        self.base_size = base_size
        self.slow_size = slow_size
        self.fault_after = fault_after
        self.rng = rng or random.Random()
        self._error_credit = 0.0

    def user_id(self, index: int) -> str:
        return f"sim-user-{index:06d}"

    def next(self, elapsed: float) -> PlannedRequest:
        user_id = self.user_id(self.rng.randrange(self.users))
        data: dict[str, Any] = {
            "temperature": self.rng.randint(15, 35),
            ERROR_KEY: self.rng.choice(ZONES),
        }
        if self.base_size > 0:
            data[LATENCY_FIELD] = [0] * self.base_size
        planned = PlannedRequest(user_id, data, self.predictor.predict(user_id))
        if elapsed < self.fault_after:
            return planned
        # NOTE: bad inputs reach every request, as in production: v1 ignores the
        # key and succeeds, so v2's shadow fails on v1's traffic too (SPEC 9.1).
        if self.v2_error_rate > 0:
            self._error_credit += self.v2_error_rate
            if self._error_credit >= 1 - 1e-9:
                self._error_credit -= 1
                del data[ERROR_KEY]
                planned.injected_error = planned.predicted == router.V2
        if planned.predicted != router.V2:
            return planned
        if self.slow_size > 0:
            data[LATENCY_FIELD] = [0] * self.slow_size
            planned.injected_latency = True
        return planned


def calibrate_work_size(
    measure: Callable[[int], float],
    target_ms: float,
    *,
    start: int = 200,
    max_size: int = MAX_WORK_SIZE,
    rounds: int = 8,
) -> tuple[int, float]:
    """The ``sim_work`` length whose v2 evaluation takes about ``target_ms``.

    The cost is quadratic in the length, so each round rescales by the square
    root of the miss. ``measure(n)`` returns the evaluation latency in ms.
    """
    size, observed = start, 0.0
    for _ in range(rounds):
        observed = measure(size)
        if observed <= 0:
            size = min(max_size, size * 4)
            continue
        if abs(observed - target_ms) <= 0.1 * target_ms:
            break
        new = max(1, min(max_size, round(size * math.sqrt(target_ms / observed))))
        if new == size:
            break
        size = new
    return size, observed


# --- pacing ----------------------------------------------------------------------


class Pacer:
    """Evenly spaced sends at ``rps``; after a stall it resumes rather than bursting."""

    MAX_LAG = 1.0

    def __init__(self, rps: float, start: float) -> None:
        self.interval = 1.0 / rps
        self.next_at = start

    def wait(self, now: float) -> float:
        """Seconds to sleep before the next send (0: send now)."""
        if now - self.next_at > self.MAX_LAG:
            self.next_at = now
        return max(0.0, self.next_at - now)

    def sent(self) -> None:
        self.next_at += self.interval


# --- tallies and display -------------------------------------------------------------


@dataclass
class VersionTally:
    served: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.served if self.served else None

    def p95(self) -> float | None:
        return percentile(self.latencies, 0.95)


@dataclass
class Tally:
    sent: int = 0
    failed_requests: int = 0  # transport or HTTP errors: nothing was evaluated
    injected_errors: int = 0
    injected_latency: int = 0
    mispredicted: int = 0
    versions: dict[str, VersionTally] = field(
        default_factory=lambda: {router.V1: VersionTally(), router.V2: VersionTally()}
    )

    def record(self, planned: PlannedRequest, served: str, success: bool, latency: float) -> None:
        tally = self.versions[served]
        tally.served += 1
        tally.errors += not success
        tally.latencies.append(latency)
        self.injected_errors += planned.injected_error
        self.injected_latency += planned.injected_latency
        self.mispredicted += planned.predicted != served


def percentile(values: Iterable[float], fraction: float) -> float | None:
    """``percentile_cont`` (numpy's linear method), as the metrics endpoint computes it."""
    ordered = sorted(values)
    if not ordered:
        return None
    if len(ordered) == 1:
        return ordered[0]
    rank = fraction * (len(ordered) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def progress_bar(fraction: float, width: int = 20) -> str:
    filled = max(0, min(width, int(fraction * width)))
    return "[" + "#" * filled + "." * (width - filled) + "]"


def _rate(errors: int, served: int) -> str:
    return f"{errors / served:.1%}" if served else "-"


def summary_line(
    *,
    tally: Tally,
    elapsed: float,
    duration: float,
    breaker_state: str,
    status: str,
    traffic: int,
) -> str:
    """The live line: progress, requests, split, v2 errors, breaker, deployment."""
    v1, v2 = tally.versions[router.V1], tally.versions[router.V2]
    rate = tally.sent / elapsed if elapsed > 0 else 0.0
    parts = [
        f"{progress_bar(elapsed / duration if duration else 1.0)} {elapsed:5.1f}s/{duration:g}s",
        f"sent {tally.sent} ({rate:.1f}/s)",
        f"v1 {v1.served} / v2 {v2.served}",
        f"v2 errors {v2.errors} ({_rate(v2.errors, v2.served)})",
        f"breaker {breaker_state}",
        f"{status} {traffic}%",
    ]
    if tally.failed_requests:
        parts.insert(2, f"failed {tally.failed_requests}")
    return " | ".join(parts)


def format_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f} ms"
