"""Whole canaries replayed through the product's own code: evidence as ``evidence_at`` builds
it, the decision from ``decide``, the monitor's progression, the breaker's state machine.

One ``Cell`` is one simulated configuration; ``run_chunk`` replays a chunk of its canaries
(chunks are seeded on their own, so results do not depend on the number of processes) and
returns one ``Outcome`` per canary: the monitor runs at which things first happened.
"""

from __future__ import annotations

import functools
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from generate import (
    BLOCK_MINUTES,
    BLOCK_SECONDS,
    NEW_CONTEXT_SHARE,
    Failures,
    arrivals,
    burst_seconds,
    latencies,
    paired_counts,
    v2_served_sequence,
)

from deployments.canary_config import default_canary_config
from monitoring.breaker import state as breaker
from monitoring.statistics import sequential
from monitoring.statistics.analysis import Evidence, VersionStats
from monitoring.statistics.decision import PROMOTE, ROLLBACK, decide, own_rate
from monitoring.statistics.paired import PairedCounts, sample_ratio_test

LOOKS_PER_HOUR = 60 // BLOCK_MINUTES
LATENCY_DRAWS = 2_000  # latencies per version drawn per block (production reads up to 20,000)
LATENCY_MIN_SAMPLE = 400  # monitoring.decision.selectors.LATENCY_MIN_SAMPLE
LOOKBACK_BLOCKS = 12  # ... within LATENCY_MAX_LOOKBACK (an hour) of 5-minute blocks


# --- speed: the product's pure statistics, computed once per distinct argument ----------------
#
# ``decide`` spends ~95% of its time in ``paired_difference_cs`` (two 52-step bisections on
# 0-d arrays). Its helper ``_difference_upper`` is elementwise, so before a chunk is replayed
# every since-start count the chunk will show is bounded in one vectorised call and the
# answers are served from a table; anything not in the table is computed by the original.
# ``check_primed`` compares the table with the original (printed with the results).
# ``v2_worse_test`` and ``_quantile_ranks`` are pure and are memoised.

_ORIGINAL_CS = sequential.paired_difference_cs
_PRIMED: dict[tuple[int, int, int], tuple[float, float]] = {}


def _primed_difference_cs(
    pairs: int, only_v1_failed: int, only_v2_failed: int, alpha: float = sequential.ALPHA
) -> tuple[float, float]:
    if alpha == sequential.ALPHA:
        hit = _PRIMED.get((pairs, only_v1_failed, only_v2_failed))
        if hit is not None:
            return hit
    return _ORIGINAL_CS(pairs, only_v1_failed, only_v2_failed, alpha)


sequential.paired_difference_cs = _primed_difference_cs  # type: ignore[assignment]
sequential.v2_worse_test = functools.lru_cache(maxsize=200_000)(sequential.v2_worse_test)  # type: ignore[assignment]
sequential._quantile_ranks = functools.cache(sequential._quantile_ranks)  # type: ignore[assignment]


def prime_difference_cs(pairs: np.ndarray, only_v1: np.ndarray, only_v2: np.ndarray) -> None:
    """Bound every (pairs, only v1 failed, only v2 failed) given, as ``paired_difference_cs``."""
    _PRIMED.clear()
    keys = np.unique(np.stack([pairs.ravel(), only_v1.ravel(), only_v2.ravel()], axis=1), axis=0)
    keys = keys[keys[:, 0] > 0]
    if not len(keys):
        return
    n, c, b = keys[:, 0], keys[:, 1], keys[:, 2]
    upper = sequential._difference_upper(n, b, c, sequential.ALPHA)
    lower = -sequential._difference_upper(n, c, b, sequential.ALPHA)
    for key, low, high in zip(keys.tolist(), lower.tolist(), upper.tolist(), strict=True):
        _PRIMED[tuple(key)] = (float(low), float(high))  # type: ignore[index]


def check_primed(rng: np.random.Generator, samples: int = 300) -> float:
    """Largest difference between the vectorised table and the product's scalar call."""
    pairs = rng.integers(20, 300_000, samples)
    only_v1 = rng.binomial(pairs, rng.uniform(0, 0.1, samples))
    only_v2 = rng.binomial(pairs - only_v1, rng.uniform(0, 0.1, samples))
    prime_difference_cs(pairs, only_v1, only_v2)
    worst = 0.0
    for n, c, b in zip(pairs.tolist(), only_v1.tolist(), only_v2.tolist(), strict=True):
        primed, original = _PRIMED[(n, c, b)], _ORIGINAL_CS(n, c, b)
        worst = max(worst, abs(primed[0] - original[0]), abs(primed[1] - original[1]))
    _PRIMED.clear()
    return worst


