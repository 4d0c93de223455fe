"""Live execution with ccxt's real binance class against a local fake Binance spot server (127.0.0.1).

What the fake is and is not: tests/trading/fake_binance.py. Expected figures are computed from what the
fake recorded (its fills, commissions and balances), not copied from the code under test.
"""

import io
import json
import logging
from datetime import timedelta
from decimal import ROUND_DOWN, Decimal

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from apps.audit.models import AuditEvent
from apps.engine.fills import fill_model_for
from apps.market.prices import price_set
from apps.signals.models import Fate, Signal
from apps.trading import live_client, live_reconcile
from apps.trading.execution import position_exit, signal_execute
from apps.trading.models import ExitReason, Fill, Mode, Order, Position
from tests.trading.conftest import PRICE, T0, new_signal
from tests.trading.fake_binance import API_KEY, API_SECRET

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]
AT = T0 + timedelta(minutes=1, seconds=1)
D8 = Decimal("0.00000001")
LOT = Decimal("0.00001")  # the fake's BTC/USDT lot step
# quantity=0.01 decided at the signal's entry (PRICE) keeps its notional at the expected fill (PRICE + 5 bps
# slippage; apps.engine.sizing.quantity_at_fill), then the lot step truncates: the amount each test orders.
ORDERED = Decimal(repr(0.01 * float(PRICE) / fill_model_for("binance").fill_price(1, float(PRICE)))).quantize(
    LOT, rounding=ROUND_DOWN)


def fills_of(fake, order_id: int) -> list[dict]:
    return [t for t in fake.trades if t["orderId"] == order_id]


def exchange_figures(fake, order_id: int) -> tuple[Decimal, Decimal, Decimal, Decimal]:
    """(qty, average price, commission in its asset, commission in quote at the average) from the fake's rows."""
    rows = fills_of(fake, order_id)
    qty = sum(Decimal(t["qty"]) for t in rows)
    avg = sum(Decimal(t["quoteQty"]) for t in rows) / qty
    commission = sum(Decimal(t["commission"]) for t in rows)
    in_quote = commission * avg if rows[0]["commissionAsset"] == "BTC" else commission
    return qty, avg, commission, in_quote


# ---------------------------------------------------------------- refusal


def test_paper_without_the_flag_and_the_exchange_is_never_called(desk, settings, fake_binance, monkeypatch):
    settings.HFT_LIVE_TRADING = False
    settings.HFT_LIVE_CCXT_CONFIG = {"urls": {"api": fake_binance.urls()}}
    monkeypatch.setenv("HFT_BINANCE_API_KEY", API_KEY)  # keys alone do not switch live on
    monkeypatch.setenv("HFT_BINANCE_SECRET", API_SECRET)
    signal = new_signal(desk["ghost"])
    position = signal_execute(signal_id=signal.pk, price=PRICE, at=AT, quantity=0.01)
    assert position is not None and position.mode == Mode.PAPER
    assert fake_binance.requests == []
    with pytest.raises(live_client.LiveTradingRefused, match="HFT_LIVE_TRADING=1"):
        live_client.live_check("binance")
    with pytest.raises(CommandError, match="HFT_LIVE_TRADING=1"):
        call_command("reconcile", "--exchange", "binance")


def test_live_without_keys_is_refused_with_the_reason_on_the_signal(desk, settings, fake_binance, monkeypatch):
    settings.HFT_LIVE_TRADING = True
    settings.HFT_LIVE_CCXT_CONFIG = {"urls": {"api": fake_binance.urls()}}
    monkeypatch.delenv("HFT_BINANCE_API_KEY", raising=False)
    monkeypatch.setenv("HFT_BINANCE_SECRET", API_SECRET)
    live_client.live_clients_clear()
    signal = new_signal(desk["ghost"])
    assert signal_execute(signal_id=signal.pk, price=PRICE, at=AT, quantity=0.01) is None
    signal.refresh_from_db()
    # Refused, not silently paper-traded: the operator asked for live.
    assert signal.fate == Fate.BLOCKED_RISK and "HFT_BINANCE_API_KEY not set" in signal.fate_detail
    assert API_SECRET not in signal.fate_detail
    assert not Position.objects.exists() and fake_binance.requests == []
    with pytest.raises(CommandError, match="HFT_BINANCE_API_KEY"):
        call_command("reconcile", "--exchange", "binance")


