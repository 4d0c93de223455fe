"""Liquidation hunter v2 on constructed bars: cascade detection per side, the norm, the NaN feed, modes,
CVD confirmation, the trend gate, cooldown, levels, config validation, causality and live == backtest.

The constructed liquidation volumes are test fixtures, not market data; the real window is in
test_liquidation_hunter_real.py.
"""

import re

import numpy as np
import pandas as pd
import pytest

from apps.engine.guard import find_lookahead, run_guarded
from apps.engine.liquidation_hunter import (
    NO_FEED_REASON,
    LiquidationHunterConfig,
    cascade_state,
    evaluate,
    state_summary,
)
from apps.engine.types import DRAFT_COLUMNS, ConfigError, Draft
from tests.datafiles import _flush_redis, services_use_test_redis, synthetic_bars  # noqa: F401

PRICE = 100_000.0
QUIET = 120  # quiet minutes with a known, empty feed before the constructed events
NO_TREND = LiquidationHunterConfig(use_trend_filter=False)


def liq_bars(events: dict[int, tuple[float, float]], n: int = QUIET + 40, *, taker_buy_share: float | None = None,
             delta_at: dict[int, float] | None = None) -> pd.DataFrame:
    """n flat 1m bars at PRICE with a known liquidation feed: 0 except events[i] = (long_btc, short_btc).

    taker_buy_share None -> taker split unknown (NaN, CVD unknown); else buy = share * volume, and
    delta_at[i] overrides bar i's taker buy - sell (base units).
    """
    bars = synthetic_bars([PRICE] * n, volumes=10.0)
    ll, ls = np.zeros(n), np.zeros(n)
    for i, (a, b) in events.items():
        ll[i], ls[i] = a, b
    bars["liq_long_volume"], bars["liq_short_volume"] = ll, ls
    if taker_buy_share is not None:
        buy = bars["volume"] * taker_buy_share
        for i, dlt in (delta_at or {}).items():
            buy.iloc[i] = (bars["volume"].iloc[i] + dlt) / 2
        bars["taker_buy_volume"], bars["taker_sell_volume"] = buy, bars["volume"] - buy
    return bars


def signals(d: pd.DataFrame) -> pd.DataFrame:
    return d[d["side"] != 0]


def trend_frame(bars: pd.DataFrame, *, allow_long: bool = True, allow_short: bool = True,
                direction: int = 0, confidence: float = 0.5, mult: float = 1.0) -> pd.DataFrame:
    """A constant trend_state-shaped gate for isolating the hunter's own logic (not a trend model)."""
    n = len(bars)
    return pd.DataFrame({"direction": np.full(n, direction, dtype=np.int8), "regime": np.zeros(n, dtype=np.int8),
                         "confidence": np.full(n, confidence), "allow_long": np.full(n, allow_long),
                         "allow_short": np.full(n, allow_short), "size_mult_long": np.full(n, mult),
                         "size_mult_short": np.full(n, mult), "atr_pct": np.full(n, 0.04),
                         "ready": np.ones(n, dtype=bool)}, index=bars.index)


# ------------------------------------------------------------------------------------------- config

def test_config_defaults_round_trip_and_refusals() -> None:
    cfg = LiquidationHunterConfig()
    assert cfg.mode == "fade" and cfg.take_profit_pct == 1.2 and cfg.stop_loss_pct == 1.2
    assert cfg.max_hold_seconds == 1800.0
    assert LiquidationHunterConfig.from_params(cfg.to_params()) == cfg
    bad = [({"mode": "both"}, "mode must be one of fade, follow"),
           ({"window_minutes": 1}, "window_minutes must be >= 2"),
           ({"min_norm_minutes": 90}, "cannot exceed norm_lookback_minutes"),
           ({"require_cvd": "yes"}, "require_cvd must be true or false"),
           ({"min_cascade_usd": 0}, "min_cascade_usd must be > 0"),
           ({"exhaustion_ratio": 1.5}, "exhaustion_ratio must be > 0 and <= 1"),
           ({"norm_multiple": 0.5}, "norm_multiple must be >= 1"),
           ({"atr_scale_max": 0.9}, "atr_scale_max must be >= 1"),
           ({"cooldown_minutes": 2.5}, "cooldown_minutes must be a whole number"),
           ({"window_minute": 3}, "unknown liquidation_hunter parameter(s): window_minute")]
    for params, msg in bad:
        with pytest.raises(ConfigError, match=re.escape(msg)):
            LiquidationHunterConfig.from_params(params)


