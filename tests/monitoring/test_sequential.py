"""The always-valid statistics: boundaries, calibration under peeking, power, numerics.

Pure tests: no database. Simulations draw the counts of each block of pairs between two
looks from a multinomial with a fixed seed. That is exactly the law of the counts the
statistics read: they depend on the sequence only through its counts. The monitor is mimicked
by looking after every block and counting a sequence as rejected if ANY look rejected.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, stats
from scipy.special import xlogy

from monitoring.statistics import sequential as sq
from monitoring.statistics.sequential import (
    bernoulli_cs,
    clopper_pearson_upper,
    non_inferior,
    paired_difference_cs,
    paired_latency_test,
    unpaired_difference_cs,
    unpaired_stratified_test,
    v2_worse_test,
)

ALPHA = 0.05
SEQUENCES = 2_000
LOOK_EVERY = 50
MAX_PAIRS = 20_000
# Monte-Carlo tolerance: two standard errors of a rate equal to alpha over SEQUENCES runs.
TOLERANCE = 2 * math.sqrt(ALPHA * (1 - ALPHA) / SEQUENCES)


def independent(v1_rate: float, v2_rate: float) -> tuple[float, float]:
    """(P(only v2 failed), P(only v1 failed)) when each version fails on its own."""
    return v2_rate * (1 - v1_rate), v1_rate * (1 - v2_rate)


def cumulative_counts(
    seed: int,
    probabilities: list[tuple[float, float]],
    sequences: int = SEQUENCES,
    block: int = LOOK_EVERY,
    max_pairs: int = MAX_PAIRS,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pairs, only_v2_failed, only_v1_failed) at every look, shape (sequences, looks).

    ``probabilities`` is a list of phases, each ``(p_only_v2, p_only_v1)``, of equal length in
    looks (time-varying traffic).
    """
    rng = np.random.default_rng(seed)
    looks = max_pairs // block
    per_phase = looks // len(probabilities)
    blocks = []
    for p_b, p_c in probabilities:
        draws = rng.multinomial(block, [p_b, p_c, 1 - p_b - p_c], size=(sequences, per_phase))
        blocks.append(draws)
    counts = np.cumsum(np.concatenate(blocks, axis=1), axis=1)
    pairs = block * np.arange(1, counts.shape[1] + 1)
    return np.broadcast_to(pairs, counts.shape[:2]), counts[..., 0], counts[..., 1]


