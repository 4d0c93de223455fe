"""BarDecider.decide: the drafts of a chunk are evaluated before its bars are decided one by one; a ghost disabled
in between (an operator, auto-disable, a drawdown stop at a close) records no signal, as it would not have been
evaluated bar by bar; an enabled one is recorded, decided and filled at the given price."""

import math
from datetime import UTC, datetime

import pandas as pd
import pytest

from apps.engine.types import Draft
from apps.ghosts.services import ghost_set_enabled
from apps.runtime.evaluation import BarDecider
from apps.signals.models import Fate, Signal
from apps.trading.models import Position

pytestmark = pytest.mark.django_db

BAR = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def _draft() -> Draft:
    return Draft(side=1, confidence=0.9, priority=1, entry=100.0, stop=99.0, target=101.0, size_mult=1.0,
                 max_hold_s=math.nan, reason="test draft", bar_time=pd.Timestamp(BAR))


def test_a_ghost_disabled_since_its_chunk_records_nothing_and_an_enabled_one_trades(desk, operator):
    inst, ghost = desk["instrument"], desk["ghost"]
    next_open_ms = int(BAR.timestamp() * 1000) + 60_000
    ghost_set_enabled(ghost_id=ghost.pk, enabled=False, actor=operator, reason="test")
    decider = BarDecider(inst.pk)
    assert decider.decide(bar_time=BAR, drafts=[(ghost, _draft())], gate=None, price=100.0, ts_ms=next_open_ms) is False
    assert not Signal.objects.exists()

    ghost_set_enabled(ghost_id=ghost.pk, enabled=True, actor=operator, reason="test")
    assert decider.decide(bar_time=BAR, drafts=[(ghost, _draft())], gate=None, price=100.0, ts_ms=next_open_ms) is True
    signal = Signal.objects.get()
    assert (signal.ghost_id, signal.bar_time, signal.fate) == (ghost.pk, BAR, Fate.TAKEN)
    assert Position.objects.get().signal_id == signal.pk


def test_a_price_from_before_the_bar_closed_is_stale(desk):
    inst, ghost = desk["instrument"], desk["ghost"]
    before_close_ms = int(BAR.timestamp() * 1000) + 30_000  # a bar closed by the clock: the last trade is older
    assert BarDecider(inst.pk).decide(bar_time=BAR, drafts=[(ghost, _draft())], gate=None, price=100.0,
                                      ts_ms=before_close_ms) is False
    assert Signal.objects.get().fate == Fate.STALE and not Position.objects.exists()
