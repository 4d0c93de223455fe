"""The deflated Sharpe ratio and the probability of backtest overfitting (apps.engine.overfitting): each against
hand-worked cases (normal quantiles from a table), the papers' own example, a brute-force re-implementation and
simulations where the answer is known."""

import itertools
import math

import numpy as np
import pytest

from apps.engine.overfitting import (
    deflated_sharpe_ratio,
    expected_max_sharpe,
    probabilistic_sharpe_ratio,
    probability_of_backtest_overfitting,
    sharpe_moments,
)
from tests.datafiles import _flush_redis, services_use_test_redis  # noqa: F401

# ---------------------------------------------------------------------------------------------------------
# Deflated Sharpe ratio


def test_dsr_by_hand_two_trials() -> None:
    # trials' per-period Sharpes 0.1 and 0.3: V = (0.1 - 0.2)^2 + (0.3 - 0.2)^2 over (2 - 1) = 0.02, sqrt 0.141421
    # N = 2: Z⁻¹(1 - 1/2) = 0; Z⁻¹(1 - 1/(2e)) = Z⁻¹(0.816060) = 0.900453 (normal table)
    # SR0 = 0.141421 x (0.422784 x 0 + 0.577216 x 0.900453) = 0.141421 x 0.519756 = 0.073505
    # observed SR 0.3 over T = 101 normal returns (skew 0, kurtosis 3):
    # z = (0.3 - 0.073505) x sqrt(100) / sqrt(1 - 0 + (3 - 1)/4 x 0.09) = 2.26495 / 1.022252 = 2.21565
    # DSR = Φ(2.21565) = 0.98664
    d = deflated_sharpe_ratio(0.3, [0.1, 0.3], 101, 0.0, 3.0)
    assert d.n_trials == 2 and d.reason == ""
    assert d.sr0 == pytest.approx(0.073505, abs=1e-6)
    assert d.z == pytest.approx(2.21565, abs=1e-5)
    assert d.probability == pytest.approx(0.98664, abs=1e-5)


def test_dsr_reproduces_the_papers_example() -> None:
    # Bailey & López de Prado (2014), section 5: 100 trials, V[SR] = 1/2 a year -> 0.5 / 250 a day, best SR 2.5 a
    # year -> 2.5 / sqrt(250) = 0.158114 a day, T = 1250 days, skew -3, kurtosis 10: SR0 = 0.1132, DSR = 0.9004.
    # By hand: Z⁻¹(0.99) = 2.326348, Z⁻¹(1 - 1/(100e)) = Z⁻¹(0.996321) = 2.680210;
    # SR0 = sqrt(0.002) x (0.422784 x 2.326348 + 0.577216 x 2.680210) = 0.0447214 x 2.530695 = 0.113176;
    # z = (0.158114 - 0.113176) x sqrt(1249) / sqrt(1 + 3 x 0.158114 + 9/4 x 0.025) = 1.58815 / 1.237171 = 1.2837
    x = math.sqrt(0.002 * 99 / 100)  # 50 trials at +x, 50 at -x: variance (ddof=1) exactly 0.002
    d = deflated_sharpe_ratio(2.5 / math.sqrt(250), [x] * 50 + [-x] * 50, 1250, -3.0, 10.0)
    assert d.n_trials == 100
    assert round(d.sr0, 4) == 0.1132 and round(d.probability, 4) == 0.9004
    assert d.z == pytest.approx(1.2837, abs=2e-4)


def test_one_trial_is_the_probabilistic_sharpe_ratio_against_zero() -> None:
    # N = 1: SR0 = 0; z = 0.2 x sqrt(100) / sqrt(1 + 0.5 x 0.04) = 2 / 1.009950 = 1.98030; Φ = 0.97616
    d = deflated_sharpe_ratio(0.2, [0.2], 101, 0.0, 3.0)
    assert d.sr0 == 0.0 and d.probability == pytest.approx(0.97616, abs=1e-5)
    assert (d.probability, d.z) == probabilistic_sharpe_ratio(0.2, 0.0, 101, 0.0, 3.0)


def test_more_trials_raise_the_bar() -> None:
    # the same spread of trial Sharpes, more of them: the luck benchmark rises, the DSR falls
    rng = np.random.default_rng(0)
    few, many = rng.normal(0, 0.05, 10), rng.normal(0, 0.05, 1000)
    few *= 0.05 / few.std(ddof=1)
    many *= 0.05 / many.std(ddof=1)
    a = deflated_sharpe_ratio(0.2, few, 250, 0.0, 3.0)
    b = deflated_sharpe_ratio(0.2, many, 250, 0.0, 3.0)
    assert a.sr0 < b.sr0 and a.probability > b.probability