def test_warmup_covers_gates_and_cooldown() -> None:
    cfg = LiquidationHunterConfig()
    assert cfg.warmup_minutes >= cfg.window_minutes + cfg.norm_lookback_minutes + cfg.cooldown_minutes
    from apps.engine.cvd import CvdConfig
    assert cfg.warmup_minutes >= CvdConfig().warmup_minutes + cfg.cooldown_minutes
    assert NO_TREND.warmup_minutes <= cfg.warmup_minutes


# ------------------------------------------------------------------------------------ cascade detection

def test_long_liquidation_cascade_is_faded_long_after_it_exhausts() -> None:
    i0 = QUIET
    # 1.5 BTC then 3 BTC of longs liquidated (= $150k, $300k), then 0.2 BTC: the flow fell below half its peak
    bars = liq_bars({i0: (1.5, 0), i0 + 1: (3.0, 0), i0 + 2: (0.2, 0)})
    st = cascade_state(bars, NO_TREND)
    assert st["cascade"].iloc[i0] == 1 and st["cascade"].iloc[i0 + 1] == 1  # detected from the first minute
    assert st["long_window_usd"].iloc[i0 + 2] == pytest.approx(4.7 * PRICE)
    assert st["long_threshold_usd"].iloc[i0] == NO_TREND.min_cascade_usd  # quiet norm: the floor decides
    d = evaluate(bars, NO_TREND)
    assert tuple(d.columns) == DRAFT_COLUMNS and d.index.equals(bars.index)
    sig = signals(d)
    assert list(sig.index) == [bars.index[i0 + 2]]
    row = sig.iloc[0]
    assert row["side"] == 1 and row["entry"] == PRICE
    assert row["stop"] < row["entry"] < row["target"]
    # flat synthetic bars: ATR 0.04 % of close (wick 0.02 % each side) = ref_atr_pct -> the prototype's 1.2 %
    assert row["target"] == pytest.approx(PRICE * 1.012, rel=1e-6)
    assert row["stop"] == pytest.approx(PRICE * 0.988, rel=1e-6)
    assert row["max_hold_s"] == 1800.0 and row["priority"] == 3
    ratio = 4.7 * PRICE / 100_000
    own = 0.5 + 0.3 * min(max((ratio - 1) / 3, 0), 1)
    assert row["confidence"] == pytest.approx(own)
    assert row["size_mult"] == pytest.approx(0.5 + 0.5 * own)
    assert "long-liquidation cascade $470.0k in 3 min" in row["reason"]
    assert "CVD unknown (no taker split), unconfirmed" in row["reason"] and row["reason"].endswith("fade LONG")
    for i in (i0, i0 + 1):  # still accelerating: the reason says why it waits
        assert "wait for exhaustion" in d["reason"].iloc[i] and d["side"].iloc[i] == 0


