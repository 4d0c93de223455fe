"""The lab backtest applies the instrument's lot rules as the paper desk does (issue 11's leftover).

The real 2020-01-02 BTC/USDT day is replayed through the running desk (feed task, ghosts, manager, paper executor)
on an instrument with coarse rules: a 0.5 USDT price tick, a 0.01 BTC amount step and a 950 USDT minimum notional.
The desk sizes ~1,000 USDT a trade (10 % of equity), so each quantity is rounded down to 0.13 or 0.14 BTC and the
first entry (at ~7,155: 0.13 BTC = 930 USDT) is refused. The lab's run over the same stored bars (the one-click
desk comparison) must take the same trades to the last digit and refuse the same entry with the same words; and
without the rules the same run trades differently (so the comparison means something)."""

from datetime import UTC, datetime
from decimal import Decimal

import pandas as pd
import pytest
from django.utils import timezone

from apps.engine.backtest import BacktestConfig, GhostSetup, run_backtest
from apps.engine.lots import LotRules
from tests.datafiles import require

DAY = "klines/binance_vision_spot_BTCUSDT_1m/BTCUSDT-1m-2020-01-02.zip"
PARAMS = {"spike_threshold_pct": 0.5, "take_profit_pct": 0.4, "min_target_pct": 0.15, "min_stop_pct": 0.3,
          "min_volume_ratio": 1.2, "cooldown_seconds": 900, "max_hold_seconds": 1800}
RULES = {"price_tick": Decimal("0.5"), "amount_step": Decimal("0.01"), "min_amount": Decimal("0.01"),
         "min_notional": Decimal("950")}
REFUSED = "lot: notional 930.15 USDT below the minimum 950 USDT of BTC/USDT on binance"


def on_grid(x: Decimal, step: Decimal) -> bool:
    return x % step == 0


def test_engine_rounds_refuses_and_without_rules_is_unchanged() -> None:
    """Pure: the same bars with and without rules; no rule known = exactly the run before lot rules existed."""
    from apps.market.importers import read_klines

    bars = read_klines(require(DAY)).set_index("open_time")
    ghosts = [GhostSetup(ghost_id=1, name="g", kind="spike_fader", config=PARAMS)]
    plain = run_backtest(bars, ghosts, BacktestConfig())
    assert run_backtest(bars, ghosts, BacktestConfig(lots=LotRules())).trades == plain.trades  # nothing known
    lots = run_backtest(bars, ghosts, BacktestConfig(lots=LotRules(label="BTC/USDT on binance", quote="USDT", **RULES)))
    assert len(plain.trades) == 5 and len(lots.trades) == 4
    for t in lots.trades:
        assert on_grid(t.qty, RULES["amount_step"]) and t.qty * t.entry_price >= RULES["min_notional"]
        assert on_grid(t.entry_price, RULES["price_tick"]) and on_grid(t.exit_price, RULES["price_tick"])
    first = lots.fates.iloc[0]
    assert (first.fate, first.detail) == ("blocked_risk", REFUSED)
    assert lots.final_equity == lots.start_capital + sum((t.net_pnl for t in lots.trades), Decimal(0))