def test_sandbox_is_the_default_and_only_urls_we_override_leave_the_testnet(desk, live_settings, settings):
    ex = live_client.live_exchange("binance", symbol="BTC/USDT")
    assert ex.options["sandboxMode"] is True
    assert ex.urls["api"]["private"] == live_settings.urls()["private"]  # the fake, merged after sandbox mode
    assert ex.urls["api"]["v1"].startswith("https://testnet.binance.vision/")  # the rest: Binance's testnet
    assert ex.urls["apiBackup"]["private"].startswith("https://api.binance.com/")
    settings.HFT_LIVE_SANDBOX = False
    # With sandbox off and keys set, binance's load_markets also asks sapi for currencies and margin pairs;
    # the fake has no sapi (the loopback guard would catch the attempt).
    settings.HFT_LIVE_CCXT_CONFIG = {**settings.HFT_LIVE_CCXT_CONFIG,
                                     "options": {"fetchCurrencies": False, "fetchMargins": False}}
    real = live_client.live_exchange("binance", symbol="BTC/USDT")
    assert real.options["sandboxMode"] is False and "apiBackup" not in real.urls


# ---------------------------------------------------------------- entries


def test_entry_is_a_market_order_with_the_client_id_derived_from_the_signal(desk, live_settings):
    fake = live_settings
    signal = new_signal(desk["ghost"])
    position = signal_execute(signal_id=signal.pk, price=PRICE, at=AT, quantity=0.01)

    posted = fake.posted_orders()
    # The entry, then its protective stop on the exchange (tests/trading/test_live_protect.py).
    assert [p["newClientOrderId"] for p in posted] == [f"hft-{signal.pk}-entry", f"hft-{signal.pk}-stop1"]
    assert (posted[0]["side"], posted[0]["type"], Decimal(posted[0]["quantity"])) == ("BUY", "MARKET", ORDERED)
    assert ORDERED < Decimal("0.01")  # sized from the fill price, not the signal's close
    assert posted[0]["newOrderRespType"] == "FULL"
    assert all(m in ("GET", "POST") for m, _, _ in fake.requests)

    qty, avg, commission, fee_quote = exchange_figures(fake, fake.orders[0]["orderId"])
    assert position.mode == Mode.LIVE and position.status == Position.Status.OPEN
    assert position.quantity == qty.quantize(D8)
    assert abs(position.entry_price - avg) <= D8
    order = Order.objects.get(position=position, purpose="entry")
    fill = Fill.objects.get(order=order)
    assert (order.client_order_id, order.mode, order.status) == (f"hft-{signal.pk}-entry", Mode.LIVE, "filled")
    # The fee is the exchange's commission (BTC on a buy), converted at the fill price, not the fill model's.
    assert abs(fill.fee - fee_quote) <= Decimal("0.000001")
    assert commission == qty * Decimal("0.001")
    # Stops and targets keep the signal's distances, re-anchored on the real fill.
    assert abs(position.stop / position.entry_price - signal.stop / signal.entry) < Decimal("1e-9")
    signal.refresh_from_db()
    assert signal.fate == Fate.TAKEN
    audit = AuditEvent.objects.get(action="position.opened", object_id=str(position.pk))
    assert audit.after["fee_source"] == "exchange order" and audit.after["obtained"] == "placed"


def test_running_the_execution_twice_places_one_order(desk, live_settings):
    signal = new_signal(desk["ghost"])
    first = signal_execute(signal_id=signal.pk, price=PRICE, at=AT, quantity=0.01)
    again = signal_execute(signal_id=signal.pk, price=PRICE, at=AT, quantity=0.01)
    assert first is not None and again is None
    assert [p["type"] for p in live_settings.posted_orders()] == ["MARKET", "STOP_LOSS_LIMIT"]  # entry + its stop
    assert Position.objects.count() == 1 and Order.objects.count() == 2 and Fill.objects.count() == 1