def test_short_liquidation_cascade_is_faded_short_and_followed_long() -> None:
    i0 = QUIET
    bars = liq_bars({i0: (0, 2.0), i0 + 1: (0.01, 0.1)})
    fade = signals(evaluate(bars, NO_TREND))
    assert list(fade.index) == [bars.index[i0 + 1]] and fade["side"].iloc[0] == -1
    assert fade["target"].iloc[0] < PRICE < fade["stop"].iloc[0]
    assert "short-liquidation cascade" in fade["reason"].iloc[0]
    follow_cfg = LiquidationHunterConfig(use_trend_filter=False, mode="follow")
    follow = signals(evaluate(bars, follow_cfg))
    assert list(follow.index) == [bars.index[i0]]  # follow enters on the first detected bar
    assert follow["side"].iloc[0] == 1 and follow["reason"].iloc[0].endswith("follow LONG")
    longs = signals(evaluate(liq_bars({i0: (2.0, 0)}), follow_cfg))
    assert longs["side"].tolist() == [-1]


def test_both_directions_occur_and_side_follows_the_liquidated_side() -> None:
    """The prototype was SHORT ~always; here the side is a function of which side was liquidated."""
    bars = liq_bars({QUIET: (2.0, 0), QUIET + 1: (0.1, 0), QUIET + 60: (0, 2.0), QUIET + 61: (0, 0.1)},
                    n=QUIET + 80)
    assert signals(evaluate(bars, NO_TREND))["side"].tolist() == [1, -1]


def test_below_floor_and_below_norm_are_not_cascades() -> None:
    # 0.9 BTC = $90k < $100k floor: not even a candidate, no reason text
    d = evaluate(liq_bars({QUIET: (0.9, 0), QUIET + 1: (0, 0)}), NO_TREND)
    assert (d["side"] == 0).all() and (d["reason"] == "").all()
    # an hour of steady $30k/min long liquidations makes the norm: 3 min x $30k x 5 = $450k threshold
    steady = {i: (0.3, 0.0) for i in range(QUIET - 60, QUIET)}
    bars = liq_bars({**steady, QUIET: (2.0, 0), QUIET + 1: (0.3, 0)})
    st = cascade_state(bars, NO_TREND)
    assert st["long_threshold_usd"].iloc[QUIET + 2] == pytest.approx(5 * 3 * 0.3 * PRICE)  # lookback all steady
    assert (st["cascade"] == 0).all()
    d = evaluate(bars, NO_TREND)
    assert (d["side"] == 0).all()
    assert "long-liquidations $230.0k in 3 min below 5x norm ($450.0k) -> no cascade" in d["reason"].iloc[QUIET + 2]
    # the same 3.5 BTC after a quiet hour IS a cascade
    assert signals(evaluate(liq_bars({QUIET: (3.0, 0), QUIET + 1: (0.5, 0)}), NO_TREND))["side"].tolist() == [1]


def test_nan_feed_is_idle_and_says_why() -> None:
    bars = liq_bars({QUIET: (5.0, 0), QUIET + 1: (0.1, 0)})
    nan_bars = bars.copy()
    nan_bars[["liq_long_volume", "liq_short_volume"]] = np.nan
    d = evaluate(nan_bars, NO_TREND)
    assert (d["side"] == 0).all() and (d["reason"] == NO_FEED_REASON).all()
    assert state_summary(nan_bars, NO_TREND)["feed"] == "no liquidation feed"
    # bars without the columns at all (an OHLCV-only download) are the same case
    plain = bars.drop(columns=["liq_long_volume", "liq_short_volume"])
    assert (evaluate(plain, NO_TREND)["reason"] == NO_FEED_REASON).all()
    # the feed drops out inside the cascade window: the window is not known -> no cascade
    holed = bars.copy()
    holed.iloc[QUIET - 1, holed.columns.get_loc("liq_long_volume")] = np.nan
    st = cascade_state(holed, NO_TREND)
    assert np.isnan(st["long_window_usd"].iloc[QUIET + 1])
    assert st["cascade"].iloc[QUIET + 2] == 1  # once the NaN minute left the 3-minute window


