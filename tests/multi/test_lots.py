"""Lot rules (issue 11): orders rounded down to the amount step, prices to the tick, refusals below the minimum
quantity or notional with the instrument named; contract size for contracts. Pure rules, then the paper executor
on an instrument carrying ccxt's facts."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from apps.engine.lots import LotRules, lot_size, price_round
from apps.signals.models import Fate, Signal
from apps.trading.lot_rules import lot_rules_from_market
from apps.trading.models import Position
from apps.trading.services import signal_execute_paper
from tests.factories import make_instrument, make_signal

D = Decimal
SPOT = LotRules(label="BTC/USDT on binance", quote="USDT", amount_step=D("0.0001"), price_tick=D("0.01"),
                min_amount=D("0.0001"), min_notional=D("5"))
LINEAR = LotRules(label="BTC/USDT:USDT on binanceusdm", quote="USDT", amount_step=D("1"), price_tick=D("0.1"),
                  min_amount=D("1"), min_notional=D("5"), contract_size=D("0.001"), contract=True)
INVERSE = LotRules(label="BTC/USD:BTC on binancecoinm", quote="USD", amount_step=D("1"), price_tick=D("0.1"),
                   min_amount=D("1"), contract_size=D("100"), contract=True, inverse=True)


def test_spot_rounds_down_to_the_step_and_names_the_minimum() -> None:
    lot = lot_size(0.123456789, 50_000.0, SPOT)
    assert lot.ok and lot.quantity == D("0.1234") and lot.amount == D("0.1234")
    assert lot_size(0.00001, 50_000.0, SPOT).detail == (
        "quantity 0.00001 below the minimum 0.0001 of BTC/USDT on binance")
    cheap = lot_size(0.0009, 5_000.0, SPOT)  # 0.0009 x 5,000 = 4.50 < 5
    assert not cheap.ok and cheap.detail == "notional 4.50 USDT below the minimum 5 USDT of BTC/USDT on binance"
    no_min = LotRules(label="X/USDT on binance", amount_step=D("0.01"))
    assert lot_size(0.004, 10.0, no_min).detail == "quantity 0.004 rounds down to 0 at the amount step 0.01 of " \
                                                    "X/USDT on binance"


def test_unknown_rules_change_nothing() -> None:
    lot = lot_size(D("0.12345678"), 100.0, LotRules())
    assert lot.ok and lot.quantity == D("0.12345678")
    assert price_round(101.234567, LotRules()) == D("101.234567")


def test_contracts_use_the_contract_size() -> None:
    lot = lot_size(0.0567, 60_000.0, LINEAR)  # 56.7 contracts of 0.001 BTC -> 56
    assert lot.ok and lot.amount == D("56") and lot.quantity == D("0.056")
    assert lot_size(0.0005, 60_000.0, LINEAR).detail == (
        "quantity 0.5 contracts below the minimum 1 contracts of BTC/USDT:USDT on binanceusdm")
    inv = lot_size(0.01, 60_000.0, INVERSE)  # 600 USD = 6 contracts of 100 USD; back in base at 60,000
    assert inv.ok and inv.amount == D("6") and inv.quantity == D("0.01")
    inv2 = lot_size(0.0105, 60_000.0, INVERSE)  # 6.3 contracts -> 6
    assert inv2.amount == D("6") and inv2.quantity == D("0.01")
    assert price_round(60_000.04, LINEAR) == D("60000.0") and price_round(0.004, SPOT) == D("0.01")
    coarse = LotRules(price_tick=D("1"))
    # a stop 0.4 from a fill of 100 on a 1.0 tick: away from the fill, not onto it
    assert price_round(99.6, coarse) == D("100") and price_round(99.6, coarse, away_from=100.0) == D("99")
    assert price_round(100.4, coarse, away_from=100.0) == D("101")


def test_rules_from_a_ccxt_market_dict() -> None:
    market = {"symbol": "ETH/USDT", "base": "ETH", "quote": "USDT", "type": "spot", "spot": True,
              "precision": {"amount": 0.0001, "price": 0.01},
              "limits": {"amount": {"min": 0.0001}, "cost": {"min": 5.0}}}
    rules = lot_rules_from_market(market, label="ETH/USDT on binance")
    assert (rules.amount_step, rules.price_tick, rules.min_amount, rules.min_notional, rules.contract) == (
        D("0.0001"), D("0.01"), D("0.0001"), D("5"), False)


@pytest.mark.django_db
def test_paper_entry_rounds_and_refuses(desk) -> None:
    inst = make_instrument(symbol="ETH/USDT")
    for k, v in dict(amount_step=D("0.001"), price_tick=D("0.1"), min_amount=D("0.001"), min_notional=D("10"),
                     markets_checked_at=datetime(2026, 1, 1, tzinfo=UTC)).items():
        setattr(inst, k, v)
    inst.save()
    from apps.ghosts.services import ghost_create

    g = ghost_create(name="fader-eth", kind="spike_fader", instrument=inst, enabled=True)
    at = datetime(2026, 3, 2, 10, 1, tzinfo=UTC)
    s = make_signal(ghost=g, entry="2000", fate=Fate.PENDING)
    pos = signal_execute_paper(signal_id=s.pk, price=D("2000.03"), at=at, quantity=0.123456)
    assert pos is not None
    assert pos.quantity * 1000 == int(pos.quantity * 1000)  # on the 0.001 step
    assert pos.entry_price * 10 == int(pos.entry_price * 10) and pos.stop * 10 == int(pos.stop * 10)
    assert pos.target * 10 == int(pos.target * 10)
    assert pos.quantity <= D("0.123456") * D("2000") / pos.entry_price  # rounded down, never up
    # a 0.0004 ETH draft is below the minimum: refused, the reason on the signal, nothing booked
    g2 = ghost_create(name="fader-eth-2", kind="spike_fader", instrument=inst, enabled=True)
    small = make_signal(ghost=g2, entry="2000", fate=Fate.PENDING)
    assert signal_execute_paper(signal_id=small.pk, price=D("2000"), at=at, quantity=0.0004) is None
    small = Signal.objects.get(pk=small.pk)
    assert small.fate == Fate.BLOCKED_RISK
    assert small.fate_detail.startswith("lot: quantity 0.0003998") and small.fate_detail.endswith(
        " below the minimum 0.001 of ETH/USDT on binance")
    assert Position.objects.filter(ghost=g2).count() == 0
