"""Trade -> browser tick latency at 2,000 trades/s with open positions, for N desk viewers (issue 13, fan-out).

A throwaway desk (own Redis and SQLite, `manage.py setup_desk` with the sim feed's instrument and ghosts, see
wsbench.py), the web server as `make run` starts it, N logged-in viewer websockets, and a feeder process that runs
the real feed pipeline (apps.runtime.pipeline.FeedPipeline: sanitiser, bar builder, candle store, the stops and
targets of the open positions checked on every trade, the throttled tick) on synthetic trades stamped with the wall
clock, RATE a second, after opening POSITIONS paper positions whose stops are never reached. Each tick names the
time of the last trade it carries; each client records arrival - that time. Prints p50/p95/p99/max per N, the
feeder's achieved trade rate and lag, the web CPU and the load.

    .venv/bin/python benchmarks/ws_ticks.py                        # N = 100, 500 at 2,000 trades/s, 20 s each
    .venv/bin/python benchmarks/ws_ticks.py --viewers 500 --server uvicorn:2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from wsbench import PY, ROOT, Clients, Desk, cpu_seconds, load, pct  # noqa: E402

FEEDER = r"""
import json, random, sys, time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
import django
django.setup()
import pandas as pd
from apps.engine.types import Draft
from apps.ghosts.models import Ghost
from apps.market.bar_builder import Trade
from apps.market.models import Instrument
try:
    from apps.runtime.pipeline import FeedPipeline
except ImportError:  # a checkout from before apps/runtime (the before figure)
    from apps.market.pipeline import FeedPipeline
from apps.signals.services import signal_record
from apps.trading.services import signal_execute_paper
from apps.trading.selectors import open_positions

rate, seconds, positions = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
instrument = Instrument.objects.get(pk=int(sys.argv[4]))
ghosts = list(Ghost.objects.filter(instrument=instrument))
price = 100.0
t0 = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(days=1)
for i in range(positions):  # wide stops and targets: checked on every trade, never reached
    side = 1 if i % 2 == 0 else -1
    draft = Draft(side=side, confidence=0.7, priority=2, entry=price, stop=price * (1 - side * 0.5),
                  target=price * (1 + side * 0.5), size_mult=0.01, max_hold_s=10 * 86400.0, reason="bench",
                  bar_time=pd.Timestamp(t0 + timedelta(minutes=i)))
    signal, _ = signal_record(ghost=ghosts[i % len(ghosts)], bar_time=t0 + timedelta(minutes=i), draft=draft)
    try:
        signal_execute_paper(signal_id=signal.pk, price=Decimal("100"), at=t0 + timedelta(minutes=i, seconds=61))
    except Exception as exc:
        print("open failed:", exc, file=sys.stderr)
opened = open_positions(instrument_id=instrument.pk).count()
pipe = FeedPipeline(instrument, on_bar=None, has_liquidations=False)
pipe.refresh_positions()
rng = random.Random(7)
per_batch = max(1, int(rate / 200))  # trades arrive in small bursts, as from an exchange stream
n = sent = 0
lag = []
start = time.monotonic()
while time.monotonic() - start < seconds:
    due = start + n * per_batch / rate
    wait = due - time.monotonic()
    if wait > 0:
        time.sleep(wait)
    else:
        lag.append(-wait * 1000)
    now_ms = int(time.time() * 1000)
    trades = []
    for _ in range(per_batch):
        price *= 1 + rng.gauss(0, 1e-5)
        sent += 1
        trades.append(Trade(ts_ms=now_ms, price=price, amount=0.01, side="buy" if rng.random() < 0.5 else "sell",
                            id=str(sent)))
    pipe.consume(trades, now_ms=now_ms)
    pipe.publish()
    n += 1
elapsed = time.monotonic() - start
lag.sort()
print(json.dumps({"trades": sent, "rate": sent / elapsed, "open_positions": opened,
                  "lag_p99_ms": lag[int(0.99 * len(lag))] if lag else 0.0, "late_batches": len(lag), "batches": n}))
"""


async def run_one(desk: Desk, url: str, keys: list[str], rate: float, seconds: float, positions: int,
                  instrument_id: int) -> dict:
    lat: list[float] = []

    def on_frame(i: int, now: float, frame: str) -> None:
        ev = json.loads(frame)
        if ev.get("type") == "market.tick" and ev.get("ts"):
            from datetime import datetime

            lat.append((now - datetime.fromisoformat(ev["ts"]).timestamp()) * 1000)

    clients = Clients(url, keys, on_frame)
    await clients.open()
    pids = desk.web_pids()
    cpu0 = cpu_seconds(pids)
    feeder = await asyncio.create_subprocess_exec(PY, "-c", FEEDER, str(rate), str(seconds), str(positions),
                                                  str(instrument_id), cwd=desk.code, env=desk.env,
                                                  stdout=subprocess.PIPE)
    out, _ = await feeder.communicate()
    await asyncio.sleep(2)
    cpu = cpu_seconds(pids) - cpu0
    await clients.close()
    fed = json.loads(out.decode().strip().splitlines()[-1])
    lat = lat[len(keys) * 4:]  # the first second's ticks: the feeder's imports and first bar
    return {"viewers": len(keys), "p50": pct(lat, 50), "p95": pct(lat, 95), "p99": pct(lat, 99),
            "max": max(lat, default=float("nan")), "ticks": len(lat), **fed, "web_cpu_pct": 100 * cpu / (seconds + 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--viewers", default="100,500")
    ap.add_argument("--rate", type=float, default=2000.0, help="trades per second (default 2000)")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--positions", type=int, default=20,
                    help="open paper positions wanted (default 20; the desk's risk limits may allow fewer)")
    ap.add_argument("--server", default=os.environ.get("HFT_WEB", "daphne"))
    ap.add_argument("--code", type=Path, default=ROOT)
    args = ap.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    ns = [int(n) for n in args.viewers.split(",")]
    desk = Desk(code=args.code.resolve())
    try:
        keys = desk.setup(max(ns))
        desk.manage("setup_desk")
        instrument_id = int(desk.manage("shell", "-c", "from apps.ghosts.models import Ghost; "
                                        "print(Ghost.objects.order_by('pk').first().instrument_id)").split()[-1])
        url = desk.serve(args.server)
        print(f"ws_ticks: server {args.server}, code {desk.code}, {args.rate:g} trades/s for {args.seconds:g} s per N, "
              f"{args.positions} open positions wanted; {load()}", flush=True)
        for n in ns:
            r = asyncio.run(run_one(desk, url, keys[:n], args.rate, args.seconds, args.positions if n == ns[0] else 0,
                                    instrument_id))
            print(f"  N={r['viewers']:>4}: trade->tick p50 {r['p50']:7.1f} ms  p95 {r['p95']:7.1f}  p99 {r['p99']:7.1f}"
                  f"  max {r['max']:7.1f}  ticks {r['ticks']}  fed {r['rate']:.0f} trades/s (late batches "
                  f"{r['late_batches']}/{r['batches']}, lag p99 {r['lag_p99_ms']:.1f} ms)  open positions "
                  f"{r['open_positions']}  web CPU {r['web_cpu_pct']:.0f}%  {load()}", flush=True)
            time.sleep(1)
    finally:
        desk.stop()


if __name__ == "__main__":
    main()