def test_feed_too_young_for_a_norm_is_idle_with_reason() -> None:
    bars = liq_bars({QUIET: (3.0, 0), QUIET + 1: (0.1, 0)})
    young = bars.copy()
    young.iloc[:QUIET - 8, young.columns.get_loc("liq_long_volume")] = np.nan
    young.iloc[:QUIET - 8, young.columns.get_loc("liq_short_volume")] = np.nan
    d = evaluate(young, NO_TREND)
    assert (d["side"] == 0).all()
    assert "norm minutes have a feed (need 10)" in d["reason"].iloc[QUIET + 1]


def test_gap_in_bars_inside_the_window_is_not_a_window() -> None:
    bars = liq_bars({QUIET: (3.0, 0), QUIET + 2: (0.1, 0)})
    gapped = bars.drop(bars.index[QUIET + 1])
    st = cascade_state(gapped, NO_TREND)
    t = bars.index[QUIET + 2]
    assert np.isnan(st.loc[t, "long_window_usd"])  # 3 minutes of data time, one of them missing
    assert (evaluate(gapped, NO_TREND)["side"] == 0).all()


# --------------------------------------------------------------------------------------- CVD and trend

def test_cvd_confirms_or_refuses_the_fade() -> None:
    ev = {QUIET: (3.0, 0), QUIET + 1: (0.1, 0)}
    # buyers absorb the flush on the signal bar (+4 BTC delta): confirmed, +0.2 confidence
    ok = signals(evaluate(liq_bars(ev, taker_buy_share=0.5, delta_at={QUIET + 1: 4.0}), NO_TREND))
    unknown = signals(evaluate(liq_bars(ev), NO_TREND))
    assert ok["side"].tolist() == [1] and "CVD confirms (bar delta +4.000)" in ok["reason"].iloc[0]
    assert ok["confidence"].iloc[0] == pytest.approx(unknown["confidence"].iloc[0] + 0.2)
    # sellers still aggressive on the signal bar: known CVD that does not confirm -> no trade
    d = evaluate(liq_bars(ev, taker_buy_share=0.5, delta_at={QUIET + 1: -4.0}), NO_TREND)
    assert (d["side"] == 0).all()
    assert "CVD does not confirm fade LONG (bar delta -4.000) -> no trade" in d["reason"].iloc[QUIET + 1]
    # unknown CVD with require_cvd: refused and the reason says "CVD unknown"
    strict = LiquidationHunterConfig(use_trend_filter=False, require_cvd=True)
    d = evaluate(liq_bars(ev), strict)
    assert (d["side"] == 0).all() and "CVD unknown (no taker split) and require_cvd" in d["reason"].iloc[QUIET + 1]


def test_cvd_confirms_the_follow_with_window_delta() -> None:
    cfg = LiquidationHunterConfig(use_trend_filter=False, mode="follow")
    ev = {QUIET: (3.0, 0)}
    sells = signals(evaluate(liq_bars(ev, taker_buy_share=0.5, delta_at={QUIET: -6.0}), cfg))
    assert sells["side"].tolist() == [-1] and "CVD confirms (3-min delta -6.000)" in sells["reason"].iloc[0]
    d = evaluate(liq_bars(ev, taker_buy_share=0.5, delta_at={QUIET: 6.0}), cfg)
    assert (d["side"] == 0).all() and "CVD does not confirm follow SHORT" in d["reason"].iloc[QUIET]


def test_trend_gate_blocks_and_scales() -> None:
    cfg = LiquidationHunterConfig()  # trend filter on; the gate frame is passed in
    bars = liq_bars({QUIET: (3.0, 0), QUIET + 1: (0.1, 0)})
    blocked = evaluate(bars, cfg, trend=trend_frame(bars, allow_long=False, direction=-2))
    assert (blocked["side"] == 0).all() and "blocks LONG -> no trade" in blocked["reason"].iloc[QUIET + 1]
    free = signals(evaluate(bars, NO_TREND))
    half = signals(evaluate(bars, cfg, trend=trend_frame(bars, mult=0.5)))
    assert half["size_mult"].iloc[0] == pytest.approx(0.5 * free["size_mult"].iloc[0])
    aligned = signals(evaluate(bars, cfg, trend=trend_frame(bars, direction=1, confidence=0.8)))
    assert aligned["confidence"].iloc[0] == pytest.approx(free["confidence"].iloc[0] + 0.08)


