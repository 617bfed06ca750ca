"""Synthetic traffic of one canary, drawn with numpy per 5-minute block (the monitor's period).

Nothing here knows the product's rules: it draws what the execution log would hold.

- Arrivals: Poisson, ``rate x 300`` requests per block.
- Paired evaluation (``shadow_percentage`` 100): every request is a pair, so a block is the
  four counts (both succeeded, only v1 failed, only v2 failed, both failed), drawn as chained
  binomials (a multinomial) from the failure model's probabilities; no per-request arrays.
- Failure models: *input-driven* (an input that fails, fails in both versions: v1 fails a
  base share of inputs, v2 the same inputs plus an extra share of those v1 handles, so that
  its whole error rate is ``v2``) and *independent* (each version fails each input with its
  own probability). A *burst* adds, for a while, a share of inputs failing in both versions.
  A *drift* changes both versions' rates from a given minute on.
- Latency: lognormal evaluations of ~0.05 ms; stalls of 0.2-3 ms, rare outside bursts and
  frequent inside them. The burst state is a per-second process shared by both versions
  (contention hits whatever runs at that second), so it hits both versions alike.
- Breaker rows: per-request outcomes of the v2-served requests, in order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BLOCK_SECONDS = 300
BLOCK_MINUTES = BLOCK_SECONDS // 60
NEW_CONTEXT_SHARE = 0.3  # a request opens a new context (user/session) with this probability

# Latency model (milliseconds).
LATENCY_MEDIAN_MS = 0.05
LATENCY_SIGMA = 0.3
STALL_MS = (0.2, 3.0)
STALL_OUTSIDE_BURST = 0.001  # per evaluation
STALL_IN_BURST = 0.5  # per evaluation, during a burst second
BURST_START_PER_SECOND = 0.002  # ~0.6 bursts per 5-minute window
BURST_MEAN_SECONDS = 10.0  # geometric durations


@dataclass(frozen=True)
class Failures:
    """Error rates of both versions. ``burst``: (from minute, to minute, share of inputs
    failing in both versions); ``drift``: (from minute, v1 rate, v2 rate) afterwards."""

    model: str  # input-driven | independent
    v1: float
    v2: float
    burst: tuple[float, float, float] | None = None
    drift: tuple[float, float, float] | None = None

    def rates(self, minute: float) -> tuple[float, float]:
        if self.drift is not None and minute >= self.drift[0]:
            return self.drift[1], self.drift[2]
        return self.v1, self.v2

    def categories(self, minute: float) -> tuple[float, float, float, float]:
        """P(both succeeded), P(only v1 failed), P(only v2 failed), P(both failed) of an
        input arriving at ``minute``."""
        v1, v2 = self.rates(minute)
        if self.model == "input-driven":
            if v2 < v1:
                raise ValueError("input-driven: v2 fails every input v1 fails")
            probabilities = (1 - v2, 0.0, v2 - v1, v1)
        elif self.model == "independent":
            probabilities = ((1 - v1) * (1 - v2), v1 * (1 - v2), (1 - v1) * v2, v1 * v2)
        else:
            raise ValueError(f"unknown failure model {self.model!r}")
        if self.burst is not None and self.burst[0] <= minute < self.burst[1]:
            share = self.burst[2]
            bs, o1, o2, bf = probabilities
            probabilities = ((1 - share) * bs, (1 - share) * o1, (1 - share) * o2)
            probabilities = (*probabilities, share + (1 - share) * bf)
        return probabilities


def block_minutes(blocks: int) -> np.ndarray:
    """The start minute of each block."""
    return np.arange(blocks) * BLOCK_MINUTES


def arrivals(rng: np.random.Generator, rate: float, canaries: int, blocks: int) -> np.ndarray:
    """Requests per (canary, block)."""
    return rng.poisson(rate * BLOCK_SECONDS, size=(canaries, blocks))


def paired_counts(rng: np.random.Generator, failures: Failures, requests: np.ndarray) -> np.ndarray:
    """(canaries, blocks, 4): both succeeded, only v1 failed, only v2 failed, both failed."""
    blocks = requests.shape[1]
    probabilities = np.array([failures.categories(m) for m in block_minutes(blocks)])
    left = requests.copy()
    remaining = np.ones(blocks)
    counts = np.zeros((*requests.shape, 4), dtype=np.int64)
    for column in (3, 2, 1):  # chained binomials: a multinomial per block
        p = np.divide(
            probabilities[:, column],
            remaining,
            out=np.zeros(blocks),
            where=remaining > 1e-15,
        )
        drawn = rng.binomial(left, np.clip(p, 0.0, 1.0))
        counts[..., column] = drawn
        left = left - drawn
        remaining = remaining - probabilities[:, column]
    counts[..., 0] = left
    return counts


# --- latency -----------------------------------------------------------------------------


def burst_seconds(rng: np.random.Generator, seconds: int) -> np.ndarray:
    """A boolean per second: is contention stalling evaluations?"""
    starts = np.flatnonzero(rng.random(seconds) < BURST_START_PER_SECOND)
    lengths = rng.geometric(1 / BURST_MEAN_SECONDS, size=starts.size)
    edges = np.zeros(seconds + 1, dtype=np.int64)
    np.add.at(edges, starts, 1)
    np.add.at(edges, np.minimum(starts + lengths, seconds), -1)
    return np.cumsum(edges[:-1]) > 0


def latencies(
    rng: np.random.Generator,
    bursts: np.ndarray,
    block: int,
    inputs: int,
    v2_shift_ms: float,
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(v1, v2) latencies of ``inputs`` inputs of one block, both versions timed on each input.

    Each version's sample is returned sorted: the latency rule reads two order statistics of
    each sample, so the order carries nothing, and a sorted tuple makes its ``sorted`` cheap.
    """
    second = block * BLOCK_SECONDS + rng.integers(0, BLOCK_SECONDS, size=inputs)
    stall_p = np.where(bursts[second], STALL_IN_BURST, STALL_OUTSIDE_BURST)
    sides = []
    for shift in (0.0, v2_shift_ms):
        values = rng.lognormal(np.log(LATENCY_MEDIAN_MS), LATENCY_SIGMA, inputs) + shift
        stalled = rng.random(inputs) < stall_p
        values[stalled] += rng.uniform(*STALL_MS, size=int(stalled.sum()))
        values.sort()
        sides.append(tuple(values.tolist()))
    return sides[0], sides[1]


