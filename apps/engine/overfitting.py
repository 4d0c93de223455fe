"""How much of a study's best result is luck: the deflated Sharpe ratio and the probability of backtest
overfitting (issue 10), pure numpy + the standard library (no scipy: the normal distribution is
`statistics.NormalDist`).

Both take PER-PERIOD figures (daily returns, daily Sharpe ratios: mean / std of the daily returns, NOT the
lab's x sqrt(365) annualised Sharpe): the formulas are stated per observation, and T below is the number of
observations behind each Sharpe ratio. Divide an annualised Sharpe by sqrt(365) before passing it.
"""

import dataclasses
import itertools
import math
from collections.abc import Sequence
from statistics import NormalDist
from typing import Any

import numpy as np

EULER_GAMMA = 0.5772156649015329  # the Euler-Mascheroni constant of the expected-maximum formula
_N01 = NormalDist()
# combinations are enumerated in full; C(16, 8) = 12 870 is instant, C(24, 12) = 2.7 million is not
MAX_SPLITS = 20
_CHUNK_CELLS = 1_000_000  # combinations x configs per chunk of the PBO computation (8 MB per float matrix)


def _f(x: Any) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def sharpe_moments(returns: Sequence[float]) -> tuple[float, float, float, int]:
    """(per-period Sharpe, skewness, kurtosis, T) of a return series: Sharpe = mean / std (ddof=1), the lab's
    Sharpe before its x sqrt(365); skewness = m3 / m2^1.5 and kurtosis = m4 / m2^2 from the central moments
    m_k = mean((r - mean)^k) (kurtosis is Pearson's: 3 for a normal distribution, not the excess). NaN where
    undefined (T < 2, flat returns)."""
    r = np.asarray(returns, dtype=np.float64)
    r = r[np.isfinite(r)]
    n = len(r)
    if n < 2:
        return math.nan, math.nan, math.nan, n
    d = r - r.mean()
    m2 = float(np.mean(d ** 2))
    sd = float(r.std(ddof=1))
    if m2 == 0 or sd == 0:
        return math.nan, math.nan, math.nan, n
    return float(r.mean() / sd), float(np.mean(d ** 3) / m2 ** 1.5), float(np.mean(d ** 4) / m2 ** 2), n


def expected_max_sharpe(sr_variance: float, n_trials: int) -> float:
    """E[max of N Sharpe ratios] under the null that every trial's true Sharpe is 0 (Bailey & López de Prado
    2014, eq. 6 after Bailey, Borwein, López de Prado & Zhu 2014):

        SR0 = sqrt(V) x ((1 - γ) Z⁻¹(1 - 1/N) + γ Z⁻¹(1 - 1/(N e)))

    V = the variance of the trials' Sharpe ratios, γ = Euler-Mascheroni, Z⁻¹ = the standard normal quantile.
    One trial has nothing to be lucky against: SR0 = 0."""
    if n_trials < 1:
        raise ValueError(f"n_trials must be >= 1, got {n_trials}")
    if n_trials == 1:
        return 0.0
    q1 = _N01.inv_cdf(1 - 1 / n_trials)
    q2 = _N01.inv_cdf(1 - 1 / (n_trials * math.e))
    return math.sqrt(sr_variance) * ((1 - EULER_GAMMA) * q1 + EULER_GAMMA * q2)


@dataclasses.dataclass(frozen=True)
class DSR:
    """The deflated Sharpe ratio: `probability` that the true Sharpe exceeds `sr0`, the Sharpe the best of
    `n_trials` trials would reach by luck alone; None (with `reason`) where undefined. All Sharpe ratios per
    period."""

    probability: float | None
    sr0: float | None
    n_trials: int
    sr: float | None
    n_obs: int
    skew: float | None
    kurtosis: float | None
    z: float | None
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {k: _f(v) if isinstance(v, float) else v for k, v in dataclasses.asdict(self).items()}