def test_cooldown_gives_one_signal_per_cascade_and_volatility_widens_levels() -> None:
    ev = {QUIET: (3.0, 0), QUIET + 1: (0.1, 0), QUIET + 12: (0, 0), QUIET + 13: (0, 0)}
    ev[QUIET + 10], ev[QUIET + 11] = (6.0, 0), (0.2, 0)  # a second, bigger wave 10 minutes later
    d = evaluate(liq_bars(ev, n=QUIET + 80), NO_TREND)
    assert signals(d).index.tolist() == [d.index[QUIET + 1]]
    assert "in cooldown (a LONG passed every gate within 30 min before)" in d["reason"].iloc[QUIET + 11]
    # a cascade of the OTHER side 10 minutes later is a new event: the cooldown is per trade side
    ev_other = {QUIET: (3.0, 0), QUIET + 1: (0.1, 0), QUIET + 10: (0, 6.0), QUIET + 11: (0, 0.2)}
    both = signals(evaluate(liq_bars(ev_other, n=QUIET + 80), NO_TREND))
    assert both["side"].tolist() == [1, -1] and both.index[1] == d.index[QUIET + 11]
    ev2 = {QUIET: (3.0, 0), QUIET + 1: (0.1, 0), QUIET + 40: (9.0, 0), QUIET + 41: (0.2, 0)}
    assert len(signals(evaluate(liq_bars(ev2, n=QUIET + 80), NO_TREND))) == 2
    # 4x the range on the signal's ATR window -> levels x atr_scale_max, size / 1.5
    bars = liq_bars({QUIET: (3.0, 0), QUIET + 1: (0.1, 0)})
    wide = bars.copy()
    sl = slice(QUIET - 14, QUIET + 2)
    wide.iloc[sl, wide.columns.get_loc("high")] = PRICE * 1.0008
    wide.iloc[sl, wide.columns.get_loc("low")] = PRICE * 0.9992
    row = signals(evaluate(wide, NO_TREND)).iloc[0]
    assert row["target"] == pytest.approx(PRICE * (1 + 0.012 * 1.5), rel=1e-6)
    assert row["size_mult"] == pytest.approx(signals(evaluate(bars, NO_TREND))["size_mult"].iloc[0] / 1.5)


def test_state_summary_reports_the_last_cascade() -> None:
    bars = liq_bars({QUIET: (0, 2.5)})
    s = state_summary(bars, NO_TREND)
    assert s["feed"] == "live"
    assert s["last_cascade"] == f"{bars.index[QUIET + 2]:%Y-%m-%d %H:%M} UTC"  # last bar still over threshold
    assert s["last_cascade_side"] == "shorts liquidated" and s["last_cascade_notional"] == "$250.0k in 3 min"
    assert state_summary(liq_bars({}), NO_TREND)["last_cascade"] == "none in the window"


# ------------------------------------------------------------------------ causality and live == backtest