# --- the breaker's input: v2-served requests in order ------------------------------------


@dataclass(frozen=True)
class ServedSequence:
    """Per v2-served request, in arrival order: did v1 (shadowed) and v2 fail; and the
    requests per block, to date each one."""

    v1_failed: np.ndarray
    v2_failed: np.ndarray
    per_block: np.ndarray

    def at(self, index: int) -> float:
        """Seconds since the start of the ``index``-th v2-served request (spread evenly
        within its block)."""
        ends = np.cumsum(self.per_block)
        block = int(np.searchsorted(ends, index, side="right"))
        first = int(ends[block] - self.per_block[block])
        return float(
            BLOCK_SECONDS * (block + (index - first + 0.5) / max(1, int(self.per_block[block])))
        )


def v2_served_sequence(
    rng: np.random.Generator, failures: Failures, rate: float, share: float, blocks: int
) -> ServedSequence:
    requests = rng.poisson(rate * BLOCK_SECONDS, size=blocks)
    served = rng.binomial(requests, share)
    total = int(served.sum())
    if failures.burst is not None:
        raise ValueError("the breaker rows draw no burst")
    per_block = np.array([failures.rates(minute) for minute in block_minutes(blocks)])
    v1_rates, v2_rates = np.repeat(per_block[:, 0], served), np.repeat(per_block[:, 1], served)
    if failures.model == "input-driven":
        v1_failed = rng.random(total) < v1_rates  # the inputs that fail in every version
        extra = np.divide(v2_rates - v1_rates, 1 - v1_rates)
        v2_failed = v1_failed | ((rng.random(total) < extra) if np.any(extra > 0) else False)
    else:
        v1_failed = rng.random(total) < v1_rates
        v2_failed = rng.random(total) < v2_rates
    return ServedSequence(v1_failed, np.asarray(v2_failed, dtype=bool), served)
