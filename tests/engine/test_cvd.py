"""CVD detector on constructed bars: delta from the real taker split, divergence, exhaustion with the
aggressor checked, edge triggering (the prototype's sticky flag), NaN taker data, config validation,
no look-ahead, live == backtest, input untouched."""

import dataclasses

import numpy as np
import pandas as pd
import pytest

from apps.engine.cvd import STATE_COLUMNS, CvdConfig, cvd_state, evaluate, state_summary
from apps.engine.guard import find_lookahead, run_guarded
from apps.engine.registry import GHOSTS, latest_draft, warmup_minutes_for
from apps.engine.types import DRAFT_COLUMNS, ConfigError, Draft
from tests.datafiles import _flush_redis, services_use_test_redis  # noqa: F401

CFG = CvdConfig()
T0 = pd.Timestamp("2025-03-01 00:00", tz="UTC")


def frame(rows: list[tuple[float, float, float, float, float, float]], start: pd.Timestamp = T0) -> pd.DataFrame:
    """Bars from (open, high, low, close, volume, taker_buy_volume) rows on consecutive minutes."""
    idx = pd.date_range(start, periods=len(rows), freq="1min", tz="UTC", name="open_time")
    return pd.DataFrame(rows, columns=["open", "high", "low", "close", "volume", "taker_buy_volume"], index=idx)


def quiet(n: int, price: float = 100.0, volume: float = 10.0, buy: float = 5.0) -> list[tuple]:
    """n flat bars (high/low +-0.01) with a given taker-buy volume."""
    return [(price, price + 0.01, price - 0.01, price, volume, buy)] * n


def random_bars(n: int = 2500, seed: int = 7) -> pd.DataFrame:
    """A random walk with a taker split that leans with the move, a few volume spikes and a feed gap."""
    rng = np.random.default_rng(seed)
    r = rng.normal(0, 0.0008, n)
    close = 100 * np.exp(np.cumsum(r))
    open_ = np.concatenate(([close[0]], close[:-1]))
    wick = np.abs(rng.normal(0, 0.0003, n))
    vol = rng.lognormal(np.log(10), 0.5, n)
    vol[rng.choice(np.arange(300, n), 40, replace=False)] *= rng.uniform(3, 8, 40)
    share = np.clip(0.5 + np.sign(r) * rng.uniform(0, 0.4, n), 0, 1)
    idx = pd.date_range(T0, periods=n, freq="1min", tz="UTC", name="open_time")
    bars = pd.DataFrame({"open": open_, "high": np.maximum(open_, close) * (1 + wick),
                         "low": np.minimum(open_, close) * (1 - wick), "close": close, "volume": vol,
                         "taker_buy_volume": vol * share}, index=idx)
    return bars.drop(bars.index[1200:1215])  # a 15-minute feed gap


# ---------------------------------------------------------------------------------------------- config

def test_config_defaults_and_round_trip() -> None:
    assert CFG.exhaustion_threshold == 3.0 and CFG.exhaustion_max_ratio == 5.0  # prototype / its docs
    assert CFG.volume_norm_minutes == 100 and CFG.min_norm_minutes == 20  # prototype's 100 / 20 history
    assert CvdConfig.from_params(CFG.to_params()) == CFG
    assert CvdConfig.from_params({"rearm_minutes": 5}).rearm_minutes == 5
    assert CFG.warmup_minutes == CFG.rearm_minutes + CFG.cvd_window_minutes + CFG.divergence_lookback_minutes
    assert CvdConfig(cvd_window_minutes=600).warmup_minutes > CFG.warmup_minutes
    with pytest.raises(dataclasses.FrozenInstanceError):
        CFG.rearm_minutes = 3  # type: ignore[misc]


