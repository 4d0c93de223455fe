"""Build a desk database at the size of issue 13: 1M closed positions, 2M orders, 2M fills, 15 ghosts, 90 days.

Usage:
    .venv/bin/python benchmarks/build_big_db.py /tmp/big.sqlite3            # the issue's size (~4-6 min here)
    .venv/bin/python benchmarks/build_big_db.py /tmp/small.sqlite3 --positions 20000 --audit 2000

The file is migrated with the project's migrations (so it has every index the code declares), then filled with
plain bulk INSERTs on the raw sqlite3 connection (executemany in chunks, journal off while building): the ORM would
take an hour for six million rows. The rows obey the models' constraints and the paper ledger's arithmetic:

- several instruments (BTC/USDT, ETH/USDT, SOL/USDT, ...) on one exchange, a seeded random walk of prices per day;
- 15 ghosts of the registry's kinds, spread over the instruments, each with an even share of the positions at
  distinct minutes over the 90 days (so each signal's (ghost, bar_time) is unique);
- per position: its taken signal, an entry order + fill and, when closed, an exit order + fill; fee = price x qty x
  0.001 on each fill, position.fees = the fills' fees, gross = (exit - entry) x qty x side; about half win;
- the newest position of every other ghost is still open (unrealised P&L and the open-positions list have rows);
- the last `--candle-days` days of 1m candles per instrument (the overview chart, state.json's catch-up bars);
- a stopped feed row per instrument whose last trade is the end of the data, so the desk's clock (data time) is the
  data's last day and "today" has closes;
- `--audit` audit events (the audit page's keyset walk).

At the end it calls `apps.revenue.services.pnl_days_rebuild()` when that service exists (the per-day P&L rows of
part B), then ANALYZE, so SQLite's planner knows the table sizes (as a long-lived desk's would after `optimize`).
Reused by benchmarks/pages.py and by the fan-out and P&L benchmarks: pass the path.
"""

import argparse
import os
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHUNK = 50_000
FEE_RATE = 0.001
SYMBOLS = [("BTC/USDT", 65000.0), ("ETH/USDT", 3500.0), ("SOL/USDT", 150.0), ("BNB/USDT", 600.0),
           ("XRP/USDT", 0.6)]


def setup_django(path: Path) -> None:
    """Point the project's settings at the file (DATABASE_URL) and start Django; nothing else is touched."""
    os.environ["DATABASE_URL"] = f"sqlite:///{path.resolve()}"
    os.environ.setdefault("DEBUG", "1")  # no production SECRET_KEY needed for a benchmark process
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hftweb.settings")
    import django

    django.setup()


def _ts(dt: datetime) -> str:
    # Django's SQLite backend stores aware datetimes as naive UTC text in this exact form.
    return dt.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ")


def _insert(cur, table: str, columns: list[str], rows: list[tuple]) -> None:
    if rows:
        marks = ",".join("?" * len(columns))
        cur.executemany(f'INSERT INTO {table} ({",".join(columns)}) VALUES ({marks})', rows)