def probabilistic_sharpe_ratio(sr: float, sr_benchmark: float, n_obs: int, skew: float,
                               kurtosis: float) -> tuple[float, float]:
    """(PSR, z) of Bailey & López de Prado (2012): the probability that the true Sharpe exceeds the benchmark,

        z = (SR - SR*) x sqrt(T - 1) / sqrt(1 - γ3 SR + (γ4 - 1) / 4 x SR²),   PSR = Φ(z)

    γ3 = skewness, γ4 = kurtosis (Pearson, 3 if normal), T = observations; ValueError when the variance term
    is not positive (a skew that large makes the estimate meaningless)."""
    var = 1 - skew * sr + (kurtosis - 1) / 4 * sr ** 2
    if not var > 0:
        raise ValueError(f"1 - skew x SR + (kurtosis - 1) / 4 x SR² = {var:.4g} is not positive")
    z = (sr - sr_benchmark) * math.sqrt(n_obs - 1) / math.sqrt(var)
    return _N01.cdf(z), z


def deflated_sharpe_ratio(sr: float, sr_trials: Sequence[float], n_obs: int, skew: float,
                          kurtosis: float) -> DSR:
    """The deflated Sharpe ratio (Bailey & López de Prado, "The Deflated Sharpe Ratio", Journal of Portfolio
    Management 40(5), 2014): DSR = PSR(SR0), the probabilistic Sharpe ratio of the observed `sr` against
    SR0 = `expected_max_sharpe(V, N)`, with N = the number of trials with a defined Sharpe in `sr_trials`
    (the chosen one included) and V their variance (ddof=1). Per-period Sharpe ratios (module docstring);
    n_obs = T, the observations behind `sr`; skew and kurtosis (Pearson) of those returns
    (`sharpe_moments`). Paper's example: N = 100, V = 0.5 / 250 (annual 0.5, 250 days), SR = 2.5 / sqrt(250),
    T = 1250, skew -3, kurtosis 10 -> SR0 = 0.1132, DSR = 0.9004 (tests/engine/test_overfitting.py)."""
    trials = np.asarray([x for x in sr_trials if x is not None and math.isfinite(x)], dtype=np.float64)
    n = len(trials)
    base = {"n_trials": n, "sr": _f(sr), "n_obs": int(n_obs), "skew": _f(skew), "kurtosis": _f(kurtosis)}

    def undefined(reason: str, sr0: float | None = None) -> DSR:
        return DSR(probability=None, sr0=sr0, z=None, reason=reason, **base)

    if n == 0:
        return undefined("no trial with a defined Sharpe ratio")
    if n_obs < 2:
        return undefined(f"fewer than 2 observations ({n_obs})")
    if not all(x is not None and math.isfinite(x) for x in (sr, skew, kurtosis)):
        return undefined("the Sharpe ratio, skewness or kurtosis is undefined (too few or flat returns)")
    sr0 = expected_max_sharpe(float(trials.var(ddof=1)) if n > 1 else 0.0, n)
    try:
        prob, z = probabilistic_sharpe_ratio(sr, sr0, n_obs, skew, kurtosis)
    except ValueError as exc:
        return undefined(f"undefined: {exc}", sr0)
    return DSR(probability=prob, sr0=sr0, z=z, **base)


@dataclasses.dataclass(frozen=True)
class PBO:
    """The probability of backtest overfitting by CSCV: `value` = share of the splits whose in-sample best
    config ranks in the bottom half out of sample (logit <= 0); None with `reason` when it cannot be computed.
    `prob_oos_loss`: share of the splits whose in-sample best has a negative out-of-sample Sharpe."""

    value: float | None
    reason: str
    n_splits: int
    n_configs: int
    n_obs: int  # rows used: the first T mod S rows are dropped so the S blocks are equal
    n_combinations: int
    logits: tuple[float, ...] = ()
    prob_oos_loss: float | None = None

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["logits"] = [_f(x) for x in self.logits]
        d["value"], d["prob_oos_loss"] = _f(self.value), _f(self.prob_oos_loss)
        return d


def _sharpe_from_sums(total: np.ndarray, sq: np.ndarray, n: int) -> np.ndarray:
    """mean / std (ddof=1) per column from the column sums and sums of squares of n rows; a column without
    variation gets 0 when its mean is 0 and ±inf otherwise (a sure gain outranks every risky one)."""
    mean = total / n
    var = np.maximum(sq - total * mean, 0.0) / (n - 1)
    flat = var <= 1e-12 * np.maximum(sq / n, 1e-300)  # rounding noise of sums over identical values
    with np.errstate(divide="ignore", invalid="ignore"):
        sr = mean / np.sqrt(var)
    return np.where(flat, np.sign(mean) * np.where(mean == 0, 0.0, np.inf), sr)