@pytest.mark.parametrize(("params", "message"), [
    ({"divergence_lookback_minutes": 240}, "divergence_lookback_minutes .240. must be below cvd_window_minutes"),
    ({"exhaustion_max_ratio": 2.5}, r"exhaustion_max_ratio \(2.5\) must be >= exhaustion_threshold \(3\)"),
    ({"exhaustion_threshold": 1.0}, "exhaustion_threshold must be > 1"),
    ({"aggressor_min_share": 0.5}, "aggressor_min_share must be > 0.5"),
    ({"min_norm_minutes": 150}, r"min_norm_minutes \(150\) cannot exceed volume_norm_minutes \(100\)"),
    ({"divergence_full_gap": 1.0}, r"divergence_full_gap \(1\) must be above min_divergence_gap \(2\)"),
    ({"min_coverage": 0}, "min_coverage must be > 0"),
    ({"cvd_window_minutes": 1}, "cvd_window_minutes must be >= 2"),
    ({"rearm_minutes": 0}, "rearm_minutes must be >= 1"),
    ({"rearm_minutes": 2.5}, "rearm_minutes must be a whole number"),
    ({"rearm_minutes": True}, "rearm_minutes must be an integer"),
    ({"min_stop_pct": float("nan")}, "min_stop_pct must be a finite number"),
    ({"max_hold_seconds": 10}, "max_hold_seconds must be >= 60"),
    ({"lookback": 10}, "unknown cvd_detector parameter"),
])
def test_config_refuses_bad_values_with_clear_messages(params: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        CvdConfig.from_params(params)


def test_registered() -> None:
    spec = GHOSTS["cvd_detector"]
    assert spec.config_cls is CvdConfig and spec.evaluate is evaluate
    assert spec.warmup_minutes == CFG.warmup_minutes == warmup_minutes_for("cvd_detector", {})


# ----------------------------------------------------------------------------------------------- delta

def test_delta_from_kline_taker_buy_and_from_both_sides() -> None:
    bars = frame([(100, 101, 99, 100, 10.0, 7.0), (100, 101, 99, 100, 10.0, 2.5), (100, 101, 99, 100, 4.0, 4.0)])
    st = cvd_state(bars, CFG)
    assert list(st.columns) == list(STATE_COLUMNS) and st.index.equals(bars.index)
    np.testing.assert_array_equal(st["delta"].to_numpy(), [4.0, -5.0, 4.0])  # 2 * buy - volume
    exact = bars.assign(taker_sell_volume=[3.0, 7.5, 0.0])
    np.testing.assert_array_equal(cvd_state(exact, CFG)["delta"].to_numpy(), [4.0, -5.0, 4.0])
    only_sell = bars.drop(columns="taker_buy_volume").assign(taker_sell_volume=[3.0, 7.5, 0.0])
    np.testing.assert_array_equal(cvd_state(only_sell, CFG)["delta"].to_numpy(), [4.0, -5.0, 4.0])


def test_cvd_is_a_time_window_sum_even_across_gaps() -> None:
    bars = random_bars()
    st = cvd_state(bars, CFG)
    delta = 2 * bars["taker_buy_volume"] - bars["volume"]
    independent = delta.rolling(f"{CFG.cvd_window_minutes}min").sum()  # pandas: (t - 240 min, t]
    nbars = delta.rolling(f"{CFG.cvd_window_minutes}min").count()
    avail = nbars >= CFG.min_window_bars
    assert (st["available"] == avail).all()
    np.testing.assert_allclose(st["cvd"][avail], independent[avail], rtol=1e-9, atol=1e-9)
    assert st["cvd"][~avail].isna().all()
    # right after the 15-minute gap the window still holds 225 of 240 minutes (>= 216): available
    assert st["available"].loc["2025-03-01 20:15":"2025-03-01 20:30"].all()


def test_nan_taker_data_makes_the_ghost_idle_and_say_why() -> None:
    rows = quiet(400)
    bars = frame(rows)
    bars["taker_buy_volume"] = np.nan  # an OHLCV-only download
    st = cvd_state(bars, CFG)
    assert st["delta"].isna().all() and st["cvd"].isna().all() and not st["available"].any()
    d = evaluate(bars, CFG)
    assert (d["side"] == 0).all()
    assert d["reason"].iloc[-1] == ("CVD unavailable: taker buy/sell volume unknown (NaN) in the 240-min CVD "
                                    "window -> idle")
    assert "unavailable: taker buy/sell volume unknown" in state_summary(bars, CFG)["status"]
    # one unknown bar poisons exactly the windows that contain it
    bars = frame(quiet(700))
    bars.iloc[400, bars.columns.get_loc("taker_buy_volume")] = np.nan
    st = cvd_state(bars, CFG)
    assert not st["available"].iloc[400:640].any() and st["available"].iloc[640:].all()
    assert st["available"].iloc[240:400].all()
    d = evaluate(bars, CFG)
    assert d["reason"].iloc[500].startswith("CVD unavailable: taker buy/sell volume unknown")
    assert d["reason"].iloc[10].startswith("CVD unavailable: fewer than 216 of 240 CVD-window minutes")


# ------------------------------------------------------------------------------------------ divergence

def bearish_setup() -> pd.DataFrame:
    """300 quiet bars, a push to 101 on heavy taker BUYING (CVD up), a pullback, then a HIGHER high at
    101.5 on taker SELLING (CVD down): price higher high, CVD lower high."""
    rows = quiet(300)
    rows += [(100.0, 101.0, 100.0, 100.9, 25.0, 22.5)]                   # prior high 101.0, delta +20
    rows += [(100.9, 100.9, 100.4, 100.5, 10.0, 5.0)] * 10                # pullback, neutral
    rows += [(100.5, 101.5, 100.5, 101.2, 28.0, 1.0)]                     # higher high, delta -26
    return frame(rows)


def test_bearish_divergence_fires_once_on_the_higher_high_and_is_not_sticky() -> None:
    bars = bearish_setup()
    t_sig = bars.index[-1]
    # the prototype's sticky-flag case: 50 lower-price bars follow the divergent high
    tail = frame(quiet(50, price=100.8), start=t_sig + pd.Timedelta(minutes=1))
    full = pd.concat([bars, tail])
    st = cvd_state(full, CFG)
    hits = st.index[st["bearish_divergence"]]
    assert list(hits) == [t_sig]
    assert not st["bearish_divergence"].loc[t_sig + pd.Timedelta(minutes=1):].any()  # 50 of 50 not flagged
    assert not st["bullish_divergence"].any()
    assert 0 < st.loc[t_sig, "divergence_strength"] <= 1
    assert (st["divergence_strength"][~st["bearish_divergence"]] == 0).all()
    d = evaluate(full, CFG)
    row = d.loc[t_sig]
    assert row["side"] == -1 and row["entry"] == 101.2 and row["target"] < row["entry"] < row["stop"]
    assert row["stop"] >= 101.5  # beyond the local high
    assert row["reason"].startswith("bearish divergence: high 101.50 > prior 30-min high 101.00 (05:00)")
    assert "CVD" in row["reason"] and row["reason"].endswith(")") and "-> SHORT" in row["reason"]
    # CVD at the prior high +20, now 20 - 26 = -6; gap = 26 / norm (mean volume of the previous 100 min)
    norm = (89 * 10.0 + 25.0 + 10 * 10.0) / 100
    assert f"but CVD -6.00 < +20.00 there (gap {26 / norm:.1f} min of typical volume" in row["reason"]
    assert st.loc[t_sig, "divergence_strength"] == pytest.approx(26 / norm / CFG.divergence_full_gap)
    assert (d["side"] != 0).sum() == 1
    s = state_summary(full, CFG)
    assert s["last_divergence"] == f"bearish at {t_sig:%Y-%m-%d %H:%M} UTC" and s["status"] == "ok"


def test_consecutive_divergent_highs_fire_once_then_rearm() -> None:
    bars = bearish_setup()
    last = bars.index[-1]
    # three more higher highs, each on selling (CVD keeps falling): the raw condition holds on each
    more = frame([(101.2, 101.6 + 0.1 * k, 101.1, 101.3, 20.0, 5.0) for k in range(3)],
                 start=last + pd.Timedelta(minutes=1))
    st = cvd_state(pd.concat([bars, more]), CFG)
    assert list(st.index[st["bearish_divergence"]]) == [last]
    # with a pure rising edge (rearm 1) it is still one flag: the condition never went away in between
    st1 = cvd_state(pd.concat([bars, more]), CvdConfig(rearm_minutes=1))
    assert list(st1.index[st1["bearish_divergence"]]) == [last]


def test_higher_high_with_higher_cvd_is_no_divergence() -> None:
    rows = quiet(300)
    rows += [(100.0, 101.0, 100.0, 100.9, 25.0, 22.5)]
    rows += [(100.9, 100.9, 100.4, 100.5, 10.0, 5.0)] * 10
    rows += [(100.5, 101.5, 100.5, 101.2, 28.0, 27.0)]  # higher high on buying: confirmed, not divergent
    st = cvd_state(frame(rows), CFG)
    assert not st["bearish_divergence"].any() and not st["bullish_divergence"].any()


def test_bullish_divergence_mirror() -> None:
    rows = quiet(300)
    rows += [(100.0, 100.0, 99.0, 99.1, 25.0, 2.5)]                      # prior low 99.0, delta -20
    rows += [(99.1, 99.6, 99.1, 99.5, 10.0, 5.0)] * 10
    rows += [(99.5, 99.5, 98.5, 98.8, 28.0, 27.0)]                       # lower low, delta +26
    bars = frame(rows)
    st = cvd_state(bars, CFG)
    assert list(st.index[st["bullish_divergence"]]) == [bars.index[-1]]
    row = evaluate(bars, CFG).iloc[-1]
    assert row["side"] == 1 and row["stop"] < 98.5 < row["entry"] < row["target"]
    assert row["reason"].startswith("bullish divergence: low 98.50 < prior 30-min low 99.00")


# ------------------------------------------------------------------------------------------ exhaustion

def spike_at_high(volume: float, buy: float) -> pd.DataFrame:
    """150 quiet bars at 100 (volume 10), then a spike bar making the 30-minute high (and well above the
    30-minute low, so it cannot count as a selling extreme)."""
    return frame(quiet(150) + [(100.3, 100.6, 100.3, 100.5, volume, buy)])


def test_buying_exhaustion_needs_taker_buy_dominance() -> None:
    right = spike_at_high(40.0, 32.0)  # x4 volume, 80 % taker buy, at the high
    st = cvd_state(right, CFG)
    assert st["buying_exhaustion"].iloc[-1] and st["buying_exhaustion"].sum() == 1
    assert not st["selling_exhaustion"].any()
    row = evaluate(right, CFG).iloc[-1]
    assert row["side"] == -1 and row["stop"] > 100.6 and row["target"] < row["entry"] == 100.5
    assert row["reason"] == ("buying exhaustion: volume x4.00 of the 100-min norm at the 30-min high, "
                             f"taker buy 80% -> SHORT (ATR {row['reason'].split('ATR ')[1][:-1]})")
    # conf = 0.5 + 0.25 * (4 - 3) / 2 + 0.25 * (0.8 - 0.55) / 0.45
    assert row["confidence"] == pytest.approx(0.5 + 0.125 + 0.25 * 0.25 / 0.45)
    wrong = spike_at_high(40.0, 8.0)  # the same spike at the high, but 80 % taker SELL: absorption, not exhaustion
    st = cvd_state(wrong, CFG)
    assert not st["buying_exhaustion"].any() and not st["selling_exhaustion"].any()
    assert (evaluate(wrong, CFG)["side"] == 0).all()
    balanced = spike_at_high(40.0, 21.0)  # 52.5 % buy: no dominance
    assert not cvd_state(balanced, CFG)["buying_exhaustion"].any()


def test_exhaustion_band_and_impulse_above_it() -> None:
    assert not cvd_state(spike_at_high(25.0, 20.0), CFG)["buying_exhaustion"].any()  # x2.5 < x3
    assert cvd_state(spike_at_high(50.0, 40.0), CFG)["buying_exhaustion"].iloc[-1]     # x5: upper bound included
    big = spike_at_high(80.0, 64.0)                                                     # x8 > x5: impulse
    assert not cvd_state(big, CFG)["buying_exhaustion"].any()
    row = evaluate(big, CFG).iloc[-1]
    assert row["side"] == 0
    assert row["reason"] == ("buying volume x8.00 above the x5 exhaustion band at the 30-min high "
                             "(taker buy 80%): impulse, not exhaustion -> no trade")
    assert cvd_state(big, CvdConfig(exhaustion_max_ratio=10.0))["buying_exhaustion"].iloc[-1]


def test_selling_exhaustion_mirror_and_not_away_from_the_extreme() -> None:
    low_spike = frame(quiet(150) + [(100.0, 100.0, 99.4, 99.5, 40.0, 8.0)])
    st = cvd_state(low_spike, CFG)
    assert st["selling_exhaustion"].iloc[-1] and not st["buying_exhaustion"].any()
    assert evaluate(low_spike, CFG)["side"].iloc[-1] == 1
    # a taker-buy spike in the middle of the 30-minute range is no buying exhaustion
    rows = quiet(120) + [(100.0, 101.0, 100.0, 100.0, 10.0, 5.0)] + quiet(10)
    rows += [(100.0, 100.3, 100.0, 100.2, 40.0, 32.0)]
    assert not cvd_state(frame(rows), CFG)["buying_exhaustion"].any()


def test_exhaustion_needs_a_volume_norm() -> None:
    # only 10 bars of history: fewer than min_norm_minutes (20) -> no norm, no spike
    assert not cvd_state(frame(quiet(10) + [(100.0, 100.6, 100.0, 100.5, 40.0, 32.0)]), CFG)[
        "buying_exhaustion"].any()


# ------------------------------------------------------------------------ causality, live, input, shape

@pytest.fixture(scope="module")
def rnd() -> pd.DataFrame:
    return random_bars()


def test_random_series_has_every_kind_of_flag(rnd: pd.DataFrame) -> None:
    st = cvd_state(rnd, CFG)
    for col in ("bearish_divergence", "bullish_divergence", "buying_exhaustion", "selling_exhaustion"):
        assert st[col].sum() >= 1, col
        # edge-triggered: no two flags of a kind within rearm_minutes
        t = st.index[st[col]].as_unit("s").asi8
        assert (np.diff(t) > CFG.rearm_minutes * 60).all()
    d = evaluate(rnd, CFG)
    assert tuple(d.columns) == DRAFT_COLUMNS and d.index.equals(rnd.index)
    sig = d[d["side"] != 0]
    assert len(sig) >= 4 and sig["confidence"].between(0.5, 1).all()
    assert ((sig["side"] < 0) == (sig["stop"] > sig["entry"])).all()
    assert ((sig["side"] < 0) == (sig["target"] < sig["entry"])).all()
    assert (sig["max_hold_s"] == CFG.max_hold_seconds).all() and (sig["priority"] == CFG.priority).all()


def test_no_lookahead(rnd: pd.DataFrame) -> None:
    cuts = sorted(set(np.linspace(50, len(rnd), 30, dtype=int).tolist()))
    assert find_lookahead(evaluate, rnd, CFG) == []
    assert find_lookahead(evaluate, rnd, CFG, cuts=cuts) == []
    assert find_lookahead(cvd_state, rnd, CFG, cuts=cuts) == []


def peeking(bars: pd.DataFrame, cfg: CvdConfig) -> pd.DataFrame:
    """CHEATS: keeps only the shorts the next bar's close proves right."""
    d = evaluate(bars, cfg)
    wrong = (d["side"] == -1) & ~(bars["close"].shift(-1) < bars["close"])
    d.loc[wrong, "side"] = np.int8(0)
    return d


def test_a_cheating_variant_is_caught(rnd: pd.DataFrame) -> None:
    assert find_lookahead(peeking, rnd, CFG)


def test_live_window_equals_backtest(rnd: pd.DataFrame) -> None:
    warm = warmup_minutes_for("cvd_detector", CFG)
    full = evaluate(rnd, CFG)
    st_full = cvd_state(rnd, CFG)
    interesting = np.flatnonzero(full["reason"].str.contains("->").to_numpy())
    others = np.random.default_rng(1).choice(np.arange(warm, len(rnd)), 40, replace=False)
    checked = 0
    for i in sorted(set(interesting.tolist()) | set(others.tolist())):
        t = rnd.index[i]
        if t - rnd.index[0] < pd.Timedelta(minutes=warm - 1):
            continue
        window = rnd.loc[t - pd.Timedelta(minutes=warm - 1): t]
        got = latest_draft("cvd_detector", CFG, window)
        want = None if full["side"].iloc[i] == 0 else Draft.from_row(t, full.iloc[i])
        assert got == want, f"live and backtest drafts differ at {t}"
        live_state = cvd_state(window, CFG).iloc[-1]
        pd.testing.assert_series_equal(live_state, st_full.iloc[i], check_exact=True)  # bit for bit
        checked += 1
    assert checked >= 40


def test_inputs_are_not_mutated(rnd: pd.DataFrame) -> None:
    before = rnd.copy(deep=True)
    res = run_guarded(evaluate, rnd, CFG)
    assert res.ok and res.drafts.equals(evaluate(rnd, CFG))
    cvd_state(rnd, CFG)
    state_summary(rnd, CFG)
    pd.testing.assert_frame_equal(rnd, before, check_exact=True)


def test_empty_and_tiny_inputs() -> None:
    empty = frame(quiet(1)).iloc[:0]
    assert len(cvd_state(empty, CFG)) == 0 and len(evaluate(empty, CFG)) == 0
    assert state_summary(empty, CFG)["status"] == "no bars"
    one = frame(quiet(1))
    assert (evaluate(one, CFG)["side"] == 0).all()
    assert latest_draft("cvd_detector", {}, one) is None
