"""The signal manager service on stored signals: fates with reasons, one taken, risk limits and the kill
switch enforced, auto-disable after losing trades. Real DB, real engine arbitration."""

from datetime import timedelta
from decimal import Decimal

import pandas as pd
import pytest

from apps.audit.models import AuditEvent
from apps.engine.types import Draft
from apps.ghosts.models import Ghost, GhostStatus
from apps.ghosts.services import ghost_create
from apps.market.models import FeedStatus
from apps.revenue.services import ghost_review
from apps.runtime.manager import bar_decide
from apps.signals.models import Fate, Signal
from apps.signals.services import signal_record
from apps.trading.models import KillSwitch, Position
from apps.trading.risk_services import RiskError, kill_switch_reset, kill_switch_trip, risk_limits_set, risk_watch
from apps.trading.services import position_close, signal_execute_paper
from tests.datafiles import synthetic_bars

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]
BAR = pd.Timestamp("2026-03-02 10:00", tz="UTC")


def draft(side: int, conf: float, entry: float = 100.0) -> Draft:
    return Draft(side=side, confidence=conf, priority=2, entry=entry, stop=entry * (1 - 0.01 * side),
                 target=entry * (1 + 0.01 * side), size_mult=1.0, max_hold_s=3600, reason=f"test {side} {conf}",
                 bar_time=BAR)


@pytest.fixture
def three(desk):
    inst = desk["instrument"]
    a = desk["ghost"]
    b = ghost_create(name="fader-2", kind="spike_fader", instrument=inst, enabled=True)
    c = ghost_create(name="fader-3", kind="spike_fader", instrument=inst, enabled=True)
    return inst, a, b, c


def decide(inst, now_offset_s: float = 1.0):
    bars = synthetic_bars([100.0] * 5, start="2026-03-02 09:56")
    return bar_decide(instrument_id=inst.pk, bar_time=BAR.to_pydatetime(), bars=bars,
                      now_s=BAR.timestamp() + 60 + now_offset_s)


def test_every_draft_gets_a_fate_and_one_is_left_to_fill(three):
    inst, a, b, c = three
    for g, d in ((a, draft(1, 0.6)), (b, draft(1, 0.9)), (c, draft(-1, 0.2))):
        signal_record(ghost=g, bar_time=BAR.to_pydatetime(), draft=d)
    signal, decision = decide(inst)
    assert signal.ghost_id == b.pk and decision.fate == "taken" and decision.quantity > 0
    fates = {s.ghost_id: (s.fate, s.fate_detail) for s in Signal.objects.all()}
    assert fates[b.pk][0] == Fate.PENDING  # taken by the manager, TAKEN once filled
    assert fates[a.pk][0] == Fate.OUTSCORED and "fader-2" in fates[a.pk][1]
    assert fates[c.pk][0] == Fate.OUTSCORED
    again, _ = decide(inst)  # a retried task (killed before the fill) decides again: the same one
    assert again == signal and Signal.objects.filter(fate=Fate.PENDING).count() == 1
    pos = signal_execute_paper(signal_id=signal.pk, price=Decimal("100"), at=BAR.to_pydatetime() + timedelta(minutes=1),
                               quantity=decision.quantity)
    assert pos is not None and Signal.objects.get(pk=signal.pk).fate == Fate.TAKEN
    assert decide(inst) == (None, None)


def test_conflict_stale_and_disabled(three):
    inst, a, b, c = three
    signal_record(ghost=a, bar_time=BAR.to_pydatetime(), draft=draft(1, 0.9))
    signal_record(ghost=b, bar_time=BAR.to_pydatetime(), draft=draft(-1, 0.88))
    signal_record(ghost=c, bar_time=BAR.to_pydatetime(), draft=draft(1, 0.5))
    Ghost.objects.filter(pk=c.pk).update(enabled=False, status=GhostStatus.DISABLED)
    assert decide(inst) == (None, None)
    fates = dict(Signal.objects.values_list("ghost_id", "fate"))
    assert fates == {a.pk: Fate.CONFLICT, b.pk: Fate.CONFLICT, c.pk: Fate.GHOST_DISABLED}
    Signal.objects.all().delete()
    signal_record(ghost=a, bar_time=BAR.to_pydatetime(), draft=draft(1, 0.9))
    assert decide(inst, now_offset_s=3600) == (None, None)
    assert Signal.objects.get().fate == Fate.STALE