@pytest.mark.parametrize(("args", "reason"), [
    ((0.2, [], 100, 0.0, 3.0), "no trial with a defined Sharpe ratio"),
    ((0.2, [float("nan")], 100, 0.0, 3.0), "no trial with a defined Sharpe ratio"),
    ((0.2, [0.1, 0.2], 1, 0.0, 3.0), "fewer than 2 observations (1)"),
    ((float("nan"), [0.1, 0.2], 100, 0.0, 3.0), "the Sharpe ratio, skewness or kurtosis is undefined"),
    ((1.0, [0.1, 1.0], 100, 3.0, 3.0), "undefined: 1 - skew x SR + (kurtosis - 1) / 4 x SR² = -1.5 is not"),
])
def test_undefined_dsr_says_why(args: tuple, reason: str) -> None:
    d = deflated_sharpe_ratio(*args)
    assert d.probability is None and d.reason.startswith(reason)
    assert all(v is None or isinstance(v, int | str) or math.isfinite(v) for v in d.as_dict().values())


def test_sharpe_moments_by_hand() -> None:
    # r = 1, 2, 3, 6: mean 3; deviations -2, -1, 0, 3; m2 = 14/4 = 3.5, m3 = (-8 - 1 + 27)/4 = 4.5,
    # m4 = (16 + 1 + 81)/4 = 24.5; std (ddof=1) = sqrt(14/3) = 2.160247; SR = 3 / 2.160247 = 1.388730
    # skew = 4.5 / 3.5^1.5 = 0.687243; kurtosis = 24.5 / 12.25 = 2.0
    sr, skew, kurt, n = sharpe_moments([1.0, 2.0, 3.0, 6.0])
    assert n == 4 and sr == pytest.approx(1.388730, abs=1e-6)
    assert skew == pytest.approx(0.687243, abs=1e-6) and kurt == pytest.approx(2.0)
    assert all(math.isnan(x) for x in sharpe_moments([0.01, 0.01, 0.01])[:3])


def test_expected_max_matches_the_simulated_maximum_of_noise() -> None:
    # 100 strategies of pure noise (true Sharpe 0), 250 periods each, 300 experiments: the formula's SR0 is the
    # average best Sharpe found by luck (an approximation for large N: within 3 %)
    rng = np.random.default_rng(5)
    best, sr0 = [], []
    for _ in range(300):
        r = rng.normal(0.0, 1.0, (250, 100))
        sr = r.mean(axis=0) / r.std(axis=0, ddof=1)
        best.append(sr.max())
        sr0.append(expected_max_sharpe(float(sr.var(ddof=1)), 100))
    assert np.mean(best) == pytest.approx(np.mean(sr0), rel=0.03)


def test_dsr_rarely_trusts_the_best_of_noise_and_often_trusts_a_real_edge() -> None:
    rng = np.random.default_rng(6)

    def dsr_of_best(edge: float) -> float:
        r = rng.normal(0.0, 1.0, (250, 100))
        r[:, 3] += edge
        sr = r.mean(axis=0) / r.std(axis=0, ddof=1)
        s, skew, kurt, n = sharpe_moments(r[:, int(np.argmax(sr))])
        return deflated_sharpe_ratio(s, sr, n, skew, kurt).probability

    noise = np.array([dsr_of_best(0.0) for _ in range(200)])
    edge = np.array([dsr_of_best(0.35) for _ in range(100)])
    assert (noise > 0.95).mean() < 0.05 and 0.3 < np.median(noise) < 0.7
    assert np.median(edge) > 0.95


# ---------------------------------------------------------------------------------------------------------
# Probability of backtest overfitting (CSCV)


def test_pbo_by_hand_three_configs_two_blocks() -> None:
    # T = 4, S = 2 blocks of 2 rows; C(2, 1) = 2 splits. Per-block Sharpe (mean / std, ddof=1):
    #   A: block 0 (0.01, 0.03) -> 0.02 / 0.014142 = 1.41421; block 1 (-0.02, 0.00) -> -0.01 / 0.014142 = -0.70711
    #   B: block 0 (0.00, 0.02) -> 0.70711;                   block 1 (0.02, 0.04)  -> 2.12132
    #   C: flat zero -> 0 in both
    # split J = {0}: in-sample best A (1.414); out of sample A -0.707, B 2.121, C 0 -> A ranks 1 of 3,
    #   ω = 1/4, λ = ln(0.25 / 0.75) = -1.098612; its out-of-sample Sharpe is negative (a loss)
    # split J = {1}: in-sample best B (2.121); out of sample A 1.414, B 0.707, C 0 -> B ranks 2 of 3,
    #   ω = 2/4, λ = ln(1) = 0 -> counts as overfit (not above the median)
    # PBO = 2/2 = 1; probability of an out-of-sample loss = 1/2
    returns = np.array([[0.01, 0.00, 0.0], [0.03, 0.02, 0.0], [-0.02, 0.02, 0.0], [0.00, 0.04, 0.0]])
    p = probability_of_backtest_overfitting(returns, n_splits=2)
    assert p.n_combinations == 2 and p.n_obs == 4 and p.n_configs == 3
    assert p.logits == pytest.approx((-1.098612, 0.0), abs=1e-6)
    assert p.value == 1.0 and p.prob_oos_loss == 0.5


