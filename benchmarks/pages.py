"""p50/p95 of the desk's pages and the CSV export rate on the issue-13 database (1M trades).

Usage:
    .venv/bin/python benchmarks/build_big_db.py /tmp/big.sqlite3          # once (~4 min)
    .venv/bin/python benchmarks/pages.py /tmp/big.sqlite3 [--n 30] [--only trades] [--no-csv]

Each page is requested in-process through Django's test client (the whole middleware stack, the header's context
processor, template rendering; no network), as a logged-in operator, `--n` times after 3 warm-up requests; p50
and p95 in ms with the 1-minute load average at that moment (the machine is shared: read the figures with it).

Pages: the trades page (newest, filtered by ghost + outcome, filtered by side + dates, ~page 15,000 through an
`older` cursor 750,000 rows deep, a `newer` cursor), the overview, the ghosts page, state.json, the audit page.
Then the CSV of every trade, streamed and counted: rows/s. The EXPLAIN QUERY PLAN of the trades queries on this
database is printed too (the test checks them on a small one).

The file is migrated first (a pending migration, e.g. a new per-day P&L table, is applied as a deploy would).
A throwaway redis-server on a free port stands in for the desk's cache (feed liveness reads it).
"""

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis() -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", tempfile.mkdtemp(prefix="pages-redis-")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            break
        except OSError:
            time.sleep(0.05)
    return proc, f"redis://127.0.0.1:{port}/0"


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f} {five:.2f} {fifteen:.2f}"


