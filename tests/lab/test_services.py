"""Lab services in-process on real candles: settings validation (every refused request says which field and
why), a run executed inline to done with every result stored, cancel, the sweeper and re-queue, the criteria."""

import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.engine.fills import fill_model_for
from apps.engine.risk import RiskLimits
from apps.lab.models import BacktestRun, BacktestSignal, BacktestTrade, SuccessCriteria
from apps.lab.selectors import success_criteria
from apps.lab.series import series_unpack
from apps.lab.services import (
    LabError,
    lab_criteria_update,
    lab_run_cancel,
    lab_run_create,
    lab_run_execute,
    lab_run_requeue,
    lab_runs_sweep,
    lab_settings_validate,
)
from tests.lab.conftest import SLICE_END, SLICE_START, lab_request

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]


def errors_of(data) -> dict[str, list[str]]:
    with pytest.raises(LabError) as e:
        lab_settings_validate(data)
    return e.value.errors


def test_valid_request_gets_the_desk_defaults(btc) -> None:
    s = lab_settings_validate(lab_request(btc))
    assert s["fee"] == {"taker_fee": 0.001, "maker_fee": 0.001, "slippage_bps": 5.0} == \
        fill_model_for("binance").__dict__
    assert s["limits"] == RiskLimits().to_params()  # no RiskSettings row: the engine defaults, as the desk
    assert s["start_capital"] == "10000" and s["auto_disable"] is True and s["kill_switch"] is True
    assert s["sizing"]["mode"] == "risk"
    assert s["ghosts"][0]["params"]["spike_threshold_pct"] == 0.5  # normalised: every field, validated
    assert s["ghosts"][0]["name"] == "spike_fader" and s["ghosts"][0]["direction"] == "both"
    two = lab_settings_validate(lab_request(btc, ghosts=[{"kind": "spike_fader"}, {"kind": "spike_fader"}]))
    assert [g["name"] for g in two["ghosts"]] == ["spike_fader", "spike_fader 2"]


def test_empty_selection_and_bad_ghosts_are_refused_per_field(btc) -> None:
    assert "choose at least one ghost" in errors_of(lab_request(btc, ghosts=[]))["ghosts"][0]
    errs = errors_of(lab_request(btc, ghosts=[
        {"kind": "spike_fader", "params": {"spike_threshold_pct": 0.5}},  # take_profit 0.8 >= 0.5
        {"kind": "nope"},
        {"kind": "cvd_detector", "params": {"windw": 3}, "direction": "up"},
    ]))
    # the engine's own messages, as the Ghosts page shows them
    assert "take_profit_pct (0.8 %) must be below spike_threshold_pct" in errs["ghosts[0].params"][0]
    assert "unknown ghost kind 'nope'" in errs["ghosts[1].kind"][0]
    assert "unknown cvd_detector parameter(s): windw" in errs["ghosts[2].params"][0]
    assert "direction must be one of both, long, short" in errs["ghosts[2].direction"][0]


def test_range_errors(btc) -> None:
    errs = errors_of(lab_request(btc, start="2025-06-23", end="2025-06-22"))
    assert errs == {"end": ["end must be after start (end is exclusive)"]}
    errs = errors_of(lab_request(btc, start="2024-01-01", end="2024-02-01"))
    assert "no stored 1m candles of binance:BTC/USDT from 2024-01-01 00:00 to 2024-02-01 00:00 UTC" in errs["start"][0]
    assert "stored: 2025-06-21 00:00 to 2025-06-24 23:59 UTC (5,760 bars)" in errs["start"][0]
    assert "not a date/time" in errors_of(lab_request(btc, start="yesterday"))["start"][0]
    assert errors_of(lab_request(btc, instrument_id=999_999))["instrument_id"] == ["no instrument 999999"]