# --- what is simulated ----------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    """One simulated configuration: ``canaries`` canaries of ``hours`` hours each."""

    kind: str  # monitor | breaker | srm
    failures: Failures
    rate: float  # requests per second
    hours: int
    canaries: int
    config: tuple[tuple[str, Any], ...] = ()  # over default_canary_config()
    paired: bool = True  # shadow_percentage 100 (every request a pair) or 0
    latency_shift_ms: float | None = None  # v2's added latency; None: no latency samples
    traffic_changes: tuple[tuple[int, int], ...] = ()  # (minute, percentage) set by a person
    stored_while_open: bool = False  # srm: the counterfactual that v1 is stored while OPEN

    @property
    def looks(self) -> int:
        return self.hours * LOOKS_PER_HOUR

    @property
    def key(self) -> str:
        return repr(self)

    def canary_config(self) -> dict[str, Any]:
        config = {**default_canary_config(), **dict(self.config)}
        if not self.paired:
            config["shadow_percentage"] = 0
        return config

    def cost(self) -> float:
        """A rough relative cost, to start the heaviest work first."""
        if self.kind == "breaker":
            return self.canaries * self.hours * self.rate * 3.0
        per_look = 1.0 + (3.0 if self.latency_shift_ms is not None else 0.0)
        return self.canaries * self.looks * per_look


@dataclass
class Outcome:
    """The monitor run (1-based) at which each thing first happened; None: never."""

    runs: int = 0
    rollback_run: int | None = None
    rollback_rules: tuple[str, ...] = ()
    promote_run: int | None = None  # decide recommended "promote"
    promoted_run: int | None = None  # auto-progress promoted
    worse_run: int | None = None  # decision.worse.rejected
    held_run: int | None = None  # health degraded or unhealthy, traffic may not be raised
    raise_after_worse: bool = False  # may_raise_traffic at a run after worse.rejected
    shown_run: int | None = None  # decision.non_inferiority.shown
    srm_run: int | None = None  # sample_ratio mismatch
    raises: int = 0
    final_traffic: int = 0
    breaker_open_at: float | None = None  # seconds since the start
    notes: dict[str, Any] = field(default_factory=dict)


def chunk_seed(seed: int, cell: Cell, chunk: int) -> np.random.SeedSequence:
    return np.random.SeedSequence([seed, zlib.crc32(cell.key.encode()), chunk])


def run_chunk(
    cell: Cell, chunk: int, size: int, seed: int, latency_draws: int = LATENCY_DRAWS
) -> list[Outcome]:
    rng = np.random.default_rng(chunk_seed(seed, cell, chunk))
    if cell.kind == "breaker":
        return [replay_breaker(cell, rng) for _ in range(size)]
    if cell.kind == "srm":
        return replay_srm(cell, rng, size)
    requests = arrivals(rng, cell.rate, size, cell.looks)
    counts = None
    if cell.paired:
        counts = paired_counts(rng, cell.failures, requests)
        since = np.cumsum(counts, axis=1)
        prime_difference_cs(since.sum(axis=2), since[..., 1], since[..., 2])
    return [
        replay_monitor(cell, rng, requests[i], None if counts is None else counts[i], latency_draws)
        for i in range(size)
    ]


# --- the monitor, every 5 minutes -------------------------------------------------------------


def _stats(total: int, errors: int) -> VersionStats | None:
    if not total:
        return None
    return VersionStats(total, total - errors, errors, 1 - errors / total, errors / total, 0, 0, 0)


@dataclass
class _Step:
    """What the current traffic step has served (``_progress`` and ``sample_ratio`` read it)."""

    start: int  # the monitor run that began it (0: the canary's start)
    pairs: np.ndarray = field(default_factory=lambda: np.zeros(4, dtype=np.int64))
    v1: list[int] = field(default_factory=lambda: [0, 0])  # requests, errors
    v2: list[int] = field(default_factory=lambda: [0, 0])
    contexts: list[int] = field(default_factory=lambda: [0, 0])  # v2 new contexts, all new