def test_retry_after_a_crash_between_order_and_record_finds_the_order(desk, live_settings):
    """The first task placed the order and died before writing the ledger. The retry must not trade again."""
    fake = live_settings
    signal = new_signal(desk["ghost"])
    ex = live_client.live_exchange("binance", symbol="BTC/USDT")
    live_client.order_place_market(ex, symbol="BTC/USDT", side="buy", amount=0.01, ecid=f"hft-{signal.pk}-entry")
    assert not Position.objects.exists()

    position = signal_execute(signal_id=signal.pk, price=PRICE, at=AT, quantity=0.01)
    # The retry looked the entry up and did not POST it again (it posted the protective stop only).
    assert [p["newClientOrderId"] for p in fake.posted_orders()] == [f"hft-{signal.pk}-entry",
                                                                     f"hft-{signal.pk}-stop1"]
    assert ("GET", "/api/v3/order") in [(m, p) for m, p, _ in fake.requests]
    qty, avg, _, fee_quote = exchange_figures(fake, fake.orders[0]["orderId"])
    assert position.quantity == qty and abs(position.entry_price - avg) <= D8
    # The query-order response carries no fills: the fee came from the order's trades (GET myTrades).
    audit = AuditEvent.objects.get(action="position.opened")
    assert audit.after["obtained"] == "found" and audit.after["fee_source"] == "exchange trades"
    assert abs(Fill.objects.get().fee - fee_quote) <= Decimal("0.000001")


def test_duplicate_client_id_rejection_records_the_existing_order(desk, live_settings):
    """Two racing tasks: both miss the order in the lookup, one places it, the other gets Binance's
    -2010 "Duplicate order sent." and records the existing order instead of failing or trading again."""
    fake = live_settings
    signal = new_signal(desk["ghost"])
    cid = f"hft-{signal.pk}-entry"
    ex = live_client.live_exchange("binance", symbol="BTC/USDT")
    ex.create_order("BTC/USDT", "market", "buy", 0.01, None, {"clientOrderId": cid})  # the racing winner
    fake.hide_orders.add(cid)  # ... not yet visible to the loser's lookup

    position = signal_execute(signal_id=signal.pk, price=PRICE, at=AT, quantity=0.01)
    posted = fake.posted_orders()
    # The second POST was rejected; then the position's protective stop.
    assert [p["newClientOrderId"] for p in posted] == [cid, cid, f"hft-{signal.pk}-stop1"]
    assert [o["type"] for o in fake.orders] == ["MARKET", "STOP_LOSS_LIMIT"]
    assert fake.balances["BTC"] == Decimal("0.01") * Decimal("0.999")
    assert position is not None and position.quantity == Decimal("0.01")
    assert AuditEvent.objects.get(action="position.opened").after["obtained"] == "duplicate"


def test_signal_execute_at_market_goes_live_through_the_dispatch(desk, live_settings):
    from apps.runtime.evaluation import signal_execute_at_market

    signal = new_signal(desk["ghost"])
    bar_close_ms = int(signal.bar_time.timestamp() * 1000) + 60_000
    price_set(desk["instrument"].pk, float(PRICE), bar_close_ms + 250)
    signal_execute_at_market(signal_id=signal.pk, instrument_id=desk["instrument"].pk)  # sized by risk limits
    position = Position.objects.get(signal=signal)
    assert position.mode == Mode.LIVE
    posted = live_settings.posted_orders()
    assert [p["type"] for p in posted] == ["MARKET", "STOP_LOSS_LIMIT"]
    assert Decimal(posted[0]["quantity"]) == position.quantity
    # Default limits (10 000 start capital, 10 % notional cap) size it: a 0.01 step-rounded lot, below 1 100 USDT.
    assert Decimal("500") < position.quantity * position.entry_price < Decimal("1100")


def test_spot_short_is_blocked_not_sent(desk, live_settings):
    signal = new_signal(desk["ghost"], side=-1)
    assert signal_execute(signal_id=signal.pk, price=PRICE, at=AT, quantity=0.01) is None
    signal.refresh_from_db()
    assert signal.fate == Fate.BLOCKED_RISK and "cannot be shorted" in signal.fate_detail
    assert live_settings.posted_orders() == []


def test_below_the_exchange_minimum_is_blocked(desk, live_settings):
    signal = new_signal(desk["ghost"])
    assert signal_execute(signal_id=signal.pk, price=PRICE, at=AT, quantity=0.00004) is None  # 3.8 USDT < 5
    signal.refresh_from_db()
    assert signal.fate == Fate.BLOCKED_RISK and "minimum" in signal.fate_detail
    assert live_settings.posted_orders() == []


# ---------------------------------------------------------------- exits