def build(path: Path, *, positions: int, ghosts: int, days: int, instruments: int, candle_days: int,
          audit: int, end: datetime, seed: int) -> dict[str, int]:
    from django.core.management import call_command
    from django.db import connection

    from apps.engine.registry import GHOSTS
    from apps.ghosts.models import Ghost
    from apps.market.models import Exchange, FeedStatus, Instrument

    call_command("migrate", verbosity=0)
    rng = random.Random(seed)
    start = end - timedelta(days=days)
    minutes = days * 24 * 60
    ex, _ = Exchange.objects.get_or_create(code="binance", defaults={"name": "Binance"})
    insts = []
    for symbol, _price in SYMBOLS[:instruments]:
        base, quote = symbol.split("/")
        inst, _ = Instrument.objects.get_or_create(exchange=ex, symbol=symbol, defaults={"base": base, "quote": quote})
        insts.append(inst)
    kinds = list(GHOSTS)
    ghost_rows = []
    for g in range(ghosts):
        enabled = g % 4 != 3
        ghost_rows.append(Ghost.objects.create(
            name=f"big-{kinds[g % len(kinds)]}-{g:02d}", kind=kinds[g % len(kinds)], instrument=insts[g % len(insts)],
            enabled=enabled, status="active" if enabled else "disabled"))

    # One price per instrument and minute would be 130k floats each: a daily random walk plus noise is enough.
    day_price = {inst.pk: [] for inst in insts}
    for inst, (_s, p0) in zip(insts, SYMBOLS, strict=False):
        p = p0
        for _d in range(days + 1):
            day_price[inst.pk].append(p)
            p *= 1 + rng.gauss(0, 0.02)

    raw = connection.connection if connection.connection else (connection.ensure_connection() or connection.connection)
    cur = raw.cursor()
    cur.execute("PRAGMA journal_mode=OFF")  # a build either finishes or is thrown away
    cur.execute("PRAGMA synchronous=OFF")
    cur.execute("PRAGMA cache_size=-200000")
    cur.execute("BEGIN")
    cur.execute("SELECT COALESCE(MAX(id), 0) FROM signals_signal")
    sig_id = cur.fetchone()[0]
    cur.execute("SELECT COALESCE(MAX(id), 0) FROM trading_position")
    pos_id = cur.fetchone()[0]
    cur.execute("SELECT COALESCE(MAX(id), 0) FROM trading_order")
    ord_id = cur.fetchone()[0]
    now = _ts(datetime.now(UTC))
    sig_cols = ["id", "ghost_id", "instrument_id", "bar_time", "side", "confidence", "priority", "entry", "stop",
                "target", "size_multiplier", "max_hold_seconds", "reason", "fate", "fate_detail", "created_at"]
    pos_cols = ["id", "ghost_id", "instrument_id", "signal_id", "mode", "side", "status", "quantity", "entry_price",
                "stop", "target", "time_stop_at", "opened_at", "closed_at", "exit_price", "exit_reason", "gross_pnl",
                "fees", "updated_at"]
    ord_cols = ["id", "position_id", "instrument_id", "client_order_id", "purpose", "side", "quantity", "mode",
                "status", "trigger_price", "created_at"]
    fill_cols = ["order_id", "price", "quantity", "fee", "filled_at", "created_at"]
    per_ghost = positions // ghosts
    counts = {"signals": 0, "positions": 0, "open": 0, "orders": 0, "fills": 0}
    sigs: list[tuple] = []
    poss: list[tuple] = []
    ords: list[tuple] = []
    fills: list[tuple] = []
    t0 = time.monotonic()

    def flush(final: bool = False) -> None:
        if final or len(poss) >= CHUNK:
            _insert(cur, "signals_signal", sig_cols, sigs)
            _insert(cur, "trading_position", pos_cols, poss)
            _insert(cur, "trading_order", ord_cols, ords)
            _insert(cur, "trading_fill", fill_cols, fills)
            for name, rows in (("signals", sigs), ("positions", poss), ("orders", ords), ("fills", fills)):
                counts[name] += len(rows)
                rows.clear()
            print(f"  {counts['positions']:>9,} positions  {time.monotonic() - t0:6.1f} s", flush=True)

    for gi, ghost in enumerate(ghost_rows):
        n = per_ghost + (1 if gi < positions - per_ghost * ghosts else 0)
        step = minutes / n  # > 1 minute for the sizes: one signal per ghost and bar
        if step < 1:
            raise SystemExit(f"{n} positions per ghost do not fit in {minutes} minutes: raise --days")
        for k in range(n):
            minute = int(k * step)
            bar_time = start + timedelta(minutes=minute)
            opened_at = bar_time + timedelta(minutes=1, seconds=rng.randint(0, 59))
            base = day_price[ghost.instrument_id][minute // 1440] * (1 + rng.gauss(0, 0.004))
            entry = round(base, 2 if base > 10 else 6)
            side = "long" if rng.random() < 0.55 else "short"
            sign = 1 if side == "long" else -1
            qty = round(1000.0 / entry, 6) or 0.000001
            stop = round(entry * (1 - 0.01 * sign), 8)
            target = round(entry * (1 + 0.008 * sign), 8)
            sig_id += 1
            pos_id += 1
            sigs.append((sig_id, ghost.pk, ghost.instrument_id, _ts(bar_time), side, round(rng.uniform(0.5, 0.99), 4),
                         1, entry, stop, target, 1, 3600, "bulk-built benchmark trade", "taken", "", _ts(bar_time)))
            entry_fee = round(entry * qty * FEE_RATE, 8)
            still_open = k == n - 1 and gi % 2 == 0
            ord_id += 1
            ords.append((ord_id, pos_id, ghost.instrument_id, f"hft-{sig_id}-entry", "entry",
                         "buy" if sign > 0 else "sell", qty, "paper", "filled", None, _ts(opened_at)))
            fills.append((ord_id, entry, qty, entry_fee, _ts(opened_at), _ts(opened_at)))
            if still_open:
                counts["open"] += 1
                poss.append((pos_id, ghost.pk, ghost.instrument_id, sig_id, "paper", side, "open", qty, entry, stop,
                             target, _ts(opened_at + timedelta(hours=1)), _ts(opened_at), None, None, "", None,
                             entry_fee, now))
            else:
                win = rng.random() < 0.5
                move = rng.uniform(0.001, 0.01)
                exit_price = round(entry * (1 + move * sign * (1 if win else -1)), 8)
                closed_at = opened_at + timedelta(seconds=rng.randint(30, 3600))
                exit_fee = round(exit_price * qty * FEE_RATE, 8)
                gross = round((exit_price - entry) * qty * sign, 8)
                reason = "target" if win else rng.choice(["stop", "stop", "time"])
                ord_id += 1
                ords.append((ord_id, pos_id, ghost.instrument_id, f"hft-{sig_id}-exit", "exit",
                             "sell" if sign > 0 else "buy", qty, "paper", "filled", None, _ts(closed_at)))
                fills.append((ord_id, exit_price, qty, exit_fee, _ts(closed_at), _ts(closed_at)))
                poss.append((pos_id, ghost.pk, ghost.instrument_id, sig_id, "paper", side, "closed", qty, entry, stop,
                             target, _ts(opened_at + timedelta(hours=1)), _ts(opened_at), _ts(closed_at), exit_price,
                             reason, gross, round(entry_fee + exit_fee, 8), now))
            flush()
    flush(final=True)

    candle_cols = ["instrument_id", "timeframe", "open_time", "open", "high", "low", "close", "volume",
                   "taker_buy_volume", "taker_sell_volume", "trade_count"]
    cur.execute("PRAGMA table_info(market_candle)")
    have = {r[1] for r in cur.fetchall()}
    candle_cols = [c for c in candle_cols if c in have]
    n_candles = 0
    last_price: dict[int, float] = {}
    for inst in insts:
        price = day_price[inst.pk][-1]
        rows = []
        first = end - timedelta(days=candle_days)
        for m in range(candle_days * 1440):
            o = price
            c = max(o * 0.5, o * (1 + rng.gauss(0, 0.0015)))
            h, lo = max(o, c) * 1.0005, min(o, c) * 0.9995
            vol = round(rng.uniform(5, 40), 4)
            buy = round(vol * rng.uniform(0.3, 0.7), 4)
            row = {"instrument_id": inst.pk, "timeframe": "1m", "open_time": _ts(first + timedelta(minutes=m)),
                   "open": round(o, 8), "high": round(h, 8), "low": round(lo, 8), "close": round(c, 8), "volume": vol,
                   "taker_buy_volume": buy, "taker_sell_volume": round(vol - buy, 4),
                   "trade_count": rng.randint(50, 400)}
            rows.append(tuple(row[col] for col in candle_cols))
            price = c
        _insert(cur, "market_candle", candle_cols, rows)
        n_candles += len(rows)
        last_price[inst.pk] = price

    audit_rows = [(f"bench.row{i % 7}", "position", str(i), "bulk-built", "{}", "{}",
                   _ts(start + timedelta(seconds=i * (minutes * 60 // max(audit, 1))))) for i in range(audit)]
    _insert(cur, "audit_auditevent", ["action", "object_type", "object_id", "reason", "before", "after", "created_at"],
            audit_rows)
    cur.execute("COMMIT")
    for inst in insts:  # after the raw transaction: the ORM opens its own
        FeedStatus.objects.update_or_create(instrument=inst, defaults={
            "source": "sim", "state": FeedStatus.State.STOPPED, "last_price": f"{last_price[inst.pk]:.8f}",
            "last_trade_at": end - timedelta(seconds=1)})
    counts.update(candles=n_candles, audit=audit, ghosts=ghosts, instruments=len(insts))

    try:
        from apps.revenue.services import pnl_days_rebuild  # part B's per-day rows, when that service exists
    except ImportError:
        print("  apps.revenue.services.pnl_days_rebuild not present: no per-day P&L rows built")
    else:
        t1 = time.monotonic()
        pnl_days_rebuild()
        print(f"  pnl_days_rebuild() {time.monotonic() - t1:.1f} s")
    cur = connection.connection.cursor()
    cur.execute("ANALYZE")
    cur.execute("PRAGMA journal_mode=WAL")
    return counts


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("path", type=Path, help="SQLite file to create (must not exist unless --force)")
    p.add_argument("--positions", type=int, default=1_000_000)
    p.add_argument("--ghosts", type=int, default=15)
    p.add_argument("--days", type=int, default=90)
    p.add_argument("--instruments", type=int, default=3, choices=range(1, len(SYMBOLS) + 1))
    p.add_argument("--candle-days", type=int, default=2, help="days of 1m candles per instrument (ends with the data)")
    p.add_argument("--audit", type=int, default=50_000)
    p.add_argument("--end", default="2026-12-01", help="UTC date the data ends on (the desk's 'now')")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--force", action="store_true", help="replace an existing file")
    a = p.parse_args()
    if a.path.exists():
        if not a.force:
            raise SystemExit(f"{a.path} exists (use --force to replace it)")
        for suffix in ("", "-wal", "-shm"):
            Path(f"{a.path}{suffix}").unlink(missing_ok=True)
    setup_django(a.path)
    end = datetime.fromisoformat(a.end).replace(tzinfo=UTC)
    t0 = time.monotonic()
    counts = build(a.path, positions=a.positions, ghosts=a.ghosts, days=a.days, instruments=a.instruments,
                   candle_days=a.candle_days, audit=a.audit, end=end, seed=a.seed)
    size = a.path.stat().st_size / 1e6
    print(f"built {a.path} in {time.monotonic() - t0:.0f} s, {size:,.0f} MB: "
          + ", ".join(f"{k} {v:,}" for k, v in counts.items()) + f"; load {os.getloadavg()}")


if __name__ == "__main__":
    main()
