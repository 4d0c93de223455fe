"""p50/p95 of part B's reads on a big desk database: the overview, the ghosts page, state.json, and the header
(the context processor's P&L snapshot, on every page) plus the selectors behind them.

Usage (a database from benchmarks/build_big_db.py; migrate it first if it predates the P&L day rows):
    .venv/bin/python benchmarks/build_big_db.py /tmp/big.sqlite3
    .venv/bin/python benchmarks/pnl_pages.py /tmp/big.sqlite3 [--runs 30]

Each page is fetched in-process through Django's test client as a logged-in operator (full middleware, session,
templates, the header's context processor), after one warm-up fetch; the figures are wall milliseconds per
request, and the CPU time the process spent on it. The load average is printed with every figure: the machine
is shared.
"""

import argparse
import base64
import os
import secrets
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def setup_django(path: Path) -> None:
    os.environ["DATABASE_URL"] = f"sqlite:///{path.resolve()}"
    # Production settings (DEBUG off: cached templates, no debug bookkeeping), with a throwaway key.
    os.environ.setdefault("DEBUG", "0")
    os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(50))
    os.environ.setdefault("HFT_SECRETS_KEY", base64.urlsafe_b64encode(secrets.token_bytes(32)).decode())
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hftweb.settings")
    import django

    django.setup()


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


def timed(fn, runs: int) -> tuple[list[float], list[float]]:
    """Wall and CPU (this process) milliseconds per call. On a shared machine the CPU time is the steadier
    figure: the wall time adds whatever the other processes take of the two cores."""
    fn()  # warm-up: imports, template compilation, SQLite page cache
    wall, cpu = [], []
    for _ in range(runs):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall.append((time.perf_counter() - t) * 1000)
        cpu.append((time.process_time() - c) * 1000)
    return wall, cpu


def report(name: str, times: tuple[list[float], list[float]]) -> None:
    wall, cpu = times
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"{name:<28} wall p50 {statistics.median(wall):7.1f} p95 {pct(wall, 0.95):7.1f} ms | "
          f"cpu p50 {statistics.median(cpu):7.1f} p95 {pct(cpu, 0.95):7.1f} ms  (n={len(wall)}, load {load})",
          flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("path", type=Path)
    p.add_argument("--runs", type=int, default=30)
    args = p.parse_args()
    # A throwaway Redis as the desk runs with (feed liveness reads its locks; pushes go to its channel layer):
    # without one every request pays for refused connections. Started as benchmarks/pages.py does.
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from pages import start_redis

    redis, redis_url = start_redis()
    os.environ["REDIS_URL"] = redis_url
    try:
        run(args)
    finally:
        redis.terminate()
        redis.wait(5)


def run(args: argparse.Namespace) -> None:
    setup_django(args.path)

    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from apps.revenue.selectors import performance_by_ghost
    from apps.trading.models import Position
    from apps.trading.selectors import equity, ghost_period_pnl, pnl_snapshot

    user, created = get_user_model().objects.get_or_create(username="bench-operator")
    if created:
        user.set_password("bench-operator-password")
        user.save()
    group, _ = Group.objects.get_or_create(name="operator")
    user.groups.add(group)
    client = Client(HTTP_HOST="localhost")
    client.force_login(user)

    positions = Position.objects.count()
    print(f"{args.path}: {positions:,} positions; {args.runs} runs each after one warm-up", flush=True)

    def page(url: str):
        def get():
            r = client.get(url)
            assert r.status_code == 200, (url, r.status_code)
        return get

    from apps.ghosts.models import Ghost

    ids = list(Ghost.objects.values_list("pk", flat=True))
    for name, fn in [
        ("header pnl_snapshot()", pnl_snapshot),
        ("equity()", equity),
        ("ghost_period_pnl()", ghost_period_pnl),
        ("performance_by_ghost(all)", lambda: performance_by_ghost(ids)),
        ("GET / (overview)", page("/")),
        ("GET /ghosts/", page("/ghosts/")),
        ("GET /state.json", page("/state.json")),
        ("GET /risk/ (header + risk)", page("/risk/")),
    ]:
        report(name, timed(fn, args.runs))
    for url in ("/", "/ghosts/", "/state.json"):
        with CaptureQueriesContext(connection) as ctx:
            page(url)()
        slow = sorted(ctx.captured_queries, key=lambda q: -float(q["time"]))[:1]
        print(f"  {url}: {len(ctx.captured_queries)} queries; slowest {slow[0]['time']} s: {slow[0]['sql'][:160]}")


if __name__ == "__main__":
    main()
