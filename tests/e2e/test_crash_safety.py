"""Crash safety of bar evaluation and paper fills (issue 5), with a real prefork Celery worker and Redis.

Each iteration evaluates one REAL spike bar of the 90-day Binance BTC/USDT 1m file (the bars the default
spike fader fires on; its warm-up window is stored as candles, the next bar's real open is the feed's last
price just after the close) for two spike-fader ghosts, and SIGKILLs the worker at a chosen point:

- where: a crash point of tests/e2e/crashpoints.py (loaded only by these workers, via crash_settings.py):
  inside the evaluation's signal insert, inside the fill transaction after the position, after the entry
  fill, after the signal is marked taken, or after that transaction committed but before the task is acked.
  The worker holds the point open (sleeping in its transaction) until the test kills it, so the window is
  deterministic; before the kill the test checks that nothing uncommitted is visible.
- how, alternately:
  * "child": SIGKILL of the pool process running the task. The worker's main process sees the lost child and,
    because evaluate_bar is acks_late=True with reject_on_worker_lost=True, re-queues the message itself.
  * "worker": SIGKILL of the whole worker (main and pool processes, as an OOM kill or a lost host). Nobody
    is left to re-queue: the message stays in Redis's unacked set and a NEW worker re-delivers it once it is
    older than the broker's visibility timeout (settings CELERY_BROKER_TRANSPORT_OPTIONS; 120 s in the desk,
    3 s for these workers through HFT_BROKER_VISIBILITY_TIMEOUT so that the test does not wait two minutes).
  Either way Celery itself re-delivers; the test never re-queues the killed task.

Then the same bar is evaluated once more on purpose (idempotency), and the test asserts: exactly one Signal
per ghost that drafts on the bar (the drafting ghosts come from the pure engine on the same bars), none left
pending, exactly one taken, with one position, one entry order (client order id derived from the signal),
one fill and one audit row; and over the whole run no position without its entry fill and no taken signal
without a position. The position is then closed at its target (test process) so the next bar may trade.

Default run: 3 iterations. `pytest -m slow tests/e2e/test_crash_safety.py` runs HFT_CRASH_ITERATIONS (20).
"""

import os
import time
from datetime import timedelta
from decimal import Decimal

import pandas as pd
import pytest

from apps.audit.models import AuditEvent
from apps.engine.registry import latest_draft, warmup_minutes_for
from apps.engine.spike_fader import SpikeFaderConfig, evaluate
from apps.ghosts.models import Ghost
from apps.ghosts.services import ghost_create
from apps.market.models import Candle
from apps.market.prices import price_set
from apps.runtime.tasks import evaluate_bar
from apps.signals.models import Fate, Signal
from apps.trading.models import Fill, Order, Position
from apps.trading.services import position_close
from tests.datafiles import BTC_90D, load_freqtrade_1m
from tests.e2e.procs import (
    crash_point_arm,
    crash_point_wait,
    foreign_workers,
    proc_kill,
    worker_kill_at,
    worker_log,
    worker_start,
)

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]
POINTS = ["fill", "committed", "signal", "taken", "position"]
VISIBILITY_S = 3
WORKER_ENV = {"DJANGO_SETTINGS_MODULE": "tests.e2e.crash_settings", "HFT_BROKER_VISIBILITY_TIMEOUT": str(VISIBILITY_S)}
WARM = pd.Timedelta(hours=5)  # a spike this far into the file has its full warm-up window
SECOND_GHOST = {"spike_threshold_pct": 1.0, "priority": 1}


def _spike_bars(n: int) -> tuple[pd.DataFrame, list[pd.Timestamp]]:
    btc = load_freqtrade_1m(BTC_90D)
    drafts = evaluate(btc, SpikeFaderConfig())
    fired = drafts.index[drafts["side"] != 0]
    picked = [t for t in fired if t - btc.index[0] > WARM and t + pd.Timedelta("1min") in btc.index]
    assert len(picked) >= n, f"only {len(picked)} spike bars in the real file for {n} iterations"
    return btc, picked[:n]


