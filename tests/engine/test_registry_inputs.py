"""Which inputs beyond OHLCV each ghost needs lives on the engine registry's GhostSpec (`inputs`, read through
`inputs_for`), not in a table of the lab's forms (issue 12 leftovers: duplication). The lab's readiness note reads it
from there; a new kind says what it needs where it is registered.

The table is checked against the ghosts themselves on REAL data: the 2020-01-01..07 BTCUSDT klines carry a taker
split but no trade sizes and no liquidations. A ghost missing an input it declares drafts nothing; the CVD detector,
whose one input is there, does draft.
"""

import numpy as np
import pandas as pd
import pytest

from apps.engine.registry import GHOSTS, INPUTS, inputs_for
from apps.engine.types import BAR_COLUMNS
from apps.lab.forms import INPUT_WORDS, ghost_readiness
from tests.datafiles import _flush_redis, load_binance_api_klines, services_use_test_redis  # noqa: F401


def test_the_table_as_registered():
    assert {kind: inputs_for(kind) for kind in GHOSTS} == {
        "spike_fader": (), "cvd_detector": ("taker",), "trend_filter": (), "whale_follower": ("whale", "taker"),
        "liquidation_hunter": ("liq",), "textbook_fader": ()}
    assert inputs_for("liquidation_hunter", {"require_cvd": True}) == ("liq", "taker")
    assert set(INPUTS) == set(INPUT_WORDS)  # every input has the lab's words for it
    assert all(c in BAR_COLUMNS for cols in INPUTS.values() for c in cols)


def test_the_labs_readiness_reads_the_registry():
    coverage = {"candles": 10_000, "taker": 0, "liq": 10_000, "whale": 0, "before_minutes": 100_000}
    hunter = ghost_readiness("liquidation_hunter", {"require_cvd": True}, coverage)
    assert hunter.state == "idle" and any("taker buy/sell volume" in n for n in hunter.notes)
    assert ghost_readiness("liquidation_hunter", {}, coverage).state == "ready"
    # bad params: the form shows that error; the note falls back to the defaults' needs
    assert ghost_readiness("liquidation_hunter", {"require_cvd": "maybe"}, coverage).state == "ready"


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    k = load_binance_api_klines()
    out = pd.DataFrame(index=k.index)
    for c in ("open", "high", "low", "close", "volume"):
        out[c] = k[c].astype("float64")
    out["taker_buy_volume"] = k["tb_base_av"].astype("float64")
    out["taker_sell_volume"] = out["volume"] - out["taker_buy_volume"]
    out["trades"] = k["trades"].astype("float64") if "trades" in k else np.nan
    for c in ("whale_buy_volume", "whale_sell_volume", "liq_long_volume", "liq_short_volume"):
        out[c] = np.nan  # klines have no trade sizes and no liquidations
    return out[list(BAR_COLUMNS)]


def _drafts(kind: str, bars: pd.DataFrame, params: dict | None = None) -> int:
    spec = GHOSTS[kind]
    d = spec.evaluate(bars, spec.config_cls.from_params(params or {}))
    return int((d["side"] != 0).sum())


def test_a_ghost_missing_a_declared_input_drafts_nothing_on_real_klines(bars):
    present = {"taker"}  # in these klines
    for kind in GHOSTS:
        missing = set(inputs_for(kind)) - present
        if missing:
            assert _drafts(kind, bars) == 0, f"{kind} drafts without {missing}, which the registry says it needs"
    assert _drafts("cvd_detector", bars) > 0  # its one input is there: it trades
    no_taker = bars.assign(taker_buy_volume=np.nan, taker_sell_volume=np.nan)
    assert _drafts("cvd_detector", no_taker) == 0