def random_liquidation_bars(n: int = 16_000, seed: int = 11) -> pd.DataFrame:
    """Random-walk bars with a known taker split, sparse random liquidations and bursts on both sides,
    a 6-minute bar gap and a 40-minute liquidation-feed outage (all constructed, for the guards).

    16,000 minutes: the trend filter needs 12,120 minutes of history before it allows anything, so the
    early bursts exercise "not warmed up" and the later ones the full path.
    """
    rng = np.random.default_rng(seed)
    close = 100_000 * np.exp(np.cumsum(rng.normal(0, 0.0005, n)))
    bars = synthetic_bars(close, volumes=rng.lognormal(np.log(8), 0.6, n), start="2025-03-01", wick=0.0003)
    buy = bars["volume"] * rng.uniform(0.3, 0.7, n)
    bars["taker_buy_volume"], bars["taker_sell_volume"] = buy, bars["volume"] - buy
    ll = np.where(rng.random(n) < 0.08, rng.exponential(0.05, n), 0.0)
    ls = np.where(rng.random(n) < 0.08, rng.exponential(0.05, n), 0.0)
    for start in np.concatenate([rng.choice(np.arange(100, 12_000), size=5, replace=False),
                                 rng.choice(np.arange(12_200, n - 10), size=40, replace=False)]):
        tgt = ll if rng.random() < 0.5 else ls
        tgt[start:start + 3] += rng.uniform(0.5, 3.0, 3)
    bars["liq_long_volume"], bars["liq_short_volume"] = ll, ls
    bars.iloc[14_000:14_040, bars.columns.get_loc("liq_long_volume")] = np.nan
    bars.iloc[14_000:14_040, bars.columns.get_loc("liq_short_volume")] = np.nan
    return bars.drop(bars.index[13_000:13_006])


@pytest.fixture(scope="module")
def rbars() -> pd.DataFrame:
    return random_liquidation_bars()


@pytest.fixture(scope="module", params=["fade", "follow"])
def rcfg(request: pytest.FixtureRequest) -> LiquidationHunterConfig:
    return LiquidationHunterConfig(mode=request.param)


def test_random_series_exercises_every_path(rbars: pd.DataFrame, rcfg: LiquidationHunterConfig) -> None:
    d = evaluate(rbars, rcfg)
    sig = signals(d)
    assert (sig["side"] == 1).any() and (sig["side"] == -1).any()
    for what in ("cooldown", "CVD does not confirm", "CVD confirms", "trend filter not warmed up"):
        assert d["reason"].str.contains(what).any(), what
    assert (d["reason"] == NO_FEED_REASON).sum() == 40
    assert sig["confidence"].between(0.5, 1.0).all()
    assert ((sig["stop"] - sig["entry"]) * sig["side"] < 0).all()
    assert ((sig["target"] - sig["entry"]) * sig["side"] > 0).all()


def test_no_lookahead(rbars: pd.DataFrame, rcfg: LiquidationHunterConfig) -> None:
    assert find_lookahead(evaluate, rbars, rcfg) == []
    cuts = sorted(set(np.linspace(12_000, len(rbars), 15, dtype=int).tolist()))
    assert find_lookahead(evaluate, rbars, rcfg, cuts=cuts) == []


def test_live_window_equals_backtest(rbars: pd.DataFrame, rcfg: LiquidationHunterConfig) -> None:
    full = evaluate(rbars, rcfg)
    warm = rcfg.warmup_minutes
    interesting = np.flatnonzero(full["reason"].to_numpy() != "")
    interesting = interesting[interesting >= warm]
    others = np.random.default_rng(2).choice(np.arange(warm, len(rbars)), size=20, replace=False)
    chosen = sorted(set(interesting[:: max(1, len(interesting) // 60)].tolist()) | set(others.tolist())
                    | set(np.flatnonzero(full["side"].to_numpy() != 0).tolist()))
    for i in chosen:
        t = rbars.index[i]
        window = rbars.loc[t - pd.Timedelta(minutes=warm - 1): t]
        live = evaluate(window, rcfg).iloc[[-1]]
        pd.testing.assert_frame_equal(live, full.iloc[[i]], check_exact=True, obj=f"live vs backtest at {t}")
        if full["side"].iloc[i] != 0:
            assert Draft.from_row(t, live.iloc[0]) == Draft.from_row(t, full.iloc[i])
    assert len(chosen) >= 40


def test_input_is_not_mutated(rbars: pd.DataFrame, rcfg: LiquidationHunterConfig) -> None:
    before = rbars.copy(deep=True)
    res = run_guarded(evaluate, rbars, rcfg)
    assert res.ok, res.error
    assert res.drafts.equals(evaluate(rbars, rcfg))
    assert rbars.equals(before)
