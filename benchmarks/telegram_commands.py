"""What an operator's Telegram command costs the desk (issue 14, part L), from getUpdates to the reply's POST.

Setup (not timed): a throwaway SQLite DB, a redis-server on a free port (the cache that holds the offset and the
per-update claims), one instrument, G ghosts with one open paper position each, a Telegram alert channel (token
encrypted at rest) and a local HTTP server speaking the Bot API (getUpdates with offsets, sendMessage).

Timed: for each command kind, N updates from an allowed chat answered by one `telegram_commands_poll()` (the beat
task's body: getUpdates, claim, command, audit, sendMessage over HTTP), per command = batch time / N; and N
updates from a stranger (no reply, an audit row each). Printed with os.getloadavg(). The operator waits for
this plus up to one beat interval (5 s) for the next poll.

Usage: .venv/bin/python benchmarks/telegram_commands.py [N=50] [G=20]
"""

import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.throwaway import throwaway_desk  # noqa: E402 - after the path

TOKEN = "123456789:AAHfakeTokenForBench_0123456789abcdef"
CHAT = "-1001234567"


def bot_api() -> tuple[str, list[dict]]:
    updates: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's naming)
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            if self.path.endswith("/getUpdates"):
                updates[:] = [u for u in updates if u["update_id"] >= body.get("offset", 0)]
                out = {"ok": True, "result": list(updates)}
            else:
                out = {"ok": True, "result": {"message_id": 1}}
            raw = json.dumps(out).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}", updates


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    g = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    url, updates = bot_api()
    with throwaway_desk(HFT_LIVE_TRADING="0", HFT_ALERT_TELEGRAM_API=url, HFT_TELEGRAM_COMMAND_CHATS=CHAT):
        run_bench(n, g, updates)


def run_bench(n: int, g: int, updates: list[dict]) -> None:
    import django

    django.setup()
    from datetime import UTC, datetime, timedelta
    from decimal import Decimal

    import pandas as pd
    from django.core.management import call_command

    from apps.alerts.services import alert_channel_create
    from apps.alerts.telegram_commands import telegram_commands_poll
    from apps.engine.types import Draft
    from apps.ghosts.services import ghost_create
    from apps.market.models import Exchange, FeedStatus, Instrument
    from apps.signals.services import signal_record
    from apps.trading.services import signal_execute_paper

    call_command("migrate", verbosity=0)
    t0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
    ex = Exchange.objects.create(code="binance", name="Binance")
    inst = Instrument.objects.create(exchange=ex, symbol="BTC/USDT", base="BTC", quote="USDT")
    FeedStatus.objects.create(instrument=inst, source="sim", state="connected", last_price=101)
    for i in range(g):
        ghost = ghost_create(name=f"fader-{i}", kind="spike_fader", instrument=inst, enabled=True)
        bar = t0 + timedelta(minutes=i)
        draft = Draft(side=1, confidence=0.7, priority=2, entry=100.0, stop=98.0, target=102.0, size_mult=1.0,
                      max_hold_s=0.0, reason="bench", bar_time=pd.Timestamp(bar))
        signal, _ = signal_record(ghost=ghost, bar_time=bar, draft=draft)
        signal_execute_paper(signal_id=signal.pk, price=Decimal("100"), at=bar + timedelta(minutes=1), quantity=0.01)
    alert_channel_create(actor=None, kind="telegram", name="ops", events=["kill_switch"], chat_id=CHAT, secret=TOKEN)
    next_id = [1]

    def say(chat: str, text: str) -> None:
        updates.append({"update_id": next_id[0], "message": {"chat": {"id": int(chat)}, "from": {"id": 1},
                                                             "text": text}})
        next_id[0] += 1

    kinds = [("/status", CHAT), ("/profit", CHAT), ("/ghosts", CHAT), ("/disable+/enable fader-0", CHAT),
             ("/status from a stranger", "555")]
    for label, chat in kinds:
        for i in range(n):
            if label.startswith("/disable"):
                say(chat, f"/{'disable' if i % 2 == 0 else 'enable'} fader-0 bench {i}")
            else:
                say(chat, label.split()[0])
        start = time.perf_counter()
        replies = telegram_commands_poll()
        ms = (time.perf_counter() - start) * 1000
        assert replies == (0 if chat == "555" else n), replies
        print(f"{label:28s} {n} updates in one poll: {ms:7.1f} ms, {ms / n:5.1f} ms per command "
              f"({g} ghosts with open positions, SQLite + Redis); load {tuple(round(x, 2) for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