@pytest.mark.django_db(transaction=True)
def test_a_lab_run_sizes_and_refuses_as_the_paper_desk_on_the_same_bars(desk, operator) -> None:
    from apps.lab.desk_compare import BACKTEST_ONLY, DESK_ONLY, DIFFERS, SAME, desk_comparison, lab_desk_compare_create
    from apps.lab.models import BacktestSignal, BacktestTrade
    from apps.lab.services import lab_run_execute
    from apps.market.models import FeedStatus, Instrument
    from apps.runtime.tasks import run_feed
    from apps.signals.models import Signal
    from apps.trading.models import Position

    path = require(DAY)
    inst, ghost = desk["instrument"], desk["ghost"]
    Instrument.objects.filter(pk=inst.pk).update(markets_checked_at=timezone.now(), **RULES)
    ghost.params = PARAMS
    ghost.save(update_fields=["params"])
    FeedStatus.objects.filter(instrument=inst).update(source=f"replay:{path}@max")
    assert run_feed(inst.pk) == "stopped"

    positions = list(Position.objects.order_by("opened_at"))
    refused = list(Signal.objects.filter(fate="blocked_risk", fate_detail__startswith="lot: "))
    assert [s.fate_detail for s in refused] == [REFUSED]  # the paper desk refused the first entry
    assert len(positions) == 4 and all(on_grid(p.quantity, RULES["amount_step"]) for p in positions)

    start, end = datetime(2020, 1, 2, tzinfo=UTC), datetime(2020, 1, 3, tzinfo=UTC)
    run = lab_desk_compare_create(actor=operator, instrument_id=inst.pk, start=start, end=end, queue=False)
    assert lab_run_execute(run_id=run.pk).status == "done"

    def desk_trades() -> list[tuple]:
        return [(pd.Timestamp(p.signal.bar_time), 1 if p.side == "long" else -1, p.entry_price, p.exit_price,
                 p.quantity, p.exit_reason, p.fees) for p in positions]

    def lab_trades(r) -> list[tuple]:
        return [(pd.Timestamp(t.signal_time), t.side, t.entry_price, t.exit_price, t.qty, t.reason,
                 t.entry_fee + t.exit_fee) for t in BacktestTrade.objects.filter(run=r).order_by("seq")]

    # on the tick grid both sides hold the same prices exactly, not just to 1e-6 as without rules
    assert lab_trades(run) == desk_trades()
    [lab_refused] = BacktestSignal.objects.filter(run=run, fate="blocked_risk")
    assert (lab_refused.bar_time, lab_refused.detail) == (refused[0].bar_time, REFUSED)
    cmp = desk_comparison(run)
    assert cmp.counts[SAME] == 4 and cmp.counts[DESK_ONLY] == cmp.counts[BACKTEST_ONLY] == cmp.counts[DIFFERS] == 0
    run.refresh_from_db()
    assert any(n.startswith("lot rules of BTC/USDT on binance applied") and "1 entry refused" in n
               for n in run.summary["notes"])

    # the same run without the instrument's rules: five trades, off the grid; the fingerprint tells them apart
    Instrument.objects.filter(pk=inst.pk).update(price_tick=None, amount_step=None, min_amount=None,
                                                 min_notional=None)
    bare = lab_desk_compare_create(actor=operator, instrument_id=inst.pk, start=start, end=end, queue=False)
    assert lab_run_execute(run_id=bare.pk).status == "done"
    assert len(lab_trades(bare)) == 5 and lab_trades(bare) != desk_trades()
    bare.refresh_from_db()
    assert bare.fingerprint != run.fingerprint


def test_a_parameter_studys_trials_apply_the_rules_too(btc, operator) -> None:
    """A study's trials run the lab's backtest inputs: the instrument's rules reach their engine config."""
    from apps.market.models import Instrument
    from apps.research import services as research
    from tests.lab.conftest import SENSITIVE_FADER, SLICE_END, SLICE_START

    Instrument.objects.filter(pk=btc.pk).update(**RULES)
    study = research.study_create(actor=operator, queue=False, settings={
        "instrument_id": btc.pk, "start": SLICE_START.isoformat(), "end": SLICE_END.isoformat(),
        "target": "spike_fader", "params": dict(SENSITIVE_FADER),
        "space": [{"name": "spike_threshold_pct", "low": 0.5, "high": 1.5, "step": 0.05}],
        "objective": "net_pnl", "min_trades": 1, "scheme": "rolling", "train_days": 2, "test_days": 1,
        "sampler": "tpe", "seed": 7, "budget_trials": 2, "batch_size": 2})
    research._CONTEXTS.clear()  # a fresh worker's view: the rules are read when the study's context is loaded
    try:
        cfg = research._context(study.pk, study.fingerprint).ctx.cfg
    finally:
        research._CONTEXTS.clear()
    assert cfg.lots == LotRules(label="BTC/USDT on binance", quote="USDT", **RULES)