def _store_windows(instrument, btc: pd.DataFrame, bars: list[pd.Timestamp], minutes: int) -> None:
    rows, seen = [], set()
    for t in bars:
        for ts, r in btc.loc[t - pd.Timedelta(minutes=minutes): t].iterrows():
            if ts in seen:
                continue
            seen.add(ts)
            d = {k: Decimal(repr(float(r[k]))) for k in ("open", "high", "low", "close", "volume")}
            rows.append(Candle(instrument=instrument, open_time=ts.to_pydatetime(), **d))
    Candle.objects.bulk_create(rows)


class Crasher:
    """One worker under test at a time (queues ghosts+default, -c 2), restarted after a whole-worker kill."""

    def __init__(self) -> None:
        self.n = 0
        self.worker = self._start()

    def _start(self):
        self.n += 1
        return worker_start(f"crash{self.n}", queues="ghosts,default", concurrency=2, env=WORKER_ENV)

    def wait_hit(self, point: str, timeout: float = 60) -> int:
        return crash_point_wait(point, self.worker, timeout)

    def kill(self, mode: str, pid: int) -> None:
        hit_at = time.monotonic()
        worker_kill_at(self.worker, pid, mode)
        if mode == "child":
            return
        # The restarted worker re-queues the unacked message at start-up if it is older than the timeout.
        time.sleep(max(0.0, VISIBILITY_S + 0.5 - (time.monotonic() - hit_at)))
        self.worker = self._start()

    def close(self) -> None:
        proc_kill(self.worker)


@pytest.fixture
def crasher(desk):
    others = foreign_workers(set())
    assert not others, f"other Celery workers share this broker and would take the tasks: {others}"
    c = Crasher()
    try:
        yield c
    finally:
        c.close()


def _expected_ghosts(ghosts: list[Ghost], btc: pd.DataFrame, t: pd.Timestamp, minutes: int) -> set[int]:
    """The ghosts that draft on bar t, from the pure engine on the same window the task loads."""
    window = btc.loc[t - pd.Timedelta(minutes=minutes - 1): t]
    return {g.pk for g in ghosts if latest_draft(g.kind, g.params, window) is not None}


def _settled(instrument_id: int, bar_time, expected: set[int]) -> bool:
    sigs = Signal.objects.filter(instrument_id=instrument_id, bar_time=bar_time)
    return set(sigs.values_list("ghost_id", flat=True)) == expected and not sigs.filter(fate=Fate.PENDING).exists()


def _check_uncommitted_invisible(point: str, instrument_id: int, bar_time, expected: set[int]) -> None:
    """While the killed process holds its transaction open, none of it is visible to anyone else."""
    sigs = Signal.objects.filter(instrument_id=instrument_id, bar_time=bar_time)
    positions = Position.objects.filter(signal__in=sigs)
    if point == "signal":
        assert sigs.count() < len(expected)
    elif point == "committed":
        assert positions.count() == 1 and sigs.filter(fate=Fate.TAKEN).count() == 1
        assert Fill.objects.filter(order__position__in=positions).count() == 1
    else:
        assert not positions.exists() and not sigs.filter(fate=Fate.TAKEN).exists()
        assert not Order.objects.filter(client_order_id__in=[f"hft-{s.pk}-entry" for s in sigs]).exists()


def _assert_bar_once(instrument_id: int, bar_time, expected: set[int]) -> Position:
    sigs = list(Signal.objects.filter(instrument_id=instrument_id, bar_time=bar_time))
    assert sorted(s.ghost_id for s in sigs) == sorted(expected), "one signal per drafting ghost, none lost"
    assert not [s for s in sigs if s.fate == Fate.PENDING]
    taken = [s for s in sigs if s.fate == Fate.TAKEN]
    assert len(taken) == 1, [(s.ghost_id, s.fate, s.fate_detail) for s in sigs]
    position = Position.objects.get(signal=taken[0])
    order = Order.objects.get(position=position)
    assert order.client_order_id == f"hft-{taken[0].pk}-entry" and order.purpose == "entry"
    fill = Fill.objects.get(order=order)
    assert fill.quantity == position.quantity and fill.price == position.entry_price
    assert AuditEvent.objects.filter(action="position.opened", object_id=str(position.pk)).count() == 1
    return position


