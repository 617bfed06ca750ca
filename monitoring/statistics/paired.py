"""Statistics of paired (shadow) evaluation: both versions judged on the same inputs.

Pure functions over counts and sorted samples, so every decision is tested at
its boundary without a database. Every interval here is the inversion of the
test reported beside it, so a p-value below 0.05 always comes with an interval
that excludes "no difference", and the other way round.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

ALPHA = 0.05
Z_95 = 1.959963984540054


@dataclass(frozen=True)
class PairedCounts:
    """Outcomes of the executions that evaluated both versions."""

    both_succeeded: int = 0
    only_v1_failed: int = 0
    only_v2_failed: int = 0
    both_failed: int = 0
    agreed: int = 0

    @property
    def pairs(self) -> int:
        return self.both_succeeded + self.only_v1_failed + self.only_v2_failed + self.both_failed

    @property
    def v1_errors(self) -> int:
        return self.only_v1_failed + self.both_failed

    @property
    def v2_errors(self) -> int:
        return self.only_v2_failed + self.both_failed

    def error_rate(self, version: str) -> float | None:
        if not self.pairs:
            return None
        return (self.v2_errors if version == "v2" else self.v1_errors) / self.pairs


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> list[float] | None:
    """Wilson's score interval: never zero-width, sensible at 0 and at n."""
    if trials <= 0:
        return None
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return [max(0.0, centre - half), min(1.0, centre + half)]


def binomial_tail_at_least(successes: int, trials: int) -> float:
    """P(X >= successes) for X ~ Binomial(trials, 1/2)."""
    from scipy import stats  # NOTE: imported on use; it costs ~1 s at start-up

    if successes <= 0:
        return 1.0
    return float(stats.binom.sf(successes - 1, trials, 0.5))


def mcnemar(only_v1_failed: int, only_v2_failed: int) -> dict[str, Any]:
    """McNemar's exact test on the discordant pairs, two-sided (central).

    ``statistic`` is the classic continuity-corrected chi-square, for readers who
    expect it; the p-value is exact (binomial on the discordant pairs), and
    ``discordant_v2_share_ci`` (Clopper-Pearson) excludes 0.5 exactly when p < 0.05.
    """
    from scipy import stats

    discordant = only_v1_failed + only_v2_failed
    if discordant == 0:
        return {
            "statistic": 0.0,
            "p_value": 1.0,
            "worse": None,
            "discordant": 0,
            "discordant_v2_share_ci": None,
        }
    statistic = (abs(only_v1_failed - only_v2_failed) - 1) ** 2 / discordant
    lower_tail = float(stats.binom.cdf(only_v2_failed, discordant, 0.5))
    upper_tail = binomial_tail_at_least(only_v2_failed, discordant)
    p_value = min(1.0, 2 * min(lower_tail, upper_tail))
    interval = stats.binomtest(only_v2_failed, discordant, 0.5).proportion_ci(
        confidence_level=1 - ALPHA, method="exact"
    )
    worse = None
    if p_value < ALPHA:
        worse = "v2" if only_v2_failed > only_v1_failed else "v1"
    return {
        "statistic": statistic,
        "p_value": p_value,
        "worse": worse,
        "discordant": discordant,
        "discordant_v2_share_ci": [float(interval.low), float(interval.high)],
    }


def error_rate_difference(counts: PairedCounts) -> dict[str, Any]:
    """v2 - v1 error rate on the same inputs, with the interval McNemar's test implies.

    Given ``d`` discordant pairs out of ``n``, the difference is ``(2 theta - 1) d / n``
    where ``theta`` is the share of discordant pairs in which v2 failed; the
    Clopper-Pearson interval of ``theta`` maps onto it monotonically.
    """
    test = mcnemar(counts.only_v1_failed, counts.only_v2_failed)
    n = counts.pairs
    difference = (counts.only_v2_failed - counts.only_v1_failed) / n if n else None
    interval = None
    if test["discordant_v2_share_ci"] is not None and n:
        low, high = test["discordant_v2_share_ci"]
        scale = test["discordant"] / n
        interval = [(2 * low - 1) * scale, (2 * high - 1) * scale]
    elif n:
        # No discordant pair: the difference is at most the discordance rate, whose exact
        # (Clopper-Pearson) upper bound with none in n is 1 - (alpha/2)^(1/n).
        bound = 1 - (ALPHA / 2) ** (1 / n)
        interval = [-bound, bound]
    return {
        "test": "McNemar (exact, paired)",
        "p_value": test["p_value"],
        "significant": test["p_value"] < ALPHA,
        "difference": difference,
        "confidence_interval": interval,
        "confidence_level": 1 - ALPHA,
        "pairs": n,
        "only_v1_failed": counts.only_v1_failed,
        "only_v2_failed": counts.only_v2_failed,
        # The rates the difference is of: each version's on the same inputs.
        "v1_error_rate": counts.error_rate("v1"),
        "v2_error_rate": counts.error_rate("v2"),
    }