def test_money_limits_sizing_and_toggles_are_validated(btc) -> None:
    errs = errors_of(lab_request(btc, start_capital=-5, fee={"taker_fee": 0.5}, limits={"max_open_positions": 0},
                                 sizing={"mode": "martingale"}, kill_switch="yes", colour="red"))
    assert set(errs) == {"start_capital", "fee", "limits", "sizing", "kill_switch", "colour"}
    assert "taker_fee must be >= 0 and < 0.05" in errs["fee"][0]
    assert "max_open_positions must be >= 1" in errs["limits"][0]
    assert "mode" in errs["sizing"][0] and "martingale" in errs["sizing"][0]
    s = lab_settings_validate(lab_request(btc, start_capital="25000.50", fee={"slippage_bps": 0},
                                          limits={"max_trades_per_day": 7}))
    assert s["start_capital"] == "25000.50" and s["fee"]["slippage_bps"] == 0.0
    assert s["limits"]["max_trades_per_day"] == 7 and s["limits"]["max_open_positions"] == 3


def test_a_run_executes_inline_to_done_with_every_result_stored(btc, operator) -> None:
    run = lab_run_create(actor=operator, settings=lab_request(btc), queue=False)
    assert (run.status, run.bars_total, run.created_by) == ("queued", 5760, operator)
    assert len(run.fingerprint) == 64 and run.code_version.startswith("engine-")
    stages = []
    run = lab_run_execute(run_id=run.pk, on_stage=stages.append)
    assert run.status == "done", run.error
    assert stages == ["loading bars", "evaluating ghosts", "walking", "storing"]
    run = BacktestRun.objects.get(pk=run.pk)
    trades = list(BacktestTrade.objects.filter(run=run))
    assert len(trades) >= 5  # the sensitive fader trades on these real days
    figs = {f["key"]: f["value"] for f in run.summary["figures"]}
    assert figs["trades"] == len(trades)
    # the ledger identity: final equity = capital + sum of net P&L, to the cent, and the series ends there
    net = sum((t.net_pnl for t in trades), Decimal(0))
    assert Decimal(str(run.summary["final_equity"])).quantize(Decimal("0.01")) == (Decimal(10_000) + net).quantize(
        Decimal("0.01"))
    times, equity = series_unpack(run.series)
    assert len(times) == len(equity) == 5760 and equity[-1] == pytest.approx(run.summary["final_equity"])
    assert times[0] == int(SLICE_START.timestamp() * 1000)
    # every trade links to its taken signal; every signal row carries its draft
    sigs = BacktestSignal.objects.filter(run=run)
    assert sigs.filter(fate="taken").count() == len(trades) + run.summary["unfilled"]
    assert all(t.signal_id and t.signal.fate == "taken" and t.signal.bar_time == t.signal_time for t in trades)
    s = sigs.first()
    assert s.entry > 0 and s.stop > 0 and s.target > 0 and 0 <= s.confidence <= 1 and s.reason
    assert sum(d[1] for d in run.daily) == pytest.approx(float(net), abs=1e-6)
    assert [c["name"] for c in run.criteria] == ["win_rate", "sharpe", "max_drawdown", "profitable_streak",
                                                 "daily_loss", "daily_profit"]
    assert run.ghost_figures[0]["ghost"] == "spike_fader" and run.ghost_figures[0]["trades"] == len(trades)
    assert AuditEvent.objects.filter(action="lab_run.created", object_id=str(run.pk)).count() == 1
    again = lab_run_execute(run_id=run.pk)  # a second delivery is a no-op
    assert again.status == "done" and BacktestTrade.objects.filter(run=run).count() == len(trades)


def test_same_request_same_fingerprint_and_a_changed_one_differs(btc) -> None:
    a = lab_run_create(actor=None, settings=lab_request(btc), queue=False)
    b = lab_run_create(actor=None, settings=lab_request(btc), queue=False)
    c = lab_run_create(actor=None, settings=lab_request(btc, fee={"slippage_bps": 1}), queue=False)
    d = lab_run_create(actor=None, settings=lab_request(btc, end=(SLICE_END - timedelta(hours=1)).isoformat()),
                       queue=False)
    assert a.fingerprint == b.fingerprint and len({a.fingerprint, c.fingerprint, d.fingerprint}) == 3