def _assert_ledger_consistent() -> None:
    for p in Position.objects.all():
        entry = Order.objects.filter(position=p, purpose="entry")
        assert entry.count() == 1 and Fill.objects.filter(order__in=entry).count() == 1, f"{p} without its entry"
        assert p.signal.fate == Fate.TAKEN
    assert not Signal.objects.filter(fate=Fate.TAKEN, position__isnull=True).exists()
    assert all(Fill.objects.filter(order=o).count() == 1 for o in Order.objects.all())


def _run(desk, crasher: Crasher, iterations: int) -> None:
    inst = desk["instrument"]
    ghost_create(name="fader-fast", kind="spike_fader", instrument=inst, params=SECOND_GHOST, enabled=True)
    ghosts = list(Ghost.objects.filter(instrument=inst, enabled=True))
    minutes = max(warmup_minutes_for(g.kind, g.params) for g in ghosts) + 1
    btc, bars = _spike_bars(iterations)
    _store_windows(inst, btc, bars, minutes)

    report = []
    for i, t in enumerate(bars):
        point, mode = POINTS[i % len(POINTS)], ("worker" if i % 2 else "child")
        bar_time = t.to_pydatetime()
        expected = _expected_ghosts(ghosts, btc, t, minutes)
        assert desk["ghost"].pk in expected  # the default fader fires on the bars it fired on in the backtest
        close_ms = int(t.timestamp() * 1000) + 60_000
        price_set(inst.pk, float(btc.loc[t + pd.Timedelta("1min"), "open"]), close_ms + 250)
        crash_point_arm(point)

        first = evaluate_bar.delay(inst.pk, bar_time.isoformat())
        pid = crasher.wait_hit(point)
        _check_uncommitted_invisible(point, inst.pk, bar_time, expected)
        killed_at = time.monotonic()
        crasher.kill(mode, pid)
        # The SAME message, re-delivered by Celery, runs to the end (its result is stored only then).
        first.get(timeout=60)
        recovered_s = time.monotonic() - killed_at
        assert _settled(inst.pk, bar_time, expected)

        again = evaluate_bar.delay(inst.pk, bar_time.isoformat()).get(timeout=60)
        assert again == [], "a second evaluation of the bar created signals"
        position = _assert_bar_once(inst.pk, bar_time, expected)
        _assert_ledger_consistent()
        report.append(f"{t:%Y-%m-%d %H:%M} {point}/{mode}: {len(expected)} signals, "
                      f"{position.side} filled, recovered in {recovered_s:.1f} s")
        closed = position_close(position_id=position.pk, price=float(position.target),
                                at=bar_time + timedelta(minutes=2), reason="target")
        assert closed is not None

    lost = [line for line in worker_log(crasher.worker).splitlines() if "exited with 'signal 9" in line]
    print(f"\ncrash safety, {iterations} iterations (kill -> bar settled):\n  " + "\n  ".join(report))
    print(f"  signals {Signal.objects.count()}, positions {Position.objects.count()}, orders "
          f"{Order.objects.count()}, fills {Fill.objects.count()}; the last worker saw {len(lost)} of its "
          "pool processes SIGKILLed")
    assert Position.objects.count() == iterations
    entries = Order.objects.filter(purpose="entry").count()
    assert entries == Fill.objects.filter(order__purpose="entry").count() == iterations


def test_sigkill_during_evaluation_and_fill_loses_and_duplicates_nothing(desk, crasher):
    _run(desk, crasher, 3)


@pytest.mark.slow
def test_sigkill_loop(desk, crasher):
    _run(desk, crasher, int(os.environ.get("HFT_CRASH_ITERATIONS", "20")))
