"""What deleting an instrument costs (issue 11's leftover): the confirm page's counts and the delete itself, on a
throwaway SQLite desk holding an instrument with a year of 1m candles, 3 ghosts and closed paper trades beside the
desk's BTC/USDT.

    .venv/bin/python benchmarks/instrument_delete.py [--candles 525600] [--trades 2000]
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.throwaway import throwaway_desk  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--candles", type=int, default=525_600, help="1m candles of the deleted instrument (a year)")
    ap.add_argument("--trades", type=int, default=2_000, help="closed paper trades of its ghosts")
    args = ap.parse_args()
    with throwaway_desk():
        import django

        django.setup()
        from datetime import UTC, datetime, timedelta
        from decimal import Decimal

        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        from apps.dashboard.instrument_delete import instrument_delete, instrument_delete_plan
        from apps.market.models import Candle, Exchange, FeedStatus, Instrument
        from tests.factories import make_ghost, make_position

        ex = Exchange.objects.create(code="binance", name="Binance")
        Instrument.objects.create(exchange=ex, symbol="BTC/USDT", base="BTC", quote="USDT")
        inst = Instrument.objects.create(exchange=ex, symbol="ETH/USDT", base="ETH", quote="USDT")
        FeedStatus.objects.create(instrument=inst, source="sim", state=FeedStatus.State.STOPPED)
        t0 = datetime(2025, 1, 1, tzinfo=UTC)
        t = time.perf_counter()
        batch, one = [], Decimal("3000")
        for k in range(args.candles):
            batch.append(Candle(instrument=inst, open_time=t0 + timedelta(minutes=k), open=one, high=one, low=one,
                                close=one, volume=Decimal("1")))
            if len(batch) == 10_000:
                Candle.objects.bulk_create(batch)
                batch = []
        Candle.objects.bulk_create(batch)
        ghosts = [make_ghost(name=f"g{k}", instrument=inst) for k in range(3)]
        for k in range(args.trades):
            make_position(ghost=ghosts[k % 3], opened_at=t0 + timedelta(minutes=10 * k), exit="101")
        print(f"built: {args.candles:,} candles, {args.trades:,} closed trades in {time.perf_counter() - t:.1f} s")

        plans = []
        for _ in range(7):
            t = time.perf_counter()
            plan = instrument_delete_plan(instrument_id=inst.pk)
            plans.append((time.perf_counter() - t) * 1000)
        print(f"confirm page counts ({plan.total:,} rows): p50 {statistics.median(plans):.1f} ms, "
              f"max {max(plans):.1f} ms over {len(plans)}")
        t = time.perf_counter()
        instrument_delete(instrument_id=inst.pk, actor=None, confirm=plan.name, token=plan.token)
        print(f"delete of {plan.total:,} rows: {time.perf_counter() - t:.2f} s "
              f"({', '.join(f'{n:,} {w}' for w, n in plan.counts if n)})")


if __name__ == "__main__":
    main()
