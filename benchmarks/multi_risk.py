"""What the cross-instrument risk rules cost per decision (issue 11): `risk_state()` (equity, today's P&L, open
positions by ghost and now the open notional per instrument) and one `risk_check` with the instrument's market,
with open positions spread over K instruments (K = 1, 3, 10, 30, one position each, each with a last price).
The manager runs this once per bar that has drafts. Throwaway SQLite database; os.getloadavg() printed with the
figures (the machine is shared).

Usage: .venv/bin/python benchmarks/multi_risk.py
"""

import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.update(SQLITE_PATH=str(Path(tmp) / "bench.sqlite3"), DEBUG="1",
                          DJANGO_SETTINGS_MODULE="hftweb.settings", RUN_DIR=tmp)
        os.environ.pop("DATABASE_URL", None)
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        from apps.engine.risk import risk_check
        from apps.ghosts.services import ghost_create
        from apps.trading.risk_selectors import open_notional_by_instrument, risk_limits, risk_market, risk_state
        from tests.factories import make_feed, make_instrument, make_position

        opened = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
        made = 0
        print(f"risk state + check per decision, SQLite; load average before {load()} (2 shared cores)")
        for k in (1, 3, 10, 30):
            while made < k:
                inst = make_instrument(symbol=f"X{made}/USDT")
                make_feed(instrument=inst, last_price="101")
                g = ghost_create(name=f"g{made}", kind="spike_fader", instrument=inst, enabled=True)
                make_position(ghost=g, opened_at=opened + timedelta(minutes=made), entry="100", qty="1")
                made += 1
            market, limits = risk_market(inst), risk_limits()
            times, cpus, part = [], [], []
            for i in range(250):
                t0, c0 = time.perf_counter(), time.process_time()
                state = risk_state()
                risk_check(ghost_id=0, entry=100.0, stop=99.0, size_mult=1.0, state=state, limits=limits,
                           market=market)
                t1 = time.perf_counter()
                open_notional_by_instrument()  # the part the cross-instrument caps added
                if i >= 50:  # the first 50 warm the connection and the caches
                    times.append(t1 - t0)
                    cpus.append(time.process_time() - c0)
                    part.append(time.perf_counter() - t1)
            times.sort()
            p50 = statistics.median(times) * 1000
            print(f"  {k:>2} instruments, {state.open_positions:>2} open: wall p50 {p50:.2f} ms, "
                  f"p95 {times[int(len(times) * 0.95)] * 1000:.2f} ms; CPU p50 {statistics.median(cpus) * 1000:.2f} ms "
                  f"(risk_state + risk_check); open notional query alone p50 {statistics.median(part) * 1000:.2f} ms")
        print(f"  load average after {load()}")


if __name__ == "__main__":
    main()