def pct(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def time_page(client, url: str, n: int) -> tuple[float, float, float, int]:
    """Wall p50, wall p95 and CPU p50 (this process's CPU time: the steadier figure on a shared machine), in ms."""
    for _ in range(3):
        r = client.get(url)
        assert r.status_code == 200, (url, r.status_code)
    samples, cpu = [], []
    for _ in range(n):
        t, c = time.perf_counter(), time.process_time()
        r = client.get(url)
        samples.append((time.perf_counter() - t) * 1000)
        cpu.append((time.process_time() - c) * 1000)
        assert r.status_code == 200
    return statistics.median(samples), pct(samples, 0.95), statistics.median(cpu), len(r.content)


def explain(sql: str) -> list[str]:
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("EXPLAIN QUERY PLAN " + sql)
        return [row[3] for row in cur.fetchall()]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("path", type=Path)
    p.add_argument("--n", type=int, default=30, help="timed requests per page")
    p.add_argument("--only", default="", help="comma-separated page names to run (default: all)")
    p.add_argument("--no-csv", action="store_true")
    a = p.parse_args()
    if not a.path.exists():
        raise SystemExit(f"{a.path}: no such file (build it with benchmarks/build_big_db.py)")
    redis, redis_url = start_redis()
    try:
        run(a, redis_url)
    finally:
        redis.terminate()
        redis.wait(5)


def run(a: argparse.Namespace, redis_url: str) -> None:
    import secrets

    os.environ["DATABASE_URL"] = f"sqlite:///{a.path.resolve()}"
    os.environ["REDIS_URL"] = redis_url
    os.environ["DEBUG"] = "0"  # production settings: no SQL kept per query, templates cached
    os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(50))
    if not os.environ.get("HFT_SECRETS_KEY"):  # production settings want the alert secrets' key; a throwaway one
        from cryptography.fernet import Fernet

        os.environ["HFT_SECRETS_KEY"] = Fernet.generate_key().decode()
    os.environ.setdefault("ALLOWED_HOSTS", "testserver")
    os.environ.setdefault("RUN_DIR", tempfile.mkdtemp(prefix="pages-run-"))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hftweb.settings")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from apps.accounts.services import user_ensure
    from apps.ghosts.models import Ghost
    from apps.trading.models import Position
    from apps.trading.trade_selectors import Cursor, TradeFilter, trades_page

    t = time.monotonic()
    call_command("migrate", verbosity=0)
    print(f"migrate: {time.monotonic() - t:.1f} s")
    n_trades = Position.objects.count()
    print(f"{a.path}: {n_trades:,} positions, {Ghost.objects.count()} ghosts; {load()}")
    user, _ = user_ensure(username="bench-operator", role="operator", password=secrets.token_urlsafe(24))
    client = Client()
    client.force_login(user)

    ghost = Ghost.objects.order_by("pk").first()
    # The instrument filter (issue 11): the last instrument, usually one of the smaller histories, so the page reads
    # far into the (instrument, opened_at, id) index's range rather than the newest rows of the whole table.
    from apps.market.models import Instrument

    instrument = Instrument.objects.order_by("-pk").first()
    # ~page 15,000 of 50: the cursor of the 750,000th newest row (found once with an OFFSET, outside the timing).
    deep_row = Position.objects.order_by("-opened_at", "-id").values_list("opened_at", "id")[
        min(750_000, max(n_trades - 1, 0))]
    deep = Cursor(*deep_row).token
    newer_row = Position.objects.order_by("-opened_at", "-id").values_list("opened_at", "id")[
        min(500, max(n_trades - 1, 0))]
    last_day = Position.objects.order_by("-opened_at").values_list("opened_at", flat=True).first()
    week_ago = (last_day.date().toordinal() - 7) if last_day else None
    from datetime import date

    date_from = date.fromordinal(week_ago).isoformat() if week_ago else ""
    pages = {
        "trades-first": "/trades/",
        "trades-ghost-win": f"/trades/?ghost={ghost.pk}&outcome=win",
        "trades-short-week": f"/trades/?side=short&date_from={date_from}",
        "trades-open": "/trades/?outcome=open",
        "trades-deep-15000": f"/trades/?before={deep}",
        "trades-newer": f"/trades/?after={Cursor(*newer_row).token}",
        "trades-instrument": f"/trades/?instrument={instrument.pk}" if instrument else "/trades/",
        "overview": "/",
        "overview-instrument": f"/?instrument={instrument.pk}" if instrument else "/",
        "targets-instrument": f"/targets/?instrument={instrument.pk}" if instrument else "/targets/",
        "ghosts": "/ghosts/",
        "state.json": "/state.json",
        "audit": "/audit/",
    }
    only = {x for x in a.only.split(",") if x}
    print(f"{'page':22} {'p50 ms':>9} {'p95 ms':>9} {'CPU p50':>8} {'queries':>8} {'KB':>7}  load (1/5/15 min)")
    for name, url in pages.items():
        if only and not any(name.startswith(o) for o in only):
            continue
        with CaptureQueriesContext(connection) as ctx:
            client.get(url)
        queries = len(ctx.captured_queries)  # now: the next request's request_started empties the log
        p50, p95, cpu50, size = time_page(client, url, a.n)
        print(f"{name:22} {p50:9.1f} {p95:9.1f} {cpu50:8.1f} {queries:8d} {size / 1024:7.0f}  {load()}",
              flush=True)

    print("\nEXPLAIN QUERY PLAN of the trades page's position query on this database:")
    cases = {"newest": {}, "ghost+win": {"filters": TradeFilter(ghost_id=ghost.pk, outcome="win")},
             "deep": {"before": Cursor(*deep_row)},
             "instrument": {"filters": TradeFilter(instrument_id=instrument.pk if instrument else None)}}
    for name, kw in cases.items():
        with CaptureQueriesContext(connection) as ctx:
            trades_page(**kw)
        print(f"  {name:10} " + " | ".join(explain(ctx.captured_queries[0]["sql"])))

    if a.no_csv or (only and "csv" not in only):
        return
    # Wall time and this process's CPU time: on a shared machine at load L the wall rate is roughly the CPU rate
    # divided by L/2 (two cores); the CPU rate is what a quiet machine would see.
    print()
    csv_urls = {"trades.csv": "/trades.csv"}
    if instrument:  # one instrument's trades: the (instrument, opened_at, id) index in keyset batches (issue 11)
        csv_urls[f"trades.csv?instrument={instrument.pk}"] = f"/trades.csv?instrument={instrument.pk}"
    for label, url in csv_urls.items():
        t, c = time.perf_counter(), time.process_time()
        response = client.get(url)
        rows = size = 0
        for chunk in response.streaming_content:
            rows += chunk.count(b"\n")
            size += len(chunk)
        dt, dc = time.perf_counter() - t, time.process_time() - c
        rows -= 1  # the header
        print(f"{label} (WSGI): {rows:,} rows, {size / 1e6:,.0f} MB in {dt:.1f} s = {rows / dt:,.0f} rows/s "
              f"(CPU {dc:.1f} s = {rows / dc:,.0f} rows/s); {load()}", flush=True)

    # Under ASGI (Daphne, as make run serves it) the export is pulled one batch per sync_to_async hop.
    import asyncio

    from asgiref.sync import sync_to_async
    from django.test import AsyncClient

    async def asgi_csv() -> tuple[int, int, float]:
        aclient = AsyncClient()
        await sync_to_async(aclient.force_login)(user)
        t, c = time.perf_counter(), time.process_time()
        response = await aclient.get("/trades.csv")
        rows = size = 0
        async for chunk in response.streaming_content:
            rows += chunk.count(b"\n")
            size += len(chunk)
        return rows - 1, size, time.perf_counter() - t, time.process_time() - c

    rows, size, dt, dc = asyncio.run(asgi_csv())
    print(f"trades.csv (ASGI): {rows:,} rows, {size / 1e6:,.0f} MB in {dt:.1f} s = {rows / dt:,.0f} rows/s "
          f"(CPU {dc:.1f} s = {rows / dc:,.0f} rows/s); {load()}")


if __name__ == "__main__":
    main()