def replay_monitor(
    cell: Cell,
    rng: np.random.Generator,
    requests: np.ndarray,
    counts: np.ndarray | None,
    latency_draws: int,
) -> Outcome:
    """One canary, run by run, as ``monitor._evaluate``/``_progress`` act on ``decide``."""
    config = cell.canary_config()
    min_samples = int(config["min_samples"])
    traffic = int(config["initial_traffic_percentage"])
    changes = dict(cell.traffic_changes)
    bursts = None
    recent: list[tuple[tuple[float, ...], tuple[float, ...]]] = []  # latency samples per block
    if cell.latency_shift_ms is not None:
        bursts = burst_seconds(rng, cell.looks * BLOCK_SECONDS)
    since = np.zeros(4, dtype=np.int64)
    step = _Step(0)
    strata = [[0, 0, 0, 0]]  # per traffic step: v1 errors, v1 requests, v2 errors, v2 requests
    previous: tuple[np.ndarray, tuple[int, int], tuple[int, int]] | None = None
    outcome = Outcome()
    for look in range(1, cell.looks + 1):
        block = look - 1
        minute = block * BLOCK_MINUTES
        if block and minute in changes and changes[minute] != traffic:
            traffic = changes[minute]  # a person sets the traffic: a new step
            step = _Step(block)
            strata.append([0, 0, 0, 0])
        share = traffic / 100
        n = int(requests[block])
        if counts is not None:
            pair = counts[block]
            on_v2 = rng.binomial(pair, share)  # which version served each pair
            v2 = (int(on_v2.sum()), int(on_v2[2] + on_v2[3]))
            v1 = (n - v2[0], int(pair[1] - on_v2[1] + pair[3] - on_v2[3]))
        else:
            pair = np.zeros(4, dtype=np.int64)
            rate_v1, rate_v2 = cell.failures.rates(minute)
            served_v2 = int(rng.binomial(n, share))
            v1 = (n - served_v2, int(rng.binomial(n - served_v2, rate_v1)))
            v2 = (served_v2, int(rng.binomial(served_v2, rate_v2)))
        new = int(rng.binomial(n, NEW_CONTEXT_SHARE))
        new_v2 = int(rng.binomial(new, share))
        since += pair
        step.pairs += pair
        for total, part in ((step.v1, v1), (step.v2, v2)):
            total[0] += part[0]
            total[1] += part[1]
        step.contexts[0] += new_v2
        step.contexts[1] += new
        strata[-1][0] += v1[1]
        strata[-1][1] += v1[0]
        strata[-1][2] += v2[1]
        strata[-1][3] += v2[0]

        window = [(pair, v1, v2)] + ([previous] if previous is not None else [])
        ten_pairs = sum(part[0] for part in window)
        since_start = PairedCounts(*map(int, since), agreed=int(since[0] + since[3]))
        latency = None
        if bursts is not None and cell.latency_shift_ms is not None:
            inputs = min(int(pair.sum()), latency_draws)
            if inputs:
                recent.append(latencies(rng, bursts, block, inputs, cell.latency_shift_ms))
            del recent[:-LOOKBACK_BLOCKS]
            # As selectors.latency_samples: the 5-minute window, or, when it holds fewer than
            # LATENCY_MIN_SAMPLE, the newest that many of the last hour.
            window_blocks = recent[-1:] if inputs else []
            if inputs < LATENCY_MIN_SAMPLE:
                window_blocks, gathered = [], 0
                for sample in reversed(recent):
                    window_blocks.insert(0, sample)
                    gathered += len(sample[0])
                    if gathered >= LATENCY_MIN_SAMPLE:
                        break
            if window_blocks:
                v1_sample = tuple(sorted(x for sample in window_blocks for x in sample[0]))
                v2_sample = tuple(sorted(x for sample in window_blocks for x in sample[1]))
                latency = (v1_sample, v2_sample, f"paired, {len(v1_sample):,} inputs")
        evidence = Evidence(
            v1_5m=_stats(*v1),
            v2_5m=_stats(*v2),
            v1_10m=_stats(sum(p[1][0] for p in window), sum(p[1][1] for p in window)),
            v2_10m=_stats(sum(p[2][0] for p in window), sum(p[2][1] for p in window)),
            pairs_5m=PairedCounts(*map(int, pair), agreed=int(pair[0] + pair[3])),
            pairs_10m=PairedCounts(*map(int, ten_pairs), agreed=int(ten_pairs[0] + ten_pairs[3])),
            discordant_since_start=since_start,
            pairs_since_start=since_start,
            strata=()
            if since_start.pairs
            else tuple(tuple(row) for row in strata if row[1] or row[3]),  # type: ignore[misc]
            latency_samples_5m=latency,
            look=look,
            sample_ratio=sample_ratio_test(step.contexts[0], step.contexts[1], traffic),
        )
        decision = decide(evidence, config, breaker_state=breaker.CLOSED)
        outcome.runs = look
        five = own_rate(evidence.pairs_5m, evidence.v1_5m, evidence.v2_5m, min_samples)
        ten = own_rate(evidence.pairs_10m, evidence.v1_10m, evidence.v2_10m, min_samples)
        if five is not None:  # v2's own-failure rate in the 5-minute window, for the report
            own = outcome.notes.setdefault("own_5m", [0.0, 0, 0.0])  # sum, runs, max
            own[0], own[1], own[2] = own[0] + five.rate, own[1] + 1, max(own[2], five.rate)
        if decision.latency is not None and decision.latency["conclusive"]:
            outcome.notes["latency_verdicts"] = outcome.notes.get("latency_verdicts", 0) + 1
        if decision.worse.rejected and outcome.worse_run is None:
            outcome.worse_run = look
            outcome.notes["worse"] = _worse_counts(decision, evidence)
        if decision.non_inferiority.shown and outcome.shown_run is None:
            outcome.shown_run = look
        held = decision.health_status != "healthy" and not decision.may_raise_traffic
        if held and outcome.held_run is None and decision.has_data:
            outcome.held_run = look
        if outcome.worse_run is not None and decision.may_raise_traffic:
            outcome.raise_after_worse = True
        if decision.recommendation == PROMOTE and outcome.promote_run is None:
            outcome.promote_run = look
        if evidence.sample_ratio and evidence.sample_ratio["mismatch"] and not outcome.srm_run:
            outcome.srm_run = look
        previous = (pair, v1, v2)
        if decision.recommendation == ROLLBACK and config["auto_rollback"]:
            outcome.rollback_run = look
            outcome.rollback_rules = tuple(breach.rule for breach in decision.breaches)
            outcome.notes["rollback"] = {
                "own_5m": None if five is None else five.rate,
                "own_10m": None if ten is None else ten.rate,
                "basis": "-" if five is None else f"{five.basis}, {five.samples:,}",
                "worse": _worse_counts(decision, evidence),
                "traffic": traffic,
            }
            break
        if config["auto_progress"]:
            action = _progress(config, look, step, traffic, decision, min_samples)
            if action == "promote":
                outcome.promoted_run = look
                break
            if action == "raise":
                traffic = min(100, traffic + int(config["increment"]))
                outcome.raises += 1
                step = _Step(look)
                strata.append([0, 0, 0, 0])
    outcome.final_traffic = traffic
    return outcome