def test_live_exit_sells_what_the_account_holds_and_the_ledger_matches_the_cash(desk, live_settings):
    fake = live_settings
    usdt_before = fake.balances["USDT"]
    signal = new_signal(desk["ghost"])
    opened = signal_execute(signal_id=signal.pk, price=PRICE, at=AT, quantity=0.01)
    fake.price = Decimal("95760.00")  # +0.8 %: the target
    closed = position_exit(position_id=opened.pk, price=float(opened.target), at=AT + timedelta(minutes=5),
                           reason=ExitReason.TARGET)
    posted = fake.posted_orders()
    assert [p["newClientOrderId"] for p in posted] == [f"hft-{signal.pk}-entry", f"hft-{signal.pk}-stop1",
                                                       f"hft-{signal.pk}-exit"]
    # The buy commission was paid in BTC: the account holds 0.1 % less than it bought; the lot step truncates.
    held = ORDERED * Decimal("0.999")
    assert (posted[2]["side"], Decimal(posted[2]["quantity"])) == ("SELL", held.quantize(LOT, rounding=ROUND_DOWN))
    assert closed.status == Position.Status.CLOSED and closed.exit_reason == ExitReason.TARGET
    assert Order.objects.filter(position=closed, purpose="exit", mode=Mode.LIVE).count() == 1
    # Ledger net P&L equals the account's quote cash flow plus the BTC dust left, valued at the entry price.
    usdt_delta = fake.balances["USDT"] - usdt_before
    dust = fake.balances["BTC"]
    assert dust == held - held.quantize(LOT, rounding=ROUND_DOWN) > 0
    assert abs(closed.net_pnl - (usdt_delta + dust * closed.entry_price)) < Decimal("0.0001")
    assert position_exit(position_id=closed.pk, price=95760.0, at=AT, reason="target") is None
    assert len(fake.posted_orders()) == 3


def test_a_live_position_is_never_closed_on_paper(desk, live_settings, settings):
    signal = new_signal(desk["ghost"])
    opened = signal_execute(signal_id=signal.pk, price=PRICE, at=AT, quantity=0.01)
    settings.HFT_LIVE_TRADING = False  # switched off while a live position is open
    assert position_exit(position_id=opened.pk, price=90000.0, at=AT, reason="stop") is None
    opened.refresh_from_db()
    assert opened.status == Position.Status.OPEN and len(live_settings.posted_orders()) == 2  # entry + its stop
    assert not live_settings.cancel_requests()


# ---------------------------------------------------------------- reconciliation


def _ledger_open_order(desk) -> Order:
    """A live entry the ledger thinks is open (status new, no fill) but that never reached the exchange."""
    signal = new_signal(desk["ghost"], minute=30)
    with_fate = Signal.objects.filter(pk=signal.pk)
    with_fate.update(fate=Fate.TAKEN)
    position = Position.objects.create(
        ghost=desk["ghost"], instrument=desk["instrument"], signal=signal, mode=Mode.LIVE, side="long",
        quantity=Decimal("0.01"), entry_price=PRICE, stop=PRICE * Decimal("0.99"), target=PRICE * Decimal("1.008"),
        opened_at=AT,
    )
    return Order.objects.create(position=position, instrument=desk["instrument"],
                                client_order_id=f"hft-{signal.pk}-entry", purpose="entry", side="buy",
                                quantity=Decimal("0.01"), mode=Mode.LIVE, status=Order.Status.NEW)


def test_reconcile_reports_exchange_orders_the_ledger_lacks_and_fixes_ledger_orders_the_exchange_lacks(
        desk, live_settings):
    fake = live_settings
    ours = fake.seed_open_order(client_id="hft-987654-entry")  # our id format, no such ledger order
    foreign = fake.seed_open_order(client_id="web_7f3a9c", side="SELL", price="99000.00")  # placed by hand
    ghost_order = _ledger_open_order(desk)

    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(SystemExit) as exited:
        call_command("reconcile", stdout=out, stderr=err)
    assert exited.value.code == 2  # something needs a person
    text = out.getvalue()
    assert "exchange_open_unknown" in text and str(ours["orderId"]) in text and "hft-987654-entry" in text
    assert "exchange_open_foreign" in text and str(foreign["orderId"]) in text and "web_7f3a9c" in text
    assert f"[fixed] ledger_open_missing: ledger order {ghost_order.client_order_id}" in text
    assert "is not on the exchange" in text

    ghost_order.refresh_from_db()
    assert ghost_order.status == Order.Status.REJECTED
    position = ghost_order.position
    position.refresh_from_db()
    assert position.status == Position.Status.CLOSED and position.net_pnl == 0  # voided, ledger-neutral
    assert fake.posted_orders() == []  # reconcile never trades or cancels
    actions = list(AuditEvent.objects.filter(action__startswith="reconcile.").values_list("action", flat=True))
    assert actions.count("reconcile.mismatch") == 2 and actions.count("reconcile.fixed") == 1
    run = AuditEvent.objects.get(action="reconcile.run")
    assert run.after["to_review"] == 2 and run.after["fixed"] == 1 and run.after["sandbox"] is True