def median_ci_ranks(n: int, alpha: float = ALPHA) -> tuple[int, int] | None:
    """1-based order-statistic ranks of a distribution-free interval for the median.

    The interval ``[x_(k), x_(n-k+1)]`` covers the median with probability at least
    ``1 - alpha`` (it inverts the sign test); None when ``n`` is too small for one.
    """
    from scipy import stats

    if n <= 0:
        return None
    k = int(stats.binom.ppf(alpha / 2, n, 0.5))
    # ppf gives the smallest k with P(B <= k) >= alpha/2; the rank must have P(B < k) <= alpha/2.
    while k > 0 and float(stats.binom.cdf(k - 1, n, 0.5)) > alpha / 2:
        k -= 1
    if k < 1:
        return None
    return k, n - k + 1


def sign_test(above: int, below: int) -> float:
    """Two-sided (central) sign test: are values above 1 as likely as below?"""
    from scipy import stats

    trials = above + below
    if trials == 0:
        return 1.0
    lower = float(stats.binom.cdf(above, trials, 0.5))
    upper = binomial_tail_at_least(above, trials)
    return min(1.0, 2 * min(lower, upper))


def look_alpha(look: int, alpha: float = ALPHA) -> float:
    """The significance level of the ``look``-th look since the canary started.

    Alpha spending with ``alpha * 6 / (pi^2 k^2)`` at look ``k``: the levels sum to
    ``alpha`` over infinitely many looks, so the chance that any look of a canary
    rolls back a version that is not worse is at most ``alpha``, however long it runs.
    """
    look = max(1, look)
    return alpha * 6 / (math.pi**2 * look * look)


def v2_fails_more_paired(counts: PairedCounts, level: float) -> tuple[bool, float]:
    """One-sided exact McNemar: do the discordant pairs show v2 failing more often?"""
    discordant = counts.only_v1_failed + counts.only_v2_failed
    if discordant == 0 or counts.only_v2_failed <= counts.only_v1_failed:
        return False, 1.0
    p_value = binomial_tail_at_least(counts.only_v2_failed, discordant)
    return p_value <= level, p_value


def v2_fails_more_unpaired(
    v1_errors: int, v1_total: int, v2_errors: int, v2_total: int, level: float
) -> tuple[bool, float]:
    """One-sided Fisher's exact test, for windows without pairs.

    Exact rather than a z-test: a canary's v2 window is often small (60 requests at
    2 req/s and 10%), where the normal approximation rolls back too eagerly.
    """
    from scipy import stats

    if not v1_total or not v2_total:
        return False, 1.0
    if v2_errors / v2_total <= v1_errors / v1_total:
        return False, 1.0
    table = [[v2_errors, v2_total - v2_errors], [v1_errors, v1_total - v1_errors]]
    p_value = float(stats.fisher_exact(table, alternative="greater").pvalue)
    return p_value <= level, p_value


def sample_ratio_test(v2: int, total: int, traffic_percentage: int) -> dict[str, Any]:
    """Chi-square goodness of fit of v2's share of new contexts against the traffic split.

    A mismatch (p < 0.001) means routing or the breaker did not send the share the
    canary asked for, so its numbers describe a different population than planned.
    """
    from scipy import stats

    expected_share = traffic_percentage / 100
    result: dict[str, Any] = {
        "contexts": total,
        "v2_contexts": v2,
        "observed_share": v2 / total if total else None,
        "expected_share": expected_share,
        "p_value": None,
        "mismatch": False,
    }
    if total == 0:
        return result
    if expected_share in (0.0, 1.0):
        wrong = v2 if expected_share == 0.0 else total - v2
        result["p_value"] = 0.0 if wrong else 1.0
        result["mismatch"] = wrong > 0
        return result
    expected_v2 = total * expected_share
    expected_v1 = total - expected_v2
    if min(expected_v1, expected_v2) < 5:
        return result  # too few contexts for the chi-square approximation: no verdict
    statistic = (v2 - expected_v2) ** 2 / expected_v2 + ((total - v2) - expected_v1) ** 2 / (
        expected_v1
    )
    p_value = float(stats.chi2.sf(statistic, 1))
    result["p_value"] = p_value
    result["mismatch"] = p_value < 0.001
    return result