def _worse_counts(decision: Any, evidence: Evidence) -> str:
    """What the worse test rested on, in a few characters."""
    worse = decision.worse
    if worse.basis == "paired":
        return f"only-v1/only-v2 {worse.only_v1_failed}/{worse.only_v2_failed}"
    rows = "; ".join(f"v1 {r[0]}/{r[1]}, v2 {r[2]}/{r[3]}" for r in evidence.strata)
    return f"strata [{rows}]"


def _progress(
    config: dict[str, Any], look: int, step: _Step, traffic: int, decision: Any, min_samples: int
) -> str | None:
    """``monitor._progress``: raise traffic after a healthy step, or promote at 100%."""
    if (look - step.start) * BLOCK_MINUTES < config["duration_minutes"]:
        return None
    pairs = PairedCounts(*map(int, step.pairs))
    v1, v2 = _stats(*step.v1), _stats(*step.v2)
    step_rate = own_rate(pairs, v1, v2, min_samples)
    if (
        step_rate is None
        and v2 is not None
        and pairs.pairs < min_samples
        and v2.total_requests >= min_samples
    ):
        # A canary with v1 alone at 0% traffic has no v1 served: judge v2's own requests.
        no_errors = VersionStats(v2.total_requests, v2.total_requests, 0, 1.0, 0, 0, 0, 0)
        step_rate = own_rate(PairedCounts(), no_errors, v2, min_samples)
    healthy = (
        step_rate is not None
        and step_rate.rate <= config["error_threshold"]
        and 1 - step_rate.rate >= config["success_threshold"]
    )
    if not healthy:
        return None
    if traffic >= 100:
        # governance.auto_promote_allowed: with one approval required and readiness not
        # enforced (the defaults), it allows.
        return "promote" if decision.recommendation == PROMOTE else None
    return "raise" if decision.may_raise_traffic else None


