"""p50/p95 of the equity page (issue 14, part M) on the issue-13 database (1M trades, 90 days, 15 ghosts).

Usage:
    .venv/bin/python benchmarks/build_big_db.py /tmp/big.sqlite3          # once (~4 min)
    .venv/bin/python benchmarks/equity_page.py /tmp/big.sqlite3 [--n 30]

Same method as benchmarks/pages.py (whose helpers it reuses): in-process Django test client as an operator,
3 warm-ups then `--n` timed requests per URL; wall p50/p95, CPU p50, response size and the load average.
The page reads only the per-day P&L rows, so its cost follows days x ghosts x instruments, not trades.
"""

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.pages import load, start_redis, time_page  # noqa: E402


def run(a: argparse.Namespace, redis_url: str) -> None:
    import secrets
    import tempfile

    os.environ["DATABASE_URL"] = f"sqlite:///{a.path.resolve()}"
    os.environ["REDIS_URL"] = redis_url
    os.environ["DEBUG"] = "0"
    os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(50))
    if not os.environ.get("HFT_SECRETS_KEY"):
        from cryptography.fernet import Fernet

        os.environ["HFT_SECRETS_KEY"] = Fernet.generate_key().decode()
    os.environ.setdefault("ALLOWED_HOSTS", "testserver")
    os.environ.setdefault("RUN_DIR", tempfile.mkdtemp(prefix="equity-run-"))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hftweb.settings")
    import django

    django.setup()
    from django.core.management import call_command
    from django.test import Client

    from apps.accounts.services import user_ensure
    from apps.ghosts.models import Ghost
    from apps.revenue.models import PnlDay

    call_command("migrate", verbosity=0)
    ghost = Ghost.objects.order_by("pk").first()
    print(f"{a.path}: {PnlDay.objects.count():,} day rows, {Ghost.objects.count()} ghosts; {load()}")
    user, _ = user_ensure(username="bench-operator", role="operator", password=secrets.token_urlsafe(24))
    client = Client()
    client.force_login(user)
    urls = {
        "equity-90d-day": "/equity/",
        "equity-7d-day": "/equity/?window=7d",  # most days are before the window: carried in with their peak
        "equity-all-day-ghost": "/equity/?window=all&by=day&group=ghost",
        "equity-all-week-instrument": "/equity/?window=all&by=week&group=instrument",
        "equity-all-month": "/equity/?window=all&by=month",
        "equity-one-ghost-all": f"/equity/?window=all&ghost={ghost.pk}" if ghost else "/equity/",
    }
    for name, url in urls.items():
        p50, p95, cpu, size = time_page(client, url, a.n)
        print(f"{name:28s} p50 {p50:7.1f} ms  p95 {p95:7.1f} ms  cpu p50 {cpu:6.1f} ms  "
              f"{size / 1024:6.1f} kB  {load()}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("path", type=Path)
    p.add_argument("--n", type=int, default=30, help="timed requests per URL")
    a = p.parse_args()
    if not a.path.exists():
        raise SystemExit(f"{a.path}: no such file (build it with benchmarks/build_big_db.py)")
    redis, redis_url = start_redis()
    try:
        run(a, redis_url)
    finally:
        redis.terminate()
        redis.wait(5)


if __name__ == "__main__":
    main()
