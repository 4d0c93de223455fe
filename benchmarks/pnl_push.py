"""What the feed runner's live P&L push costs (apps.runtime.pipeline.FeedPipeline._pnl_due): the publish step of a
feed whose instrument has open positions, with the price moved (status row + pnl.updated) against the same step with
nothing to push (status row only), and `pnl_push()` alone (pnl_snapshot's queries + one group send).

Usage (a copy of a desk database, e.g. benchmarks/build_big_db.py's; it must hold open positions, and it is migrated):
    .venv/bin/python benchmarks/pnl_push.py /tmp/big.sqlite3 [--runs 200]

A throwaway Redis serves as the channel layer, started as benchmarks/pages.py does. Wall and CPU milliseconds per
call, p50 / p95, with the load average: the machine is shared. At most one push a second per feed is what the
runner does, so a push's milliseconds are also its share of one second of that feed's loop.
"""

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("path", type=Path)
    p.add_argument("--runs", type=int, default=200)
    args = p.parse_args()
    from pages import start_redis

    redis, redis_url = start_redis()
    os.environ["REDIS_URL"] = redis_url
    try:
        run(args)
    finally:
        redis.terminate()
        redis.wait(5)


def run(args: argparse.Namespace) -> None:
    from pnl_pages import report, setup_django, timed

    setup_django(args.path)
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from apps.market.bar_builder import Trade
    from apps.market.models import Instrument
    from apps.runtime.pipeline import FeedPipeline
    from apps.trading.models import Position
    from apps.trading.selectors import pnl_push

    opened = Position.objects.filter(status=Position.Status.OPEN)
    inst_id = opened.values_list("instrument_id", flat=True).first()
    if inst_id is None:
        sys.exit(f"{args.path}: no open position; the push only runs while marks move")
    inst = Instrument.objects.get(pk=inst_id)
    print(f"{args.path}: {Position.objects.count():,} positions, {opened.count()} open "
          f"({opened.filter(instrument_id=inst_id).count()} on {inst.symbol}); {args.runs} runs each", flush=True)

    wall = [0.0]
    feed = FeedPipeline(inst, on_bar=None, has_liquidations=False, wall_clock=lambda: wall[0])
    feed.refresh_positions()
    state = {"n": 0, "ts": 1_900_000_000_000, "price": float(feed.positions[0].entry_price)}

    def step(move: bool):
        def go():
            state["n"] += 1
            state["ts"] += 1000
            if move:
                state["price"] += 0.5 if state["n"] % 2 else -0.25
            wall[0] += 1.0  # a second later: the status step is due, and the push too when the price moved
            t = Trade(ts_ms=state["ts"], price=state["price"], amount=0.001, side="buy", id=f"b{state['n']}")
            feed.consume([t], now_ms=state["ts"], evaluate=False)
            feed.publish()
        return go

    report("publish, price moved (push)", timed(step(True), args.runs))
    report("publish, unmoved (no push)", timed(step(False), args.runs))
    report("pnl_push() alone", timed(pnl_push, args.runs))
    with CaptureQueriesContext(connection) as ctx:
        pnl_push()
    print(f"  pnl_push(): {len(ctx.captured_queries)} queries", flush=True)


if __name__ == "__main__":
    main()