# --- the breaker, request by request ----------------------------------------------------------


def replay_breaker(cell: Cell, rng: np.random.Generator) -> Outcome:
    """Feed v2's served requests to ``breaker.record`` as ``execution_observe`` does: a v2
    failure counts only when the shadowed v1 succeeded; a non-failure is recorded only when
    the breaker had counted a failure. Stops at the first opening (the breaker rolls back)."""
    config = cell.canary_config()
    threshold = int(config["failure_threshold"])
    cooldown = float(config["breaker_cooldown_seconds"])
    share = int(config["initial_traffic_percentage"]) / 100
    sequence = v2_served_sequence(rng, cell.failures, cell.rate, share, cell.looks)
    own = sequence.v2_failed & ~sequence.v1_failed
    # Vectorised: the first request ending ``threshold`` consecutive counted failures.
    running = np.concatenate([[0], np.cumsum(own, dtype=np.int64)])
    full = np.flatnonzero(running[threshold:] - running[:-threshold] == threshold)
    expected = int(full[0]) + threshold - 1 if full.size else None
    # The real state machine, on every request that changes anything.
    events = np.flatnonzero(own | np.concatenate([[False], own[:-1]]))
    state = breaker.BreakerState()
    opened = None
    for index in events.tolist():
        failed = bool(own[index])
        clean = state.state == breaker.CLOSED and not state.consecutive_failures
        if not failed and clean:
            continue
        now = sequence.at(index)
        state = breaker.record(
            state, success=not failed, now=now, cooldown=cooldown, failure_threshold=threshold
        )
        if state.state == breaker.OPEN:
            opened = index
            break
    if opened != expected:
        raise AssertionError(f"breaker opened at {opened}, run-length says {expected}")
    outcome = Outcome(runs=cell.looks)
    outcome.notes = {"v2_requests": int(own.size), "own_failures": int(own.sum())}
    if opened is not None:
        outcome.breaker_open_at = sequence.at(opened)
    return outcome


# --- the sample-ratio check with the breaker OPEN 60 s every hour -------------------------------


def replay_srm(cell: Cell, rng: np.random.Generator, size: int) -> list[Outcome]:
    """``sample_ratio_test`` over the new contexts assigned since the step began, every run.

    The breaker is OPEN from minute 30 to 31 of every hour: those requests get v1 and, as
    ``router.decide`` does, nothing is stored (``stored_while_open``: the counterfactual
    where v1 assignments are stored). Contexts that arrived while OPEN and come back later
    are new then, and bucketed as usual.
    """
    traffic = int(cell.canary_config()["initial_traffic_percentage"])
    share = traffic / 100
    requests = arrivals(rng, cell.rate, size, cell.looks)
    blocks = np.arange(cell.looks)
    open_share = np.where(blocks % LOOKS_PER_HOUR == 30 // BLOCK_MINUTES, 60 / BLOCK_SECONDS, 0.0)
    during_open = rng.binomial(requests, open_share)
    new = rng.binomial(requests - during_open, NEW_CONTEXT_SHARE)
    new_v2 = rng.binomial(new, share)
    if cell.stored_while_open:
        new = new + rng.binomial(during_open, NEW_CONTEXT_SHARE)  # v1, stored
    v2_total, all_total = np.cumsum(new_v2, axis=1), np.cumsum(new, axis=1)
    outcomes = []
    for canary in range(size):
        outcome = Outcome(runs=cell.looks, final_traffic=traffic)
        for look in range(1, cell.looks + 1):
            ratio = sample_ratio_test(
                int(v2_total[canary, look - 1]), int(all_total[canary, look - 1]), traffic
            )
            if ratio["mismatch"]:
                outcome.srm_run = look
                break
        outcomes.append(outcome)
    return outcomes