def test_pbo_by_hand_a_dominant_config() -> None:
    # B beats A and C in both blocks: in either split B is the in-sample best and ranks 3 of 3 out of sample:
    # ω = 3/4, λ = ln 3 = 1.098612 twice -> PBO 0. A fifth, oldest row is dropped (T mod S = 1).
    returns = np.array([[9.0, -9.0, 9.0],
                        [0.01, 0.03, 0.0], [0.00, 0.05, 0.01], [0.01, 0.05, 0.0], [0.00, 0.04, -0.01]])
    p = probability_of_backtest_overfitting(returns, n_splits=2)
    assert p.n_obs == 4 and p.logits == pytest.approx((math.log(3), math.log(3)))
    assert p.value == 0.0 and p.prob_oos_loss == 0.0


def _pbo_brute_force(returns: np.ndarray, s: int) -> list[float]:
    """CSCV written the plain way: slice the rows of each split, np.std, rank by sorting."""
    t, n = returns.shape
    rows = s * (t // s)
    r = returns[t - rows:]
    blocks = np.split(np.arange(rows), s)
    out = []
    for c in itertools.combinations(range(s), s // 2):
        j = np.concatenate([blocks[k] for k in c])
        jbar = np.concatenate([blocks[k] for k in range(s) if k not in c])
        ins = r[j].mean(axis=0) / r[j].std(axis=0, ddof=1)
        oos = r[jbar].mean(axis=0) / r[jbar].std(axis=0, ddof=1)
        best = int(np.argmax(ins))
        ordered = sorted(oos.tolist())  # rank = the mean 1-based position of the winner's value, ties averaged
        rank = float(np.mean([k + 1 for k, x in enumerate(ordered) if x == oos[best]]))
        w = rank / (n + 1)
        out.append(math.log(w / (1 - w)))
    return out


@pytest.mark.parametrize(("t", "n", "s"), [(40, 5, 4), (97, 12, 8), (200, 30, 10)])
def test_pbo_equals_a_brute_force_cscv(t: int, n: int, s: int) -> None:
    rng = np.random.default_rng(t)
    returns = rng.normal(0.0005, 0.01, (t, n))
    p = probability_of_backtest_overfitting(returns, n_splits=s)
    brute = _pbo_brute_force(returns, s)
    assert p.n_combinations == math.comb(s, s // 2) == len(brute)
    assert p.logits == pytest.approx(brute, abs=1e-9)
    assert p.value == np.mean(np.array(brute) <= 0)


def test_pbo_is_about_one_half_for_noise_and_near_zero_for_a_true_edge() -> None:
    noise, edge = [], []
    for seed in range(10):
        rng = np.random.default_rng(seed)
        r = rng.normal(0.0, 0.01, (800, 50))
        noise.append(probability_of_backtest_overfitting(r, 16).value)
        r[:, 7] += 0.003  # one config with a real edge (a daily Sharpe of 0.3)
        edge.append(probability_of_backtest_overfitting(r, 16).value)
    # noise: the in-sample winner is a coin flip out of sample
    assert 0.4 < np.mean(noise) < 0.6
    assert max(edge) < 0.02


@pytest.mark.parametrize(("shape", "s", "reason"), [
    ((100, 1), 16, "PBO compares configs: needs at least 2, got 1"),
    ((31, 5), 16, "needs at least 2 x n_splits = 32 periods, got 31"),
    ((100, 5), 7, "n_splits must be even, 2..20, got 7"),
    ((100, 5), 22, "n_splits must be even, 2..20, got 22"),
])
def test_pbo_says_why_it_cannot_be_computed(shape: tuple, s: int, reason: str) -> None:
    p = probability_of_backtest_overfitting(np.zeros(shape), n_splits=s)
    assert p.value is None and p.reason == reason and p.logits == ()
    assert p.as_dict()["value"] is None


def test_pbo_refuses_missing_returns() -> None:
    r = np.zeros((40, 3))
    r[5, 1] = np.nan
    with pytest.raises(ValueError, match="returns must be finite"):
        probability_of_backtest_overfitting(r, 4)
