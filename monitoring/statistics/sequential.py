"""Always-valid tests for the canary's decisions, from aggregate counts (SPEC 9.6).

The monitor looks every five minutes for days. A fixed-sample p-value read at every look
rejects an identical version almost surely in the end. Each test here is instead a
nonnegative (super)martingale under its null hypothesis: a likelihood ratio mixed over the
alternatives. By Ville's inequality, ``P(sup_n M_n >= 1/alpha) <= alpha``, so a decision made
when ``M_n`` first reaches ``1/alpha`` keeps level alpha however often it is read. Time is
counted in information (discordant pairs, errors, pairs), not in looks. The mixture likelihood
ratio of exchangeable observations depends on them only through their counts, so the rollups'
counts are enough; the order of the sequence is not needed.

References: Ville (1939); Robbins (1970), "Statistical methods related to the law of the
iterated logarithm", Ann. Math. Statist. 41; Howard, Ramdas, McAuliffe & Sekhon (2021),
"Time-uniform, nonparametric, nonasymptotic confidence sequences", Ann. Statist. 49(2);
Johari, Koomen, Pekelis & Walsh (2017/2022), "Peeking at A/B tests" / "Always valid
inference: continuous monitoring of A/B tests", Oper. Res. 70(3).

Only the standard library is imported at module level. numpy and scipy are imported on use,
because scipy costs ~1 s at start-up.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

ALPHA = 0.05
NON_INFERIORITY_MARGIN = 0.01
# v2_worse_test: Beta(14, 6) (mean 0.7, concentration 20) truncated to [1/2, 1]; see there.
WORSE_PRIOR = (14.0, 6.0)
# paired_difference_cs: Dirichlet(1, 1, 40) on (only v2 failed, only v1 failed, concordant).
DIFFERENCE_PRIOR = (1.0, 1.0, 40.0)
# unpaired_stratified_test: half-normal scale of the mixture over log(v2 rate / v1 rate).
CMH_PRIOR_SCALE = 1.0
QUANTILE = 0.95
MIN_TAIL_PAIRS = 20
_MAX_LOG_E = 700.0  # e-values are reported as at most e^700, so as_dict() stays finite
_BISECTIONS = 52  # the bounds' search interval is at most 2 wide: 2 * 2^-52 < 1e-15


@dataclass(frozen=True)
class SequentialResult:
    """``e_value``: the mixture likelihood ratio; ``p_value = min(1, 1/e_value)``, always valid."""

    rejected: bool
    e_value: float
    p_value: float
    discordant: int
    log_e_value: float
    alpha: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class StratifiedResult:
    """``statistic``: the one-sided CMH z (fixed-sample scale, for readers); ``p_value`` and
    ``rejected`` come from the always-valid mixture; ``information``: the CMH variance."""

    rejected: bool
    p_value: float
    statistic: float
    odds_ratio: float | None
    e_value: float
    log_e_value: float
    information: float
    errors: int
    alpha: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LatencyResult:
    """``lower_bound_ms``: lower confidence bound of v2 p95 - v1 p95 (None when no order
    statistic gives one); ``breached`` only when ``conclusive``."""

    lower_bound_ms: float | None
    difference_ms: float | None
    breached: bool
    conclusive: bool
    tail_pairs: int
    pairs: int
    alpha: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_alpha(alpha: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")


def _check_counts(**counts: int) -> None:
    for name, value in counts.items():
        if value < 0:
            raise ValueError(f"{name} must not be negative, got {value}")


def _e_and_p(log_e: float) -> tuple[float, float]:
    """The e-value (capped at e^700) and the always-valid p-value min(1, 1/e)."""
    return math.exp(min(log_e, _MAX_LOG_E)), math.exp(-max(0.0, log_e))


# --- 1. v2 fails more often on the same inputs: mixture SPRT on the discordant pairs ---------


def _log_upper_beta_integral(a: Any, b: Any) -> np.ndarray:
    """``log of the integral of p^(a-1) (1-p)^(b-1) over [1/2, 1]``, elementwise.

    ``betaln + log(betainc)``, computed on the side that does not cancel. Far on H0's side the
    regularized tail underflows. There, Laplace's method at the boundary p = 1/2 is used (t = 2p
    - 1, ``int_0^inf exp(-beta t - c t^2 / 2) dt``). Its relative error is below 1e-6 wherever it
    is used (``tests/monitoring/test_sequential.py`` compares it with quadrature).
    """
    import numpy as np
    from scipy import special

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    tail = special.betainc(b, a, 0.5)  # P(Beta(a, b) >= 1/2), computed without cancellation
    with np.errstate(divide="ignore"):
        exact = special.betaln(a, b) + np.log(tail)
    slope, curvature = b - a, np.maximum(a + b - 2.0, 1.0)
    laplace = (
        -(a + b - 1.0) * math.log(2.0)
        + 0.5 * np.log(2 * math.pi / curvature)
        + slope**2 / (2 * curvature)
        + special.log_ndtr(-slope / np.sqrt(curvature))
    )
    return np.where(tail > 1e-280, exact, laplace)


def _log_worse_lr(only_v1_failed: Any, only_v2_failed: Any) -> np.ndarray:
    """Log mixture likelihood ratio of the discordant pairs against P(v2 is the one) = 1/2."""
    a, b = WORSE_PRIOR
    k, m = only_v2_failed, only_v1_failed
    numerator = _log_upper_beta_integral(k + a, m + b)
    return (k + m) * math.log(2.0) + numerator - _log_upper_beta_integral(a, b)


def v2_worse_test(
    only_v1_failed: int, only_v2_failed: int, alpha: float = ALPHA
) -> SequentialResult:
    """Always-valid one-sided test that v2 fails more often than v1 on the same inputs.

    The test uses only the discordant pairs, where exactly one version failed. ``X = 1`` when
    v2 was that version, and H0 (v2 not worse) is ``P(X = 1) = p <= 1/2``. The statistic is
    Robbins' mixture SPRT (Howard et al. 2021; Johari et al. "Always valid inference"):
    ``LR_n = int_{1/2}^1 p^k (1-p)^(m-k) prior(dp) / (1/2)^(k+m)``. Each component
    ``p' >= 1/2`` has conditional expectation ``1 + (2p' - 1)(2p - 1) <= 1`` under any
    ``p <= 1/2``, so ``LR_n`` is a nonnegative supermartingale. This holds even when the
    discordance rate drifts over time. Concordant pairs multiply it by 1. Ville's inequality
    then gives: reject when ``LR_n >= 1/alpha``.

    The prior is Beta(14, 6) truncated to [1/2, 1] (mean 0.7, concentration 20). At a
    discordant share of 0.7 it rejects after a median of ~33 discordant pairs (90% within
    ~86). The alternatives tried were uniform Beta(1, 1) (37), Beta(7, 3) (36) and Beta(28, 12)
    (33, but slower at 0.55). Symmetric counts give ``LR <= 1``, because ``4p(1-p) <= 1``, so
    they are never rejected. Computed in log space (betaln, betainc); stable to 10^7 pairs.
    """
    _check_alpha(alpha)
    _check_counts(only_v1_failed=only_v1_failed, only_v2_failed=only_v2_failed)
    log_e = float(_log_worse_lr(only_v1_failed, only_v2_failed))
    e_value, p_value = _e_and_p(log_e)
    return SequentialResult(
        rejected=log_e >= math.log(1 / alpha),
        e_value=e_value,
        p_value=p_value,
        discordant=only_v1_failed + only_v2_failed,
        log_e_value=log_e,
        alpha=alpha,
    )


# --- 2. time-uniform confidence sequence for delta = P(v2 fails) - P(v1 fails) --------------


def _log_marginal(pairs: Any, only_v2_failed: Any, only_v1_failed: Any) -> np.ndarray:
    """Log Dirichlet-multinomial probability of one ordered sequence with these counts."""
    from scipy.special import gammaln

    a_b, a_c, a_o = DIFFERENCE_PRIOR
    concordant = pairs - only_v2_failed - only_v1_failed
    return (
        gammaln(a_b + a_c + a_o)
        - gammaln(a_b + a_c + a_o + pairs)
        + gammaln(a_b + only_v2_failed)
        - gammaln(a_b)
        + gammaln(a_c + only_v1_failed)
        - gammaln(a_c)
        + gammaln(a_o + concordant)
        - gammaln(a_o)
    )


def _profile(delta: Any, pairs: Any, only_v2_failed: Any, only_v1_failed: Any) -> np.ndarray:
    """Profile log-likelihood ``max { l(pi) : pi_b - pi_c = delta }`` of the trinomial.

    Here ``l = b log pi_b + c log pi_c + o log(1 - pi_b - pi_c)``. The inner maximiser is the
    larger root of a quadratic, so the profile is in closed form. Negative deltas use the
    mirror ``(b, c, delta) -> (c, b, -delta)``.
    """
    import numpy as np
    from scipy.special import xlogy

    delta = np.asarray(delta, dtype=float)
    negative = delta < 0
    d = np.abs(delta)
    b = np.where(negative, only_v1_failed, only_v2_failed)
    c = np.where(negative, only_v2_failed, only_v1_failed)
    n = np.asarray(pairs, dtype=float)
    o = n - b - c
    # d l / d pi_c = 0 on the line pi_b = pi_c + d: -2n x^2 + beta x + c d (1 - d) = 0.
    beta = b * (1 - d) + c * (1 - 3 * d) - 2 * o * d
    product = 8 * n * c * d * (1 - d)
    root = np.sqrt(beta**2 + product)
    with np.errstate(divide="ignore", invalid="ignore"):
        x = np.where(beta >= 0, (beta + root) / (4 * n), product / (4 * n * (root - beta)))
    x = np.clip(np.nan_to_num(x), 0.0, (1 - d) / 2)
    return xlogy(b, x + d) + xlogy(c, x) + xlogy(o, np.maximum(1 - d - 2 * x, 0.0))


def _difference_upper(
    pairs: Any, only_v2_failed: Any, only_v1_failed: Any, alpha: float
) -> np.ndarray:
    """Largest delta in the confidence sequence, elementwise (``pairs`` > 0), by bisection."""
    import numpy as np

    n, b, c = (np.asarray(v, dtype=float) for v in (pairs, only_v2_failed, only_v1_failed))
    kappa = _log_marginal(n, b, c) + math.log(alpha)
    low = (b - c) / n  # the MLE is always inside: marginal <= max likelihood
    high = np.ones_like(low)
    for _ in range(_BISECTIONS):
        middle = (low + high) / 2
        inside = _profile(middle, n, b, c) >= kappa
        low, high = np.where(inside, middle, low), np.where(inside, high, middle)
    return np.where(_profile(1.0, n, b, c) >= kappa, 1.0, high)


def paired_difference_cs(
    pairs: int, only_v1_failed: int, only_v2_failed: int, alpha: float = ALPHA
) -> tuple[float, float]:
    """Time-uniform (1 - alpha) confidence sequence for delta = P(v2 fails) - P(v1 fails).

    Each pair is trinomial: only v2 failed (pi_b), only v1 failed (pi_c), or concordant, and
    ``delta = pi_b - pi_c``. The construction is Robbins' conjugate mixture, the multinomial
    generalisation of the beta-binomial mixture of Howard et al. (2021, sec. 3 and Prop. 6,
    ``confseq``'s ``bernoulli_confidence_interval``). For every pi,
    ``M_n(pi) = DirMult_n(counts) / Mult_n(counts; pi)`` is a martingale with mean 1 under
    pi, and ``{pi : M_n(pi) < 1/alpha}`` covers the truth at every n at once (Ville). The
    set is convex, because ``log M_n`` is convex in pi. The result is its exact projection
    onto ``pi_b - pi_c``, found by bisection on the concave profile likelihood.

    This is at least as sound as the union of two beta-binomial sequences at alpha/2 (no
    union bound, the same martingale argument) and ~15% narrower: the union adds the two
    rates' widths, while the joint set feels only the variance of their difference. The
    estimand assumes that pairs are drawn from stationary traffic.

    Tuning: Dirichlet(1, 1, 40). This puts a uniform prior on which version fails a discordant
    pair and a Beta(2, 40) prior on the discordant rate (mean 4.8%, 90% of its mass within
    0.9%-11%). It was chosen over Jeffreys (1/2, 1/2, 1/2), (1, 1, 20), (2, 2, 80), (5, 5,
    200) and others, for the smallest width over 1,000-20,000 pairs at discordant rates of
    1-10%. There the half-width is ~2.2 x 1.96 sqrt(rate / n), and it shrinks like
    sqrt(rate log(n) / n). With no discordant pair the interval is about
    +-(log((n + 40)(n + 41) / 1640) + log(1/alpha)) / n, never [0, 0]. The lower end is v2's
    excess lower bound.
    """
    _check_alpha(alpha)
    _check_counts(pairs=pairs, only_v1_failed=only_v1_failed, only_v2_failed=only_v2_failed)
    if only_v1_failed + only_v2_failed > pairs:
        raise ValueError("more discordant pairs than pairs")
    if pairs == 0:
        return -1.0, 1.0
    upper = float(_difference_upper(pairs, only_v2_failed, only_v1_failed, alpha))
    lower = -float(_difference_upper(pairs, only_v1_failed, only_v2_failed, alpha))
    return lower, upper


def non_inferior(
    pairs: int,
    only_v1_failed: int,
    only_v2_failed: int,
    margin: float = NON_INFERIORITY_MARGIN,
    alpha: float = ALPHA,
) -> bool:
    """Promote's test: v2 shown to fail at most ``margin`` more often than v1 on the same inputs.

    True when the confidence sequence's upper end is below ``margin``. It is anytime-valid: if
    v2 is in truth worse by ``margin`` or more, the chance that any look ever says True is at
    most alpha.
    """
    return paired_difference_cs(pairs, only_v1_failed, only_v2_failed, alpha)[1] < margin


# --- 4. unpaired, stratified by traffic step: CMH score with an exact mixture boundary ------


@functools.cache
def _gauss_legendre() -> tuple[np.ndarray, np.ndarray]:
    import numpy as np

    return np.polynomial.legendre.leggauss(48)


def _log_rate_ratio_mixture(v2_errors: Any, errors: Any, v2_share: Any, scale: float) -> float:
    """``log int_0^inf exp(theta X - sum_k e_k log(1 - s_k + s_k e^theta)) halfnormal(theta)``.

    The integrand is ``exp(h)``, where h is concave. It is integrated with Gauss-Legendre
    pieces around the mode of h: within +-10 sigma of it, plus +-12 scale outside. The tangent
    bound puts ``h`` below ``h(mode) - (theta - mode)^2 / (2 scale^2)``, so nothing is lost
    beyond that.
    """
    import numpy as np
    from scipy import optimize, special

    total = float(np.sum(v2_errors))
    logit = np.log(v2_share) - np.log1p(-v2_share)
    log_v1_share = np.log1p(-v2_share)

    def log_h(theta: np.ndarray) -> np.ndarray:
        theta = np.asarray(theta, dtype=float)[..., None]
        cumulant = np.logaddexp(log_v1_share, np.log(v2_share) + theta)  # log(1 - s + s e^t)
        log_prior = math.log(2 / math.sqrt(2 * math.pi * scale**2)) - theta[..., 0] ** 2 / (
            2 * scale**2
        )
        return theta[..., 0] * total - cumulant @ errors + log_prior

    def slope(theta: float) -> float:
        return total - float(errors @ special.expit(theta + logit)) - theta / scale**2

    mode = 0.0 if slope(0.0) <= 0 else optimize.brentq(slope, 0.0, total * scale**2, xtol=1e-12)
    q = special.expit(mode + logit)
    sigma = 1 / math.sqrt(float(errors @ (q * (1 - q))) + 1 / scale**2)
    edges = np.array([max(0.0, mode - 12 * scale), max(0.0, mode - 10 * sigma)])
    edges = np.concatenate([edges, [mode + 10 * sigma, mode + 12 * scale]])
    nodes, weights = _gauss_legendre()
    half, centre = np.diff(edges)[:, None] / 2, (edges[1:] + edges[:-1])[:, None] / 2
    reference = float(log_h(np.array(mode)))
    values = np.exp(log_h((centre + half * nodes).ravel()) - reference)
    integral = float(np.sum((half * weights).ravel() * values))
    return reference + math.log(integral)


def unpaired_stratified_test(
    strata: list[tuple[int, int, int, int]], alpha: float = ALPHA
) -> StratifiedResult:
    """Always-valid one-sided Cochran-Mantel-Haenszel test that v2's error rate is higher.

    Each stratum is one traffic step: ``(v1_errors, v1_total, v2_errors, v2_total)``.
    Stratifying keeps the Simpson's-paradox trap out: when steps move v2's share from 10% to
    50% while the base error rate drifts, the pooled rates differ even for identical versions.

    Within a step with v2 share ``s_k``, each error is v2's with probability
    ``s r2 / (s r2 + (1 - s) r1)``. That is ``s_k`` exactly when the versions are alike, even
    if the error rate drifts during the step, and at most ``s_k`` when v2 is not worse. The
    CMH score ``S = sum_k (O_k - E_k)`` is the sum of those labels minus their null means. The
    boundary is Johari et al.'s mSPRT on that score, mixed over theta = log(r2/r1) >= 0 with a
    half-normal(``CMH_PRIOR_SCALE`` = 1) prior. It uses the score's exact null cumulant
    generating function, ``sum_k e_k log(1 - s_k + s_k e^theta)``, instead of the Gaussian
    ``theta^2 V / 2``. The Gaussian form overstates the evidence when v2's share is small and
    errors are few, which is the right-skewed start of every canary. In a simulation at a 10%
    share, looking at each of the first 300 errors, the Gaussian form rejected 5.2% of identical
    canaries and this one 1%. Every component is a supermartingale under H0 (Ville: reject
    when the mixture reaches 1/alpha). It needs no maximum information: it moves only with
    errors.

    ``s_k`` is the realised share ``v2_total / total``, which stands in for the designed share.
    This is the CMH conditioning on the margins. Given the margins, v2's errors are
    hypergeometric, and sampling without replacement is dominated in convex order by the
    binomial (Hoeffding 1963). So at any single look the e-value has a conditional mean of at
    most 1. The guarantee across looks rests on the label model above.

    statsmodels is not installed, so the score and the Mantel-Haenszel common odds ratio are
    computed here with numpy and scipy. The half-normal scale 1 was chosen over 0.3, 0.5 and 2.
    With it, rate ratios of 3 down to 1.5 at 10-50% shares are rejected after a median of
    12-80 errors on v2.
    """
    import numpy as np

    _check_alpha(alpha)
    rows = []
    for v1_errors, v1_total, v2_errors, v2_total in strata:
        _check_counts(
            v1_errors=v1_errors, v1_total=v1_total, v2_errors=v2_errors, v2_total=v2_total
        )
        if v1_errors > v1_total or v2_errors > v2_total:
            raise ValueError("a stratum has more errors than requests")
        if v1_total and v2_total and v1_errors + v2_errors:
            rows.append((v1_errors, v1_total, v2_errors, v2_total))
    if not rows:
        return StratifiedResult(False, 1.0, 0.0, None, 1.0, 0.0, 0.0, 0, alpha)
    x1, n1, x2, n2 = (np.array(column, dtype=float) for column in zip(*rows, strict=True))
    n, errors = n1 + n2, x1 + x2
    share = n2 / n
    score = float(np.sum(x2 - errors * share))
    with np.errstate(divide="ignore", invalid="ignore"):
        variance = np.where(n > 1, errors * (n - errors) * share * (1 - share) / (n - 1), 0.0)
    information = float(np.sum(variance))
    statistic = score / math.sqrt(information) if information > 0 else 0.0
    numerator, denominator = np.sum(x2 * (n1 - x1) / n), np.sum((n2 - x2) * x1 / n)
    odds_ratio = float(numerator / denominator) if denominator > 0 else None
    log_e = _log_rate_ratio_mixture(x2, errors, share, CMH_PRIOR_SCALE)
    e_value, p_value = _e_and_p(log_e)
    return StratifiedResult(
        rejected=log_e >= math.log(1 / alpha),
        p_value=p_value,
        statistic=statistic,
        odds_ratio=odds_ratio,
        e_value=e_value,
        log_e_value=log_e,
        information=information,
        errors=int(np.sum(errors)),
        alpha=alpha,
    )


# --- 5. latency: distribution-free bound on v2 p95 - v1 p95 ----------------------------------


def _quantile_ranks(n: int, quantile: float, alpha: float) -> tuple[int | None, int | None]:
    """1-based ranks ``(r, s)``: ``x_(r) <= xi_q`` and ``x_(s) >= xi_q``, each w.p. >= 1 - alpha.

    ``P(x_(r) > xi_q) = P(Bin(n, q) <= r - 1)``, and ``P(x_(s) < xi_q) <= P(Bin(n, q) >= s)``.
    This is the Clopper-Pearson / order-statistic interval of a quantile, valid for any
    distribution, ties included. ``None`` means no order statistic is a bound at this n.
    """
    from scipy import stats

    def cdf(j: int) -> float:  # P(Bin <= j)
        return float(stats.binom.cdf(j, n, quantile))

    def sf(j: int) -> float:  # P(Bin > j)
        return float(stats.binom.sf(j, n, quantile))

    j = int(stats.binom.ppf(alpha, n, quantile))  # the largest j with P(Bin <= j) <= alpha
    while j >= 0 and cdf(j) > alpha:
        j -= 1
    while j + 1 <= n and cdf(j + 1) <= alpha:
        j += 1
    t = int(stats.binom.isf(alpha, n, quantile))  # the smallest t with P(Bin > t) <= alpha
    while t >= 0 and sf(t - 1) <= alpha:
        t -= 1
    while t < n and sf(t) > alpha:
        t += 1
    return (j + 1 if j >= 0 else None), (t + 1 if t + 1 <= n else None)


def paired_latency_test(
    v1_latencies: Sequence[float],
    v2_latencies: Sequence[float],
    margin_ms: float,
    alpha: float = ALPHA,
    min_tail_pairs: int = MIN_TAIL_PAIRS,
) -> LatencyResult:
    """Latency rollback rule: breached when a lower bound of (v2 p95 - v1 p95) exceeds margin_ms.

    The lower bound is ``v2_(r) - v1_(s)``. ``v2_(r)`` is a lower (1 - alpha/2) order-statistic
    bound of v2's p95, and ``v1_(s)`` an upper one of v1's (``_quantile_ranks``, Clopper-Pearson
    ranks). By the union bound, it exceeds the true difference with probability at most alpha.
    That holds for any joint law of the two versions' latencies, paired (index i is one input)
    or not (the served requests of each version, of any two sizes), with no normality. A few
    huge stalls in either version (bursty jitter) shift it by a few ranks, never by their size.
    The bound assumes the observations of each version are exchangeable within the window. A
    burst that covers a sizable part of the 5% tail in one version only is a real p95
    regression of that window. ``difference_ms`` is the point estimate.

    A verdict needs at least ``min_tail_pairs`` observations above the p95 in each version;
    otherwise ``conclusive`` is False and ``breached`` is False. This is a fixed-window test.
    For validity across the monitor's repeated looks, pass an already spent level as ``alpha``
    (the monitor's alpha-spending level of this window); the caller spends it.
    """
    import numpy as np

    _check_alpha(alpha)
    v1, v2 = np.sort(np.asarray(v1_latencies, float)), np.sort(np.asarray(v2_latencies, float))
    if np.isnan(v1).any() or np.isnan(v2).any():
        raise ValueError("latencies must not be NaN")
    n1, n2 = len(v1), len(v2)
    if n1 == 0 or n2 == 0:
        return LatencyResult(None, None, False, False, 0, min(n1, n2), alpha)
    rank1 = math.ceil(round(QUANTILE * n1, 9))  # the p95 order statistic (inverse of the ECDF)
    rank2 = math.ceil(round(QUANTILE * n2, 9))
    tail_pairs = min(n1 - rank1, n2 - rank2)
    lower_rank, _ = _quantile_ranks(n2, QUANTILE, alpha / 2)
    _, upper_rank = _quantile_ranks(n1, QUANTILE, alpha / 2)
    lower_bound = None
    if lower_rank is not None and upper_rank is not None:
        lower_bound = float(v2[lower_rank - 1] - v1[upper_rank - 1])
    conclusive = lower_bound is not None and tail_pairs >= min_tail_pairs
    return LatencyResult(
        lower_bound_ms=lower_bound,
        difference_ms=float(v2[rank2 - 1] - v1[rank1 - 1]),
        breached=bool(conclusive and lower_bound is not None and lower_bound > margin_ms),
        conclusive=conclusive,
        tail_pairs=tail_pairs,
        pairs=min(n1, n2),
        alpha=alpha,
    )


# --- 6. unpaired non-inferiority: a confidence sequence per version ---------------------------

# Beta(1, 19) mixture: centred on a 5% error rate, the guide's threshold.
BERNOULLI_PRIOR = (1.0, 19.0)


def _bernoulli_log_ratio(p: float, errors: int, trials: int) -> float:
    """log of the beta-binomial mixture likelihood ratio against the point ``p``."""
    from scipy.special import betaln

    a, b = BERNOULLI_PRIOR
    mixture = betaln(a + errors, b + trials - errors) - betaln(a, b)
    point = (errors * math.log(p) if errors else 0.0) + (
        (trials - errors) * math.log1p(-p) if trials > errors else 0.0
    )
    return float(mixture - point)


def bernoulli_cs(errors: int, trials: int, alpha: float = ALPHA) -> tuple[float, float]:
    """A time-uniform confidence sequence for a rate: ``{p : mixture LR(p) < 1/alpha}``.

    The conjugate beta-binomial mixture of Howard et al. (2021, section 3.3; the ``confseq``
    package's ``bernoulli_confidence_interval``). The set is an interval because the log
    ratio is convex in ``p``; each end is found by bisection around the estimate.
    """
    _check_alpha(alpha)
    _check_counts(errors=errors, trials=trials)
    if trials == 0:
        return 0.0, 1.0
    threshold = math.log(1 / alpha)
    estimate = min(max(errors / trials, 1e-12), 1 - 1e-12)

    def outside(p: float) -> bool:
        return _bernoulli_log_ratio(p, errors, trials) >= threshold

    def search(inside: float, out: float) -> float:
        for _ in range(_BISECTIONS):
            middle = (inside + out) / 2
            inside, out = (inside, middle) if outside(middle) else (middle, out)
        return inside

    lower = 0.0 if not outside(1e-12) else search(estimate, 1e-12)
    upper = 1.0 if not outside(1 - 1e-12) else search(estimate, 1 - 1e-12)
    return lower, upper


def unpaired_difference_cs(
    v1_errors: int, v1_trials: int, v2_errors: int, v2_trials: int, alpha: float = ALPHA
) -> tuple[float, float]:
    """v2 - v1 error rate without pairs: each version's sequence at alpha/2 (union bound)."""
    v1_low, v1_high = bernoulli_cs(v1_errors, v1_trials, alpha / 2)
    v2_low, v2_high = bernoulli_cs(v2_errors, v2_trials, alpha / 2)
    return v2_low - v1_high, v2_high - v1_low


def clopper_pearson_upper(successes: int, trials: int, alpha: float) -> float:
    """One-sided exact (Clopper-Pearson) upper bound of a binomial proportion at level 1 - alpha."""
    from scipy import stats

    _check_alpha(alpha)
    _check_counts(successes=successes, trials=trials)
    if successes > trials:
        raise ValueError("more successes than trials")
    if successes == trials:
        return 1.0
    return float(stats.beta.ppf(1 - alpha, successes + 1, trials - successes))