def test_reconcile_records_a_filled_order_whose_record_was_lost(desk, live_settings):
    fake = live_settings
    signal = new_signal(desk["ghost"])
    ex = live_client.live_exchange("binance", symbol="BTC/USDT")
    live_client.order_place_market(ex, symbol="BTC/USDT", side="buy", amount=0.01, ecid=f"hft-{signal.pk}-entry")
    Signal.objects.filter(pk=signal.pk).update(fate=Fate.STALE)  # the dead task's signal went stale meanwhile

    report = live_reconcile.live_reconcile(exchange_code="binance")
    # The entry recorded from the exchange, then its protective stop placed (test_live_protect.py).
    assert [(f.kind, f.fixed) for f in report.findings] == [("exchange_fill_missing", True), ("protect_placed", True)]
    position = Position.objects.get(signal=signal)
    qty, avg, _, _ = exchange_figures(fake, fake.orders[0]["orderId"])
    assert position.mode == Mode.LIVE and position.quantity == qty and abs(position.entry_price - avg) <= D8
    signal.refresh_from_db()
    assert signal.fate == Fate.TAKEN and "the exchange's fill wins" in signal.fate_detail
    # Run again: nothing left to fix, the holdings cover the open long.
    again = live_reconcile.live_reconcile(exchange_code="binance")
    assert again.findings == [] and again.checked_positions == 1


def test_reconcile_reports_a_long_the_account_does_not_hold(desk, live_settings):
    signal = new_signal(desk["ghost"])
    signal_execute(signal_id=signal.pk, price=PRICE, at=AT, quantity=0.01)
    live_settings.balances["BTC"] = Decimal(0)  # sold by hand on the exchange
    report = live_reconcile.live_reconcile(exchange_code="binance")
    assert [(f.kind, f.fixed) for f in report.findings] == [("holding_short", False)]
    assert f"{ORDERED}" in report.findings[0].detail


def test_worker_start_reconciles_when_live_and_says_why_when_refused(desk, live_settings, monkeypatch, caplog):
    from celery.signals import worker_ready

    # Connected when apps.trading.tasks is imported, which every worker does (Celery's autodiscovery).
    import apps.trading.tasks  # noqa: F401
    assert "hftweb-live-reconcile" in [key[0] for key, _ in worker_ready.receivers]
    live_settings.seed_open_order(client_id="web_manual1")
    reports = live_reconcile.live_startup()
    assert [r.exchange for r in reports] == ["binance"] and reports[0].findings[0].kind == "exchange_open_foreign"
    monkeypatch.delenv("HFT_BINANCE_SECRET")
    live_client.live_clients_clear()
    with caplog.at_level(logging.CRITICAL, logger="apps.trading.live_reconcile"):
        assert live_reconcile.live_startup() == []
    assert "LIVE TRADING REFUSED" in caplog.text and "HFT_BINANCE_SECRET not set" in caplog.text


def test_keys_never_reach_logs_audit_rows_or_signals(desk, live_settings, caplog):
    with caplog.at_level(logging.DEBUG):
        signal = new_signal(desk["ghost"])
        opened = signal_execute(signal_id=signal.pk, price=PRICE, at=AT, quantity=0.01)
        position_exit(position_id=opened.pk, price=95000.0, at=AT, reason="manual")
        live_reconcile.live_reconcile(exchange_code="binance")
    stored = json.dumps(list(AuditEvent.objects.values("reason", "before", "after")))
    stored += json.dumps(list(Signal.objects.values("fate_detail")))
    for secret in (API_KEY, API_SECRET):
        assert secret not in caplog.text and secret not in stored