def probability_of_backtest_overfitting(returns: np.ndarray, n_splits: int = 16) -> PBO:
    """PBO by combinatorially symmetric cross-validation (Bailey, Borwein, López de Prado & Zhu, "The
    Probability of Backtest Overfitting", Journal of Computational Finance 20(4), 2017):

    1. `returns` is T x N: the per-period returns of N configs (trials) over the same T periods. Split the rows
       into S = n_splits equal, contiguous blocks (the first T mod S rows are dropped).
    2. For each of the C(S, S/2) ways to pick S/2 blocks as the in-sample set J (the other S/2 are the
       out-of-sample set J̄): n* = the config with the best in-sample Sharpe (mean / std, ddof=1, per period);
       ω = its rank among the N out-of-sample Sharpes / (N + 1) (rank 1 = worst, N = best, ties averaged);
       logit λ = ln(ω / (1 - ω)).
    3. PBO = the share of the combinations with λ <= 0: how often the in-sample winner is no better than the
       out-of-sample median.

    ~0.5 means the in-sample ranking says nothing about out-of-sample (pure noise); ~0 means the in-sample
    best stays good. Needs N >= 2, an even S >= 2 (at most MAX_SPLITS) and T >= 2 S (each block at least 2
    rows, so every Sharpe has a standard deviation); otherwise `value` is None with the reason.
    """
    r = np.asarray(returns, dtype=np.float64)
    if r.ndim != 2:
        raise ValueError(f"returns must be a T x N matrix, got shape {r.shape}")
    t, n = r.shape
    s = int(n_splits)
    base = {"n_splits": s, "n_configs": n, "n_obs": t, "n_combinations": 0}
    if s < 2 or s % 2 or s > MAX_SPLITS:
        return PBO(value=None, reason=f"n_splits must be even, 2..{MAX_SPLITS}, got {n_splits}", **base)
    if n < 2:
        return PBO(value=None, reason=f"PBO compares configs: needs at least 2, got {n}", **base)
    if t < 2 * s:
        return PBO(value=None, reason=f"needs at least 2 x n_splits = {2 * s} periods, got {t}", **base)
    if not np.isfinite(r).all():
        raise ValueError("returns must be finite (a config without a return for a period has no place here)")
    rows = s * (t // s)
    blocks = r[t - rows:].reshape(s, rows // s, n)  # (S, T/S, N): contiguous blocks in time order
    block_sum, block_sq = blocks.sum(axis=1), (blocks ** 2).sum(axis=1)  # (S, N)
    combos = list(itertools.combinations(range(s), s // 2))
    pick = np.zeros((len(combos), s))
    for k, c in enumerate(combos):
        pick[k, list(c)] = 1.0
    half = rows // 2
    logits = np.empty(len(combos))
    chosen = np.empty(len(combos))
    # in chunks of combinations: a (combinations x configs) matrix for 12 870 x 1 000 trials would be 100 MB
    step = max(1, _CHUNK_CELLS // n)
    for a in range(0, len(combos), step):
        p = pick[a:a + step]
        sr_in = _sharpe_from_sums(p @ block_sum, p @ block_sq, half)  # (combinations, N)
        sr_out = _sharpe_from_sums((1 - p) @ block_sum, (1 - p) @ block_sq, half)
        best = np.argmax(sr_in, axis=1)  # ties: the lowest column
        mine = sr_out[np.arange(len(p)), best][:, None]
        rank = (sr_out < mine).sum(axis=1) + ((sr_out == mine).sum(axis=1) + 1) / 2  # 1..N, ties averaged
        omega = rank / (n + 1)
        logits[a:a + step] = np.log(omega / (1 - omega))
        chosen[a:a + step] = mine[:, 0]
    return PBO(value=float(np.mean(logits <= 0)), reason="", logits=tuple(logits.tolist()),
               prob_oos_loss=float(np.mean(chosen < 0)),
               **{**base, "n_obs": rows, "n_combinations": len(combos)})
