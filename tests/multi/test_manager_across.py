"""The signal manager on stored signals, across instruments (issue 11): positions open on two instruments weigh on
a draft for a third, the refusal names the cap on the signal, and an instrument quoted in a currency the desk
does not convert is refused with the reason. Real DB and the engine's arbitration."""

import re
from datetime import timedelta

import pandas as pd
import pytest

from apps.engine.types import Draft
from apps.ghosts.services import ghost_create
from apps.runtime.manager import bar_decide
from apps.signals.models import Fate, Signal
from apps.signals.services import signal_record
from apps.trading.risk_selectors import open_notional_by_instrument, risk_state
from apps.trading.risk_services import risk_limits_set
from tests.datafiles import synthetic_bars
from tests.factories import make_feed, make_instrument, make_position

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]
BAR = pd.Timestamp("2026-03-02 10:00", tz="UTC")


def draft(entry: float = 100.0) -> Draft:
    return Draft(side=1, confidence=0.8, priority=2, entry=entry, stop=entry * 0.99, target=entry * 1.01,
                 size_mult=1.0, max_hold_s=3600, reason="test", bar_time=BAR)


def decide(inst):
    bars = synthetic_bars([100.0] * 5, start="2026-03-02 09:56")
    return bar_decide(instrument_id=inst.pk, bar_time=BAR.to_pydatetime(), bars=bars, now_s=BAR.timestamp() + 61)


@pytest.fixture
def book(desk, operator):
    """BTC and ETH each hold an open position worth 1,000 USDT at their last prices; SOL holds none."""
    btc = desk["instrument"]
    eth, sol = make_instrument(symbol="ETH/USDT"), make_instrument(symbol="SOL/USDT")
    make_feed(instrument=btc, last_price="50000")
    make_feed(instrument=eth, last_price="2500")
    make_feed(instrument=sol, last_price="100")
    opened = BAR.to_pydatetime() - timedelta(minutes=30)
    make_position(ghost=desk["ghost"], opened_at=opened, entry="40000", qty="0.02")  # marked 50,000: 1,000
    eth_ghost = ghost_create(name="fader-eth", kind="spike_fader", instrument=eth, enabled=True)
    make_position(ghost=eth_ghost, opened_at=opened, entry="2000", qty="0.4")  # marked 2,500: 1,000
    sol_ghost = ghost_create(name="fader-sol", kind="spike_fader", instrument=sol, enabled=True)
    return {"btc": btc, "eth": eth, "sol": sol, "sol_ghost": sol_ghost, "operator": operator}


def test_state_counts_every_instrument_at_its_last_price(book):
    assert open_notional_by_instrument() == {book["btc"].pk: pytest.approx(1000.0),
                                             book["eth"].pk: pytest.approx(1000.0)}
    state = risk_state()
    assert state.open_positions == 2 and state.open_instruments == 2
    assert state.open_notional == pytest.approx(2000.0)


def test_total_cap_refuses_a_third_instrument_with_the_reason(book):
    # 10 % of ~10,000 equity for the new one (1,000) would take the book to ~3,000 > 25 %
    risk_limits_set(params={"max_total_notional_pct": 25.0}, actor=book["operator"], reason="cap the book")
    signal_record(ghost=book["sol_ghost"], bar_time=BAR.to_pydatetime(), draft=draft())
    assert decide(book["sol"]) == (None, None)
    s = Signal.objects.get(ghost=book["sol_ghost"])
    assert s.fate == Fate.BLOCKED_RISK
    assert s.fate_detail.startswith("max_total_notional: open notional 2000.00 + this ")
    assert "USDT over every instrument > limit 25% of equity" in s.fate_detail


def test_without_the_cap_the_third_is_taken(book):
    signal_record(ghost=book["sol_ghost"], bar_time=BAR.to_pydatetime(), draft=draft())
    signal, decision = decide(book["sol"])
    assert signal is not None and decision.quantity * 100.0 == pytest.approx(float(risk_state().equity) * 0.10)


def test_instrument_cap_and_open_positions_cap(book):
    eth_ghost2 = ghost_create(name="fader-eth-2", kind="spike_fader", instrument=book["eth"], enabled=True)
    risk_limits_set(params={"max_instrument_notional_pct": 15.0}, actor=book["operator"], reason="per market")
    signal_record(ghost=eth_ghost2, bar_time=BAR.to_pydatetime(), draft=draft(2500.0))
    decide(book["eth"])
    detail = Signal.objects.get(ghost=eth_ghost2).fate_detail
    assert detail.startswith("max_instrument_notional: open notional on ETH/USDT on binance 1000.00 + this ")
    risk_limits_set(params={"max_open_positions": 2}, actor=book["operator"], reason="two at most")
    signal_record(ghost=book["sol_ghost"], bar_time=BAR.to_pydatetime(), draft=draft())
    decide(book["sol"])
    assert Signal.objects.get(ghost=book["sol_ghost"]).fate_detail == (
        "max_open_positions: 2 positions open on 2 instrument(s) >= limit 2")


def test_a_quote_the_desk_does_not_convert_is_refused(book):
    ethbtc = make_instrument(symbol="ETH/BTC")
    g = ghost_create(name="fader-ethbtc", kind="spike_fader", instrument=ethbtc, enabled=True)
    signal_record(ghost=g, bar_time=BAR.to_pydatetime(), draft=draft(0.05))
    decide(ethbtc)
    s = Signal.objects.get(ghost=g)
    assert s.fate == Fate.BLOCKED_RISK and s.fate_detail == (
        "currency: ETH/BTC on binance is quoted in BTC; P&L is kept in USDT and BTC is not converted: not traded")


def test_risk_page_shows_the_open_notional_per_instrument(book, op_client):
    risk_limits_set(params={"max_total_notional_pct": 25.0, "max_instrument_notional_pct": 15.0},
                    actor=book["operator"], reason="caps")
    html = op_client.get("/risk/").content.decode()
    # equity is ~10,400 (start 10,000 + both positions' unrealised gains at the last prices)
    assert re.search(r"Open notional</dt><dd class=\"num\">2,000.00 USDT\s+= 19.\d% of equity / cap 25.0 %\s+"
                     r"on 2 instruments", html)
    assert re.search(r"<dt>BTC/USDT on binance</dt><dd class=\"num\">1,000.00 USDT = 9.\d% / cap 15.0 %</dd>", html)
    assert 'id="lim-max_total_notional_pct" value="25"' in html
