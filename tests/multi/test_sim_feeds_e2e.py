"""Several simulated instruments through the running desk (issue 11): a real Celery worker runs the sim feeds of
binance BTC/USDT, ETH/USDT and SOL/USDT at once (started by supervise_feeds, as beat does); each backfills its
warm-up and then streams its own market: its own price level, its own path. The volatility scales themselves are
checked on long deterministic runs in test_sim_instruments.py; here the three feeds' robust per-minute std is
printed (a few hours of a path that starts at the wall clock's minute).

Run: `RUN_DIR=/tmp/I-run .venv/bin/pytest tests/multi/test_sim_feeds_e2e.py -q -s`
"""

import time

import numpy as np
import pytest
from django.core.cache import cache

from apps.ghosts.services import ghost_create
from apps.market.models import Candle, Exchange, FeedStatus, Instrument
from apps.runtime.tasks import supervise_feeds
from tests.e2e.procs import foreign_workers, proc_kill, wait_until, worker_start

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]
LEVELS = {"BTC/USDT": (50_000, 200_000), "ETH/USDT": (1_500, 7_000), "SOL/USDT": (50, 300)}


@pytest.fixture
def worker(redis_url):
    proc = worker_start("multisim", queues="feeds,ghosts,default", concurrency=4, env={"HFT_SIM_SPEED": "600"})
    try:
        others = foreign_workers({proc.worker_name})
        assert not others, f"other Celery workers share this broker and would take the feeds: {others}"
        yield proc
    finally:
        proc_kill(proc)



def _wait(cond, timeout: float, what: str, step: float = 0.5):
    return wait_until(cond, timeout, what, step)


def robust_std(x: np.ndarray) -> float:
    return float(1.4826 * np.median(np.abs(x - np.median(x))))


def test_three_simulated_markets_at_once(worker):
    started = time.monotonic()
    ex = Exchange.objects.create(code="binance", name="Binance")
    insts = {}
    for symbol in LEVELS:
        base, quote = symbol.split("/")
        inst = Instrument.objects.create(exchange=ex, symbol=symbol, base=base, quote=quote)
        FeedStatus.objects.create(instrument=inst, source="sim")
        ghost_create(name=f"fader-{base.lower()}", kind="spike_fader", instrument=inst, enabled=True)
        insts[symbol] = inst
    assert sorted(supervise_feeds()) == sorted(i.pk for i in insts.values())

    def streaming():
        rows = {fs.instrument.symbol: fs for fs in FeedStatus.objects.select_related("instrument")}
        return all(fs.state == FeedStatus.State.CONNECTED and fs.last_price for fs in rows.values()) and rows

    _wait(streaming, 120, "three sim feeds connected with prices")
    connected_s = time.monotonic() - started
    first = {s: Candle.objects.filter(instrument=i).count() for s, i in insts.items()}
    time.sleep(5)  # 600x: ~50 simulated minutes each
    stds = {}
    for symbol, inst in insts.items():
        fs = FeedStatus.objects.get(instrument=inst)
        lo, hi = LEVELS[symbol]
        closes = np.array([float(c) for c in Candle.objects.filter(instrument=inst).order_by("open_time")
                           .values_list("close", flat=True)])
        assert lo < float(fs.last_price) < hi and lo < closes.min() and closes.max() < hi, (symbol, fs.last_price)
        assert len(closes) > first[symbol], f"{symbol} stored no bar after it connected"
        stds[symbol] = robust_std(np.diff(np.log(closes)))
    # three paths, not one path at three scales
    series = [np.array([float(c) for c in Candle.objects.filter(instrument=i).order_by("open_time")
                        .values_list("close", flat=True)[:200]]) for i in insts.values()]
    rel = [s / s[0] for s in series]
    assert not np.allclose(rel[0], rel[1]) and not np.allclose(rel[1], rel[2])
    for i in insts.values():
        cache.delete(f"feed-lock:{i.pk}")  # a stop request
    bars = {s: Candle.objects.filter(instrument=i).count() for s, i in insts.items()}
    print(f"\nthree sim feeds on one worker: connected and streaming after {connected_s:.1f} s "
          f"(warm-up backfill included); "
          f"bars {bars}; robust per-minute std {', '.join(f'{s} {v:.5%}' for s, v in stds.items())}")