def test_kill_switch_blocks_entries_until_an_operator_resets_it(three, operator):
    inst, a, b, c = three
    kill_switch_trip(actor=operator, reason="testing the switch")
    signal_record(ghost=a, bar_time=BAR.to_pydatetime(), draft=draft(1, 0.9))
    assert decide(inst) == (None, None)
    s = Signal.objects.get()
    assert s.fate == Fate.BLOCKED_RISK and s.fate_detail.startswith("kill_switch")
    with pytest.raises(RiskError, match="reason is required"):
        kill_switch_reset(actor=operator, reason=" ")
    assert KillSwitch.objects.get().tripped
    kill_switch_reset(actor=operator, reason="checked, back to work")
    assert not KillSwitch.objects.get().tripped
    actions = list(AuditEvent.objects.filter(action__startswith="killswitch").values_list("action", flat=True))
    assert sorted(actions) == ["killswitch.reset", "killswitch.tripped"]


def test_daily_loss_trips_the_switch_and_it_stays_tripped(three):
    inst, a, b, c = three
    signal, _ = signal_record(ghost=a, bar_time=BAR.to_pydatetime(), draft=draft(1, 0.9, entry=100.0))
    at = BAR.to_pydatetime() + timedelta(minutes=1)
    signal_execute_paper(signal_id=signal.pk, price=Decimal("100"), at=at, quantity=10.0)  # 1 000 notional
    FeedStatus.objects.filter(instrument=inst).update(last_price=Decimal("60"), last_trade_at=at)
    text = risk_watch()  # -40 % on the position = -400 - fees, over 4 % of start-of-day equity
    assert text and "daily loss" in text and KillSwitch.objects.get().tripped
    FeedStatus.objects.filter(instrument=inst).update(last_price=Decimal("100"))  # recovered: the switch stays
    assert risk_watch() is None and KillSwitch.objects.get().tripped


def test_limits_are_validated_and_audited(operator):
    with pytest.raises(RiskError, match="risk.max_daily_loss_pct"):
        risk_limits_set(params={"max_daily_loss_pct": 0}, actor=operator, reason="oops")
    limits = risk_limits_set(params={"max_trades_per_day": 5}, actor=operator, reason="calmer day")
    assert limits.max_trades_per_day == 5
    assert AuditEvent.objects.filter(action="risk.limits_changed").count() == 1


def test_a_losing_ghost_is_auto_disabled_with_the_numbers(desk):
    ghost = desk["ghost"]
    Ghost.objects.filter(pk=ghost.pk).update(auto_disable={"min_trades": 3})
    t = BAR.to_pydatetime()
    for k in range(3):
        bar = t + timedelta(minutes=10 * k)
        signal, _ = signal_record(ghost=ghost, bar_time=bar, draft=draft(1, 0.9))
        signal_execute_paper(signal_id=signal.pk, price=Decimal("100"), at=bar + timedelta(minutes=1), quantity=1.0)
        position_close(position_id=Position.objects.get(status="open").pk, price=99.0,
                       at=bar + timedelta(minutes=2), reason="stop")
    # position_close runs the review after commit; this test's transaction never commits, so run it here
    reasons = ghost_review(ghost_id=ghost.pk)
    g = Ghost.objects.get(pk=ghost.pk)
    assert not g.enabled and g.status == GhostStatus.DISABLED
    assert "win rate 0.0% over 3 trades" in g.status_reason and "win rate" in reasons[0]
    assert ghost_review(ghost_id=ghost.pk) == []  # off stays off until an operator re-enables it
    assert AuditEvent.objects.filter(action="ghost.disabled", reason__contains="auto-disabled").exists()
