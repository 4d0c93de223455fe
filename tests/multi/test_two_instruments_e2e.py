"""Two instruments at once through the running desk, with a real worker (issue 11): positions on both, and the
cross-instrument cap refusing a third instrument's entry with the reason shown on its signal's page.

Real processes as the desk runs them: Redis, one prefork Celery worker of the test's own (feeds, ghosts, default),
feeds started the way beat starts them (supervise_feeds -> run_feed). Each instrument replays a 1-minute kline
file written here (freqtrade CSV, @max): 420 quiet minutes at its own price with one +2 % one-bar spike at minute
300 on five times the volume, then flat at the top. The file's own head warms the spike fader up (its window is
235 minutes), it fades the spike (short, stop >= 0.6 % above, target below; max hold a week), and the flat top
leaves the position open after the replay ends. Risk: max_total_notional_pct = 25 % of equity; each fade is sized
at the 10 % notional cap, so BTC/USDT and ETH/USDT (replayed side by side) both open, and SOL/USDT, started once
both are open, is refused: 2 open + its own 10 % > 25 %.

Run: `RUN_DIR=/tmp/I-run .venv/bin/pytest tests/multi/test_two_instruments_e2e.py -q -s`
"""

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from apps.ghosts.services import ghost_create
from apps.market.models import Exchange, FeedStatus, Instrument
from apps.runtime.tasks import supervise_feeds
from apps.signals.models import Fate, Signal
from apps.trading.models import Position
from apps.trading.risk_services import risk_limits_set
from tests.e2e.procs import foreign_workers, proc_kill, wait_until, worker_start

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]
START = datetime(2026, 2, 2, tzinfo=UTC)
SPIKE_AT, MINUTES = 300, 420
PRICES = {"BTC/USDT": 100_000.0, "ETH/USDT": 3_500.0, "SOL/USDT": 150.0}
WEEK_S = 7 * 24 * 3600


def spike_file(folder: Path, symbol: str, price: float, seed: int) -> str:
    """A freqtrade 1m CSV: quiet at `price` (0.02 % noise), +2 % in one bar at SPIKE_AT on 20x volume, flat after."""
    rng = np.random.default_rng(seed)
    close = price * (1 + rng.normal(0, 0.0002, MINUTES))
    close[SPIKE_AT:] = price * 1.02 * (1 + rng.normal(0, 0.0002, MINUTES - SPIKE_AT))
    open_ = np.concatenate([[price], close[:-1]])
    volume = np.full(MINUTES, 10.0)
    volume[SPIKE_AT] = 200.0
    frame = pd.DataFrame({
        "date": [(START + timedelta(minutes=i)).strftime("%Y-%m-%dT%H:%M:%SZ") for i in range(MINUTES)],
        "open": open_, "high": np.maximum(open_, close) * 1.0001, "low": np.minimum(open_, close) * 0.9999,
        "close": close, "volume": volume})
    name = f"{symbol.replace('/', '')}-spike-1m.csv"
    frame.to_csv(folder / name, index=False, float_format="%.6f")
    return name


@pytest.fixture
def files(tmp_path):
    return {s: spike_file(tmp_path, s, p, seed) for seed, (s, p) in enumerate(PRICES.items())}, tmp_path


@pytest.fixture
def worker(redis_url, files):
    proc = worker_start("multi", queues="feeds,ghosts,default", concurrency=3,
                        env={"MARKET_DATA_DIR": str(files[1])})
    try:
        others = foreign_workers({proc.worker_name})
        assert not others, f"other Celery workers share this broker and would take the feeds: {others}"
        yield proc
    finally:
        proc_kill(proc)



def _wait(cond, timeout: float, what: str, step: float = 0.3):
    return wait_until(cond, timeout, what, step)


def _feeds_state() -> dict[str, tuple[str, str]]:
    return {fs.instrument.symbol: (fs.state, fs.last_error)
            for fs in FeedStatus.objects.select_related("instrument")}


def test_two_instruments_trade_and_the_cap_refuses_a_third(files, worker, operator, op_client):
    names, _ = files
    started = time.monotonic()
    ex = Exchange.objects.create(code="binance", name="Binance")
    insts = {}
    for symbol in PRICES:
        base, quote = symbol.split("/")
        inst = Instrument.objects.create(exchange=ex, symbol=symbol, base=base, quote=quote)
        # SOL's feed waits (stopped: the supervisor leaves it) until both others hold their positions
        FeedStatus.objects.create(instrument=inst, source=f"replay:{names[symbol]}@max",
                                  state=FeedStatus.State.STOPPED if symbol == "SOL/USDT" else FeedStatus.State.STARTING)
        ghost_create(name=f"fader-{base.lower()}", kind="spike_fader", instrument=inst, enabled=True,
                     params={"max_hold_seconds": WEEK_S})
        insts[symbol] = inst
    risk_limits_set(params={"max_total_notional_pct": 25.0}, actor=operator, reason="cap the book across markets")

    assert sorted(supervise_feeds()) == sorted([insts["BTC/USDT"].pk, insts["ETH/USDT"].pk])

    def both_open():
        return set(Position.objects.filter(status="open").values_list("instrument__symbol", flat=True)) == {
            "BTC/USDT", "ETH/USDT"}

    _wait(both_open, 90, f"positions on BTC/USDT and ETH/USDT (feeds: {_feeds_state()})")
    both_s = time.monotonic() - started
    for symbol in ("BTC/USDT", "ETH/USDT"):
        p = Position.objects.get(instrument=insts[symbol])
        assert p.side == "short" and p.opened_at == START + timedelta(minutes=SPIKE_AT + 1)
        # sized at the 10 % notional cap of ~10,000 equity, at its own instrument's price
        assert float(p.quantity * p.entry_price) == pytest.approx(1_000.0, rel=0.02)

    FeedStatus.objects.filter(instrument=insts["SOL/USDT"]).update(state=FeedStatus.State.STARTING)
    assert supervise_feeds() == [insts["SOL/USDT"].pk]

    def sol_decided():
        return Signal.objects.filter(instrument=insts["SOL/USDT"]).exclude(fate=Fate.PENDING).order_by(
            "bar_time").first()

    signal = _wait(sol_decided, 90, f"the SOL/USDT spike's signal to be decided (feeds: {_feeds_state()})")
    assert signal.fate == Fate.BLOCKED_RISK, (signal.fate, signal.fate_detail)
    assert signal.fate_detail.startswith("max_total_notional: open notional 2")
    assert "USDT over every instrument > limit 25% of equity" in signal.fate_detail
    assert not Position.objects.filter(instrument=insts["SOL/USDT"]).exists()
    assert Position.objects.filter(status="open").count() == 2  # still both

    page = op_client.get(f"/signals/{signal.pk}/").content.decode()
    assert "the open notional over every instrument would pass its cap" in page
    assert "USDT over every instrument &gt; limit 25% of equity" in page
    print(f"\ntwo instruments: BTC/USDT and ETH/USDT both short after {both_s:.1f} s (two @max kline replays on one "
          f"worker); SOL/USDT refused: {signal.fate_detail}; {time.monotonic() - started:.1f} s in all")