def test_cancel_while_running_ends_cancelled_with_no_results(btc, operator) -> None:
    run = lab_run_create(actor=operator, settings=lab_request(btc), queue=False)

    def cancel_at_walk(stage: str) -> None:
        if stage == "walking":
            lab_run_cancel(run_id=run.pk, actor=operator)

    done = lab_run_execute(run_id=run.pk, on_stage=cancel_at_walk)
    assert done.status == "cancelled" and done.finished_at is not None
    assert not BacktestTrade.objects.filter(run=run).exists() and not BacktestSignal.objects.filter(run=run).exists()
    assert BacktestRun.objects.get(pk=run.pk).summary is None
    assert AuditEvent.objects.filter(action="lab_run.cancel", object_id=str(run.pk)).count() == 1


def test_cancel_of_a_queued_run_and_of_a_finished_one(btc, operator) -> None:
    run = lab_run_create(actor=operator, settings=lab_request(btc), queue=False)
    assert lab_run_cancel(run_id=run.pk, actor=operator).status == "cancelled"
    assert lab_run_execute(run_id=run.pk).status == "cancelled"  # the task, arriving later, does nothing
    ok = lab_run_create(actor=operator, settings=lab_request(btc), queue=False)
    lab_run_execute(run_id=ok.pk)
    assert lab_run_cancel(run_id=ok.pk, actor=operator).status == "done"  # finished runs stay as they are


def test_sweeper_fails_a_run_without_heartbeat_and_requeue_runs_it_again(btc, operator) -> None:
    run = lab_run_create(actor=operator, settings=lab_request(btc), queue=False)
    old = timezone.now() - timedelta(seconds=120)
    BacktestRun.objects.filter(pk=run.pk).update(status="running", started_at=old, heartbeat_at=old,
                                                 stage="walking")  # as a worker killed 2 minutes ago leaves it
    fresh = lab_run_create(actor=operator, settings=lab_request(btc), queue=False)
    now = timezone.now()
    BacktestRun.objects.filter(pk=fresh.pk).update(status="running", started_at=now, heartbeat_at=now)
    assert lab_runs_sweep() == [run.pk]  # 60 s default; the live one is left alone
    run.refresh_from_db()
    assert run.status == "failed" and run.error.startswith("worker lost: no heartbeat since") and "walking" in run.error
    with pytest.raises(LabError, match="only a failed, cancelled or queued run"):
        lab_run_requeue(run_id=fresh.pk, actor=operator)
    assert lab_run_requeue(run_id=run.pk, actor=operator).status == "queued"
    assert lab_run_execute(run_id=run.pk).status == "done"


def test_criteria_update_is_validated_and_audited(operator) -> None:
    assert success_criteria().win_rate_min_pct == 60.0 and success_criteria().capital_basis == Decimal(10_000)
    with pytest.raises(LabError, match="reason is required"):
        lab_criteria_update(actor=operator, reason=" ", sharpe_min=2)
    with pytest.raises(LabError, match="win_rate_min_pct"):
        lab_criteria_update(actor=operator, reason="tighter", win_rate_min_pct=140)
    row = lab_criteria_update(actor=operator, reason="tighter", sharpe_min=2, daily_profit_min=75)
    assert (row.sharpe_min, row.daily_profit_min) == (2.0, Decimal(75))
    assert SuccessCriteria.objects.count() == 1
    ev = AuditEvent.objects.get(action="lab_criteria.changed")
    assert ev.reason == "tighter" and ev.before["sharpe_min"] == 1.5 and ev.after["sharpe_min"] == 2.0