def ever_excluded(delta: float, pairs: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Whether the confidence sequence excludes ``delta`` at some look, per sequence.

    The set is convex with a concave profile, so delta is outside exactly when its profile
    log-likelihood is below the threshold (checked against the bounds themselves below).
    """
    kappa = sq._log_marginal(pairs, b, c) + math.log(ALPHA)
    return (sq._profile(np.full(pairs.shape, delta), pairs, b, c) < kappa).any(axis=1)


# --- v2_worse_test: boundaries -------------------------------------------------------------


def test_no_discordant_pair_is_no_evidence():
    result = v2_worse_test(0, 0)
    assert (result.rejected, result.p_value, result.e_value, result.discordant) == (
        False,
        1.0,
        1.0,
        0,
    )


def test_a_clear_regression_is_rejected_and_more_evidence_means_a_smaller_p_value():
    clear = v2_worse_test(only_v1_failed=5, only_v2_failed=40)
    assert clear.rejected and clear.p_value < 1e-4 and clear.discordant == 45
    assert clear.p_value == pytest.approx(1 / clear.e_value)
    p_values = [v2_worse_test(5, k).p_value for k in (10, 15, 20, 30)]
    assert p_values == sorted(p_values, reverse=True)
    # the level is read at its boundary: 1/alpha exactly
    assert v2_worse_test(5, 15, alpha=0.5).rejected is (v2_worse_test(5, 15).e_value >= 2)


def test_symmetric_counts_are_never_rejected_at_any_size_up_to_a_million():
    half = np.unique(np.geomspace(1, 500_000, 3_000).astype(int))
    log_lr = sq._log_worse_lr(half, half)
    assert np.all(log_lr <= 0) and np.all(np.isfinite(log_lr))
    for k in (1, 10, 1_000, 500_000):
        result = v2_worse_test(k, k)
        assert not result.rejected and result.p_value == 1.0
    # v1 failing more often is no evidence against v2 either
    assert v2_worse_test(only_v1_failed=400, only_v2_failed=10).p_value == 1.0


@pytest.mark.parametrize(
    ("only_v1", "only_v2"),
    [(5, 40), (30, 30), (4_000, 5_000), (3_000, 100), (20_000, 10), (1_000_000, 0), (10**7, 10**5)],
)
def test_mixture_likelihood_ratio_matches_quadrature(only_v1, only_v2):
    """Against direct integration of the mixture, including where the Laplace branch is used."""
    a, b = sq.WORSE_PRIOR
    big_a, big_b = only_v2 + a, only_v1 + b

    def log_f(t):  # p = (1 + t) / 2
        return (big_a - 1) * math.log1p(t) + (big_b - 1) * math.log1p(-t)

    grid = np.concatenate([np.linspace(0, 1 - 1e-12, 20_001), np.geomspace(1e-9, 0.1, 2_001)])
    values = (big_a - 1) * np.log1p(grid) + (big_b - 1) * np.log1p(-grid)
    peak, mode = values.max(), grid[values.argmax()]
    scale = 1 / max(abs(big_b - big_a), math.sqrt(big_a + big_b))
    points = sorted({min(max(mode + j * scale, 1e-12), 1 - 1e-12) for j in (-20, -1, 0, 1, 20)})
    integral, _ = integrate.quad(
        lambda t: math.exp(log_f(t) - peak), 0, 1, points=points, limit=1_000, epsrel=1e-12
    )
    prior, _ = integrate.quad(lambda p: p ** (a - 1) * (1 - p) ** (b - 1), 0.5, 1, epsrel=1e-13)
    expected = (
        (only_v1 + only_v2) * math.log(2)
        - (big_a + big_b - 1) * math.log(2)
        + peak
        + math.log(integral)
        - math.log(prior)
    )
    assert float(sq._log_worse_lr(only_v1, only_v2)) == pytest.approx(expected, abs=1e-6)


def test_invalid_input_is_refused():
    with pytest.raises(ValueError):
        v2_worse_test(-1, 3)
    with pytest.raises(ValueError):
        v2_worse_test(1, 3, alpha=0)
    with pytest.raises(ValueError):
        paired_difference_cs(10, 6, 5)
    with pytest.raises(ValueError):
        unpaired_stratified_test([(5, 4, 0, 10)])
    with pytest.raises(ValueError):
        paired_latency_test([1.0, float("nan")], [1.0], margin_ms=1.0)


def test_results_serialise():
    assert set(v2_worse_test(1, 9).as_dict()) >= {"rejected", "e_value", "p_value", "discordant"}
    assert set(unpaired_stratified_test([(1, 100, 5, 100)]).as_dict()) >= {
        "rejected",
        "p_value",
        "statistic",
        "odds_ratio",
    }
    latency = paired_latency_test([1.0] * 500, [2.0] * 500, margin_ms=0.5).as_dict()
    assert latency["breached"] and latency["tail_pairs"] == 25


# --- calibration under peeking: 2,000 sequences x 400 looks (every 50 pairs, to 20,000) -----

NULLS = {
    # both versions fail 5% of inputs, independently (the most discordant pairs)
    "independent 5%": [independent(0.05, 0.05)],
    # deterministic rules: both fail the same inputs; rare discordance that rises 10x midway
    "input-driven, drifting": [(0.002, 0.002), (0.02, 0.02)],
    # v2 better than v1: the composite null's interior
    "v2 better (2% vs 5%)": [independent(0.05, 0.02)],
}


@pytest.mark.parametrize("null", NULLS)
def test_v2_worse_test_keeps_alpha_however_often_it_is_read(null):
    """Measured share of sequences rejected at any of the 400 looks: independent 5%: 3.0%;
    input-driven, drifting: 3.7%; v2 better: 0. A fixed-level one-sided McNemar test at 0.05,
    read at the same looks, rejects 34% and 29% of the first two."""
    pairs, b, c = cumulative_counts(seed=11, probabilities=NULLS[null])
    rejected = (sq._log_worse_lr(c, b) >= math.log(1 / ALPHA)).any(axis=1)
    assert rejected.mean() <= ALPHA + TOLERANCE
    # the vectorised evaluation is the public function's
    for i in range(5):
        j = pairs.shape[1] - 1
        assert v2_worse_test(int(c[i, j]), int(b[i, j])).log_e_value == pytest.approx(
            float(sq._log_worse_lr(c[i, j], b[i, j]))
        )


def test_peeking_at_a_fixed_level_test_would_not_keep_alpha():
    """The reason for all this: one-sided exact McNemar at 0.05, read at every look."""
    _, b, c = cumulative_counts(seed=11, probabilities=NULLS["independent 5%"], sequences=500)
    p_value = stats.binom.sf(b - 1, b + c, 0.5)
    assert (p_value <= ALPHA).any(axis=1).mean() > 4 * ALPHA


@pytest.mark.parametrize(
    ("truth", "rates"),
    [
        ("identical, independent 5%", (0.05, 0.05)),
        ("v2 worse 2% -> 5%", (0.02, 0.05)),
        ("v2 better 5% -> 2%", (0.05, 0.02)),
    ],
)
def test_confidence_sequence_covers_the_true_difference_at_every_look(truth, rates):
    """Measured share of sequences excluding the truth at any of 400 looks: 0.4%, 0.6%, 0.7%."""
    p_b, p_c = independent(*rates)
    pairs, b, c = cumulative_counts(seed=23, probabilities=[(p_b, p_c)])
    delta = p_b - p_c
    assert (ever_excluded(delta, pairs, b, c)).mean() <= ALPHA + TOLERANCE


def test_the_exclusion_criterion_is_the_public_bounds():
    """``ever_excluded`` reads the same set as ``paired_difference_cs`` returns."""
    rng = np.random.default_rng(5)
    for _ in range(60):
        n = int(rng.integers(1, 30_000))
        b, c = (int(x) for x in rng.multinomial(n, [0.04, 0.03, 0.93])[:2])
        low, high = paired_difference_cs(n, c, b)
        kappa = sq._log_marginal(n, b, c) + math.log(ALPHA)
        for delta, expected in [
            (low - 1e-9, False),
            (low + 1e-9, True),
            ((low + high) / 2, True),
            (high - 1e-9, True),
            (high + 1e-9, False),
        ]:
            if -1 < delta < 1:
                assert bool(sq._profile(delta, n, b, c) >= kappa) is expected


# --- the confidence sequence: boundaries and an independent computation ----------------------


def test_no_discordant_pair_still_gives_an_interval_that_narrows_with_pairs():
    widths = []
    for n in (100, 1_000, 10_000, 100_000):
        low, high = paired_difference_cs(n, 0, 0)
        assert low == -high and 0 < high < 1
        widths.append(high)
    assert widths == sorted(widths, reverse=True)
    assert paired_difference_cs(1_000, 0, 0)[1] == pytest.approx(0.00944, abs=1e-5)
    assert paired_difference_cs(0, 0, 0) == (-1.0, 1.0)


def test_width_shrinks_like_root_rate_log_n_over_n():
    """Half-width / sqrt(rate log(n) / n) stays within a factor 1.2 from 1,000 to 1,000,000."""
    ratios = []
    for n in (1_000, 10_000, 100_000, 1_000_000):
        each = int(0.02 * n)  # 4% discordant, symmetric
        low, high = paired_difference_cs(n, each, each)
        assert low == pytest.approx(-high)
        ratios.append(high / math.sqrt(0.04 * math.log(n) / n))
    assert max(ratios) / min(ratios) < 1.2


def brute_force_bounds(n: int, only_v1: int, only_v2: int) -> tuple[float, float, float]:
    """Min and max of pi_b - pi_c over grid points of {pi : M_n(pi) < 1/alpha}, each found by
    a search over the whole simplex and then zooms around the best point; and the
    resolution of the last grid in pi_b - pi_c."""
    kappa = float(sq._log_marginal(n, only_v2, only_v1)) + math.log(ALPHA)
    extremes, resolution = [], 0.0
    for sign in (-1, 1):
        box, best = (0.0, 1.0, 0.0, 1.0), None
        for _ in range(16):
            p_b = np.linspace(box[0], box[1], 401)[:, None]
            p_c = np.linspace(box[2], box[3], 401)[None, :]
            rest = 1 - p_b - p_c
            with np.errstate(all="ignore"):
                loglik = (
                    xlogy(only_v2, p_b)
                    + xlogy(only_v1, p_c)
                    + xlogy(n - only_v1 - only_v2, np.where(rest >= 0, rest, np.nan))
                )
            score = np.where(loglik >= kappa, sign * (p_b - p_c), -np.inf)
            i, j = np.unravel_index(np.argmax(score), score.shape)
            best = float(p_b[i, 0] - p_c[0, j])
            step_b, step_c = (box[1] - box[0]) / 400, (box[3] - box[2]) / 400
            box = (
                max(0.0, p_b[i, 0] - 50 * step_b),
                min(1.0, p_b[i, 0] + 50 * step_b),
                max(0.0, p_c[0, j] - 50 * step_c),
                min(1.0, p_c[0, j] + 50 * step_c),
            )
        extremes.append(best)
        resolution = max(resolution, step_b + step_c)
    return extremes[0], extremes[1], resolution


@pytest.mark.parametrize(
    ("n", "only_v1", "only_v2"),
    [
        (1_000, 10, 10),
        (1_000, 0, 0),
        (200, 3, 17),
        (5_000, 60, 140),
        (20_000, 490, 190),
        (10, 0, 10),
    ],
)
def test_bounds_match_a_brute_force_search_of_the_confidence_set(n, only_v1, only_v2):
    low, high = paired_difference_cs(n, only_v1, only_v2)
    grid_low, grid_high, resolution = brute_force_bounds(n, only_v1, only_v2)
    # grid points are inside the set: their extremes are inside the bounds, and close to them
    assert low <= grid_low + 1e-12 and grid_high <= high + 1e-12
    assert resolution < 1e-10
    assert grid_low - low < 1e-8 and high - grid_high < 1e-8


# --- power ---------------------------------------------------------------------------------


def test_v2_at_5_percent_against_2_percent_is_rejected_within_a_few_thousand_pairs():
    """Measured: median 450 pairs (30 discordant); 91% of runs by 1,000 pairs, 99.6% by 2,000."""
    pairs, b, c = cumulative_counts(
        seed=3, probabilities=[independent(0.02, 0.05)], sequences=500, max_pairs=5_000
    )
    rejected = sq._log_worse_lr(c, b) >= math.log(1 / ALPHA)
    first = np.where(rejected.any(axis=1), pairs[0][rejected.argmax(axis=1)], np.inf)
    assert np.mean(first <= 2_000) >= 0.95
    assert np.median(first) <= 1_000


def test_identical_versions_become_non_inferior_after_a_feasible_number_of_pairs():
    """2% errors, margin 0.01: 940 pairs when both fail the same inputs (no discordant pair);
    when each fails on its own (3.9% discordant), measured: median 6,000 pairs, 90% by 10,550,
    99.5% by 20,000."""
    n = next(n for n in range(100, 5_000, 10) if non_inferior(n, 0, 0))
    assert n == 940
    pairs, b, c = cumulative_counts(
        seed=8,
        probabilities=[independent(0.02, 0.02)],
        sequences=200,
        block=500,
        max_pairs=20_000,
    )
    upper = sq._difference_upper(pairs, b, c, ALPHA)
    first = np.where((upper < 0.01).any(axis=1), pairs[0][(upper < 0.01).argmax(axis=1)], np.inf)
    assert 4_000 <= np.median(first) <= 8_000
    assert np.mean(first <= 20_000) >= 0.95
    i = 0
    j = int(np.argmax(upper[i] < 0.01))
    assert non_inferior(int(pairs[i, j]), int(c[i, j]), int(b[i, j]))
    assert not non_inferior(int(pairs[i, j - 1]), int(c[i, j - 1]), int(b[i, j - 1]))


def test_a_version_worse_by_three_points_is_never_non_inferior():
    pairs, b, c = cumulative_counts(seed=9, probabilities=[independent(0.02, 0.05)])
    # upper < 0.01 exactly when 0.01 lies above the set: MLE below it and 0.01 excluded
    kappa = sq._log_marginal(pairs, b, c) + math.log(ALPHA)
    below = ((b - c) / pairs < 0.01) & (
        sq._profile(np.full(pairs.shape, 0.01), pairs, b, c) < kappa
    )
    assert not below.any()
    assert not non_inferior(1_000, 20, 50)


# --- CMH across traffic steps --------------------------------------------------------------

STEPS = [(0.10, 0.01), (0.25, 0.03), (0.50, 0.06)]  # (v2 share, base error rate) per step


def canary_looks(seed, canaries, v2_ratio=1.0, requests_per_look=2_500, looks_per_step=8):
    """Every look's strata for each simulated canary; the base rate also drifts within a step."""
    rng = np.random.default_rng(seed)
    for _ in range(canaries):
        strata, looks = [], []
        for share, base in STEPS:
            counts = np.zeros(4, dtype=int)
            for look in range(looks_per_step):
                rate = base * (0.5 + look / looks_per_step)  # x0.5 .. x1.45 within the step
                v2_total = rng.binomial(requests_per_look, share)
                v1_total = requests_per_look - v2_total
                counts += [
                    rng.binomial(v1_total, rate),
                    v1_total,
                    rng.binomial(v2_total, min(1.0, rate * v2_ratio)),
                    v2_total,
                ]
                looks.append([*strata, tuple(int(x) for x in counts)])
            strata.append(tuple(int(x) for x in counts))
        yield looks


def test_cmh_a_a_canary_with_moving_steps_and_drifting_rate_keeps_alpha():
    """Simpson's setup, looked at every 2,500 requests. Measured: the stratified test rejected
    1.0% of these 300 A/A canaries at some look (1.3% of 1,000 with another seed); the same
    counts pooled into one table reject 100%."""
    stratified, pooled = [], []
    for looks in canary_looks(seed=1, canaries=300):
        stratified.append(any(unpaired_stratified_test(strata).rejected for strata in looks))
        total = np.sum(looks[-1], axis=0)
        pooled.append(unpaired_stratified_test([tuple(int(x) for x in total)]).rejected)
    assert np.mean(stratified) <= ALPHA + 2 * math.sqrt(ALPHA * (1 - ALPHA) / 300)
    assert np.mean(pooled) > 0.9


def test_cmh_rejects_a_real_regression():
    """v2 fails 1.5x as often. Measured: all 40 canaries rejected, at a median look of 10.5 of
    24, all of them within the second step (looks 9-16)."""
    rejected_at = []
    for looks in canary_looks(seed=2, canaries=40, v2_ratio=1.5):
        hits = [i for i, strata in enumerate(looks) if unpaired_stratified_test(strata).rejected]
        rejected_at.append(hits[0] if hits else math.inf)
    assert np.all(np.isfinite(rejected_at))
    assert np.median(rejected_at) < 16


def test_cmh_boundaries_and_estimates():
    nothing = unpaired_stratified_test([])
    assert (nothing.rejected, nothing.p_value, nothing.odds_ratio) == (False, 1.0, None)
    # strata without errors or without one version carry no information
    assert unpaired_stratified_test([(0, 100, 0, 100), (3, 10, 0, 0)]).information == 0
    strata = [(20, 900, 10, 100), (50, 1_000, 60, 1_000)]
    result = unpaired_stratified_test(strata)
    # Mantel-Haenszel by hand: sum(a d / n) / sum(b c / n), a = v2 errors, d = v1 successes
    numerator = 10 * 880 / 1_000 + 60 * 950 / 2_000
    denominator = 90 * 20 / 1_000 + 940 * 50 / 2_000
    assert result.odds_ratio == pytest.approx(numerator / denominator)
    expected = (10 - 30 * 0.1) + (60 - 110 * 0.5)
    variance = 30 * 970 * 0.09 / 999 + 110 * 1_890 * 0.25 / 1_999
    assert result.statistic == pytest.approx(expected / math.sqrt(variance))
    assert result.p_value == pytest.approx(min(1.0, 1 / result.e_value))


@pytest.mark.parametrize(
    "strata",
    [[(10, 1_000, 5, 100)], [(100, 9_000, 30, 1_000), (300, 5_000, 400, 5_000)], [(0, 10, 10, 10)]],
)
def test_cmh_mixture_matches_quadrature(strata):
    x1, n1, x2, n2 = (np.array(column, dtype=float) for column in zip(*strata, strict=True))
    errors, share = x1 + x2, n2 / (n1 + n2)

    def integrand(theta):
        log_lr = theta * x2.sum() - np.sum(errors * np.log1p(share * np.expm1(theta)))
        return math.exp(log_lr) * 2 * stats.norm.pdf(theta, scale=sq.CMH_PRIOR_SCALE)

    value, _ = integrate.quad(integrand, 0, 20, limit=500, epsrel=1e-12)
    assert unpaired_stratified_test(strata).log_e_value == pytest.approx(math.log(value), abs=1e-8)


# --- latency ---------------------------------------------------------------------------------


def latency_window(rng, pairs, v2_shift_ms=0.0, bursts=2.0):
    """~1 ms evaluations of the same inputs, with bursty heavy-tailed jitter in each version:
    a Poisson number of stalls (mean ``bursts``) of Pareto size on 20 consecutive requests,
    and 0.5% isolated 50-500 ms outliers."""
    cost = rng.lognormal(mean=0.0, sigma=0.25, size=pairs)  # the input's own cost, shared
    versions = []
    for shift in (0.0, v2_shift_ms):
        latency = cost * rng.lognormal(0.0, 0.05, size=pairs) + shift
        for _ in range(rng.poisson(bursts)):
            start = int(rng.integers(0, pairs))
            latency[start : start + 20] += rng.pareto(1.5) * 5
        outliers = rng.random(pairs) < 0.005
        latency[outliers] += rng.uniform(50, 500, size=int(outliers.sum()))
        versions.append(latency)
    return versions


def test_latency_a_a_with_bursty_jitter_rarely_breaches():
    """Windows of 2,000 pairs, margin 1 ms. Measured: 0.3% breached of 1,000 windows (1 of
    the 300 here), where comparing the two p95s alone would breach in 1.4%."""
    rng = np.random.default_rng(17)
    results = [paired_latency_test(*latency_window(rng, 2_000), margin_ms=1.0) for _ in range(300)]
    assert all(result.conclusive for result in results)
    assert np.mean([result.breached for result in results]) <= 0.01


def test_latency_regression_of_two_ms_is_breached_and_of_thirty_microseconds_never():
    """+2 ms, measured: 95.5% of windows breached with the bursts (the others are windows in
    which v1 had a large share of its requests stalled), and all of them without bursts."""
    rng = np.random.default_rng(19)
    slower = [paired_latency_test(*latency_window(rng, 2_000, 2.0), 1.0) for _ in range(200)]
    assert np.mean([result.breached for result in slower]) >= 0.9
    steady = [paired_latency_test(*latency_window(rng, 2_000, 2.0, 0), 1.0) for _ in range(50)]
    assert all(result.breached and result.lower_bound_ms > 1.0 for result in steady)
    barely = [paired_latency_test(*latency_window(rng, 2_000, 0.03), 1.0) for _ in range(300)]
    assert not any(result.breached for result in barely)


def test_latency_needs_enough_pairs_in_the_tail():
    rng = np.random.default_rng(23)
    few = paired_latency_test(*latency_window(rng, 399, 5.0, bursts=0), margin_ms=1.0)
    assert (few.tail_pairs, few.conclusive, few.breached) == (19, False, False)
    assert few.lower_bound_ms > 1.0  # the bound exists; there are too few tail pairs to act
    enough = paired_latency_test(*latency_window(rng, 400, 5.0, bursts=0), margin_ms=1.0)
    assert (enough.tail_pairs, enough.conclusive, enough.breached) == (20, True, True)
    empty = paired_latency_test([], [], margin_ms=1.0)
    assert (empty.conclusive, empty.lower_bound_ms) == (False, None)


def test_latency_lower_bound_covers_the_true_p95_difference():
    """Exponential latencies with known p95s (v2 slower by 1 ms on 20% of inputs), paired
    through a shared input cost. Measured: the bound exceeded the truth in none of 1,000
    windows of 400 pairs (nor of 3,000 with another seed). The union of two one-sided 2.5%
    bounds is conservative; the ranks' exactness is tested below."""
    from scipy import optimize

    rng = np.random.default_rng(29)
    v1_p95 = -math.log(0.05)

    def v2_cdf(x):  # mixture: 80% as v1, 20% 1 ms slower
        return 0.8 * (1 - math.exp(-x)) + 0.2 * (1 - math.exp(-max(x - 1, 0)))

    v2_p95 = optimize.brentq(lambda x: v2_cdf(x) - 0.95, 0, 20)
    above = 0
    for _ in range(1_000):
        v1 = rng.exponential(size=400)
        v2 = v1 + (rng.random(400) < 0.2)  # the same input, 1 ms slower on 20% of inputs
        bound = paired_latency_test(v1, v2, margin_ms=0.0).lower_bound_ms
        above += bound > v2_p95 - v1_p95
    assert above / 1_000 <= ALPHA


def test_the_lower_end_shows_v2s_excess():
    """v2 2% -> 5% at 5,000 pairs: v2's excess is at least ~1.3 points, of a true 3."""
    low, high = paired_difference_cs(5_000, 95, 245)
    assert 0.01 < low < 0.03 < high
    assert not non_inferior(5_000, 95, 245)


@pytest.mark.parametrize("n", [20, 100, 400, 2_000, 10_000])
def test_quantile_ranks_are_exact_order_statistic_bounds(n):
    lower, upper = sq._quantile_ranks(n, 0.95, 0.025)
    if lower is not None:
        assert stats.binom.cdf(lower - 1, n, 0.95) <= 0.025 < stats.binom.cdf(lower, n, 0.95)
    if upper is not None:
        assert stats.binom.sf(upper - 1, n, 0.95) <= 0.025 < stats.binom.sf(upper - 2, n, 0.95)
    # the extreme order statistics are the last bounds that exist
    assert (lower is not None) is (0.05**n <= 0.025)
    assert (upper is not None) is (0.95**n <= 0.025)


def test_clopper_pearson_upper():
    assert clopper_pearson_upper(0, 100, 0.05) == pytest.approx(1 - 0.05 ** (1 / 100))
    assert clopper_pearson_upper(100, 100, 0.05) == 1.0
    bounds = [clopper_pearson_upper(5, n, 0.05) for n in (10, 100, 1_000)]
    assert bounds == sorted(bounds, reverse=True)
    # it is the exact one-sided bound: P(X <= 5 | p = bound) = alpha
    assert stats.binom.cdf(5, 100, bounds[1]) == pytest.approx(0.05)


def test_unpaired_latency_bound_takes_samples_of_two_sizes() -> None:
    """The served requests of each version (no pairs): the bound uses each one's own ranks."""
    rng = np.random.default_rng(3)
    slower = paired_latency_test(rng.lognormal(0, 0.3, 3000), rng.lognormal(0, 0.3, 2000) + 2, 1.0)
    assert slower.conclusive and slower.breached and slower.lower_bound_ms < 2.0
    same = paired_latency_test(rng.lognormal(0, 0.3, 3000), rng.lognormal(0, 0.3, 400), 1.0)
    assert same.conclusive and not same.breached
    thin = paired_latency_test(rng.lognormal(0, 0.3, 3000), rng.lognormal(0, 0.3, 300), 1.0)
    assert not thin.conclusive  # 15 observations above v2's p95: fewer than 20


def test_bernoulli_confidence_sequence_covers_under_continuous_monitoring() -> None:
    """Looking after every 25 draws up to 5,000, the true rate leaves the sequence at most
    alpha of the time (here far less: the mixture bound is conservative)."""
    rng = np.random.default_rng(11)
    misses = 0
    for _ in range(200):
        draws = rng.random(5_000) < 0.05
        cumulative = np.cumsum(draws)
        for n in range(25, 5_001, 250):
            low, high = bernoulli_cs(int(cumulative[n - 1]), n)
            if not low <= 0.05 <= high:
                misses += 1
                break
    assert misses / 200 <= 0.05
    assert bernoulli_cs(0, 0) == (0.0, 1.0)
    low, high = bernoulli_cs(0, 1_000)
    assert low == 0.0 and 0 < high < 0.01


def test_unpaired_difference_shows_non_inferiority_only_with_evidence() -> None:
    assert unpaired_difference_cs(200, 10_000, 200, 10_000)[1] < 0.012
    assert unpaired_difference_cs(4, 200, 4, 200)[1] > 0.05  # 200 requests prove little
    assert unpaired_difference_cs(200, 10_000, 500, 10_000)[0] > 0  # v2 worse: excluded
