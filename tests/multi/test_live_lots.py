"""The live executor reads the exchange's own lot rules (its ccxt market) through apps.engine.lots: an entry below
the minimum notional is refused with the instrument named and nothing is sent; one above is ordered on the step.
Against the local fake Binance spot server (tests/trading/fake_binance.py: step 0.00001, min notional 5 USDT)."""

from decimal import Decimal

import pytest

from apps.signals.models import Fate
from apps.trading.execution import signal_execute
from tests.trading.conftest import PRICE, T0, new_signal

pytestmark = pytest.mark.django_db
AT = T0.replace(minute=1, second=1)


def test_live_refusal_names_the_minimum_and_sends_nothing(desk, live_settings):
    signal = new_signal(desk["ghost"])
    assert signal_execute(signal_id=signal.pk, price=PRICE, at=AT, quantity=0.00004) is None
    signal.refresh_from_db()
    assert signal.fate == Fate.BLOCKED_RISK
    # 0.00004 BTC at the expected fill is 0.0000399..., 0.00003 on the step: 2.85 USDT at 95,000
    assert signal.fate_detail == "lot: notional 2.85 USDT below the minimum 5 USDT of BTC/USDT on binance"
    assert live_settings.posted_orders() == []


def test_live_entry_is_ordered_on_the_step(desk, live_settings):
    signal = new_signal(desk["ghost"])
    position = signal_execute(signal_id=signal.pk, price=PRICE, at=AT, quantity=0.0123456)
    assert position is not None
    sent = Decimal(str(live_settings.posted_orders()[0]["quantity"]))
    assert sent == sent.quantize(Decimal("0.00001")) and Decimal("0.0123") < sent <= Decimal("0.0123456")