def test_ghosts_warm_up_on_stored_bars_before_the_start(btc) -> None:
    from apps.engine.registry import warmup_minutes_for

    start = SLICE_START + timedelta(days=1)
    run = lab_run_create(actor=None, settings=lab_request(btc, start=start.isoformat()), queue=False)
    warm = warmup_minutes_for("spike_fader", lab_settings_validate(lab_request(btc))["ghosts"][0]["params"])
    assert run.bars_total == 3 * 1440 + warm  # the range plus the history its ghost needs before it
    run = lab_run_execute(run_id=run.pk)
    assert run.status == "done", run.error
    run = BacktestRun.objects.get(pk=run.pk)
    assert run.summary["warmup_bars"] == warm and run.summary["bars"] == 3 * 1440
    assert run.summary["notes"][0].startswith(f"the ghosts warmed up on {warm:,} stored bars")
    times, _ = series_unpack(run.series)
    assert times[0] == int(start.timestamp() * 1000)  # equity (and trading) starts at the start
    trades = BacktestTrade.objects.filter(run=run)
    assert trades.exists() and not trades.filter(signal_time__lt=start).exists()
    assert not BacktestSignal.objects.filter(run=run, bar_time__lt=start).exists()


def test_stake_sizing_and_the_switches_reach_the_engine(btc) -> None:
    settings = lab_request(btc, sizing={"mode": "stake", "stake": 1000}, auto_disable=False, kill_switch=False,
                           fee={"slippage_bps": 0})
    run = lab_run_execute(run_id=lab_run_create(actor=None, settings=settings, queue=False).pk)
    assert run.status == "done", run.error
    run = BacktestRun.objects.get(pk=run.pk)
    trades = list(BacktestTrade.objects.filter(run=run))
    # with auto-disable on, this fader is switched off after 10 trades on these days (profit factor < 0.8)
    assert len(trades) > 10 and run.ghost_figures[0]["disabled"] is None
    assert "ghost_disabled" not in run.ghost_figures[0]["fates"]
    # a fixed stake: every entry's notional is 1,000 USDT (qty = stake / fill price, quantised to 1e-8)
    assert all(abs(t.entry_price * t.qty - 1000) < Decimal("0.001") for t in trades)


def test_the_progress_callback_heartbeats_checks_cancel_and_throttles_pushes(btc, monkeypatch) -> None:
    from apps.lab import services

    pushes = []
    monkeypatch.setattr(services, "send_now", lambda group, event: pushes.append((group, event)))
    run = lab_run_create(actor=None, settings=lab_request(btc), queue=False)
    now = timezone.now()
    BacktestRun.objects.filter(pk=run.pk).update(status="running", started_at=now, heartbeat_at=now)
    run = BacktestRun.objects.get(pk=run.pk)
    tracker = services._Tracker(run)
    tracker.walk_t0 = time.monotonic()
    t0 = time.monotonic()
    i = 0
    while time.monotonic() - t0 < 1.2:  # a walk calling back far more often than anyone should push
        i += 1
        tracker.progress("walk", i % 5760, 5760)
    elapsed = time.monotonic() - t0
    assert 3 <= len(pushes) <= elapsed / services.PUSH_EVERY_S + 2  # at most ~4 a second, however often called
    assert pushes[-1][0] == "lab" and pushes[-1][1]["bars_per_s"] > 0 and pushes[-1][1]["eta_s"] is not None
    beat = BacktestRun.objects.get(pk=run.pk)
    assert beat.heartbeat_at > now and beat.bars_done > 0  # written at most every 0.5 s
    BacktestRun.objects.filter(pk=run.pk).update(cancel_requested=True)
    tracker.last_beat = 0.0
    with pytest.raises(services.RunCancelled):
        tracker.progress("walk", 10, 5760)
    BacktestRun.objects.filter(pk=run.pk).update(status="failed")  # swept meanwhile: the worker must stop
    tracker.last_beat = 0.0
    with pytest.raises(services.RunLost):
        tracker.progress("walk", 11, 5760)
