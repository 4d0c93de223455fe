"""Telegram commands for operators (issue 14) against a local HTTP server speaking the Bot API (getUpdates with
offsets, sendMessage): allowed chats command, strangers get nothing, every command is audited, the writes go
through the desk's services, and no update runs twice."""

import json
import logging
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from apps.alerts.models import SUBSCRIBABLE
from apps.alerts.services import alert_channel_create
from apps.alerts.telegram_commands import poll_telegram_commands, telegram_commands_poll
from apps.audit.models import AuditEvent
from apps.ghosts.models import Ghost
from apps.trading.models import KillSwitch

pytestmark = pytest.mark.django_db
TOKEN = "123456789:AAHfakeTokenForTests_0123456789abcdef"  # BotFather-shaped; not a real token
OPS_CHAT, STRANGER = "-1001234567", "555"


@dataclass
class BotApi:
    url: str = ""
    updates: list[dict] = field(default_factory=list)
    calls: list[tuple[str, dict]] = field(default_factory=list)  # (path, JSON body)
    fail_with: int | None = None
    next_id: int = 1000

    def say(self, chat_id: str, text: str, username: str = "olga") -> None:
        self.updates.append({"update_id": self.next_id, "message": {
            "message_id": self.next_id, "chat": {"id": int(chat_id), "type": "group"},
            "from": {"id": 42, "username": username}, "date": 0, "text": text}})
        self.next_id += 1

    def sent(self) -> list[dict]:
        return [b for p, b in self.calls if p.endswith("/sendMessage")]

    def polls(self) -> list[dict]:
        return [b for p, b in self.calls if p.endswith("/getUpdates")]


@pytest.fixture
def bot(settings):
    state = BotApi()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's naming)
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            state.calls.append((self.path, body))
            if state.fail_with:
                code, out = state.fail_with, {"ok": False, "description": f"echo {self.path}"}
            elif self.path == f"/bot{TOKEN}/getUpdates":
                # the Bot API's rule: an offset confirms every update below it, which is never sent again
                if "offset" in body:
                    state.updates = [u for u in state.updates if u["update_id"] >= body["offset"]]
                code, out = 200, {"ok": True, "result": list(state.updates)}
            elif self.path == f"/bot{TOKEN}/getMe":
                code, out = 200, {"ok": True, "result": {"id": 123456789, "is_bot": True, "username": "HftWeb_bot"}}
            elif self.path == f"/bot{TOKEN}/sendMessage":
                code, out = 200, {"ok": True, "result": {"message_id": 1}}
            else:
                code, out = 404, {"ok": False, "description": "Not Found"}
            raw = json.dumps(out).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    settings.HFT_ALERT_TELEGRAM_API = state.url
    settings.HFT_TELEGRAM_COMMAND_CHATS = f"{OPS_CHAT}, 777"
    # the bot is the alert channel's, its token stored encrypted like every channel secret
    alert_channel_create(actor=None, kind="telegram", name="ops", events=SUBSCRIBABLE, secret=TOKEN, chat_id=OPS_CHAT)
    yield state
    server.shutdown()
    server.server_close()


def commands_audited(action: str = "telegram.command") -> list[dict]:
    return list(AuditEvent.objects.filter(action=action).order_by("id").values_list("after", flat=True))


def test_status_profit_ghosts_answer_the_allowed_chat_and_are_audited(desk, bot, settings):
    bot.say(OPS_CHAT, "/status")
    bot.say(OPS_CHAT, "/profit@hftweb_bot")  # addressed to us (any case)
    bot.say(OPS_CHAT, "/killswitch@other_bot not for us")  # another bot's command in the same group
    bot.say(OPS_CHAT, "/ghosts")
    bot.say(OPS_CHAT, "just chatting")  # not a command: no reply, nothing audited
    assert telegram_commands_poll() == 3
    status, profit, ghosts = bot.sent()
    assert all(m["chat_id"] == OPS_CHAT for m in (status, profit, ghosts))
    assert f"equity {settings.HFT_START_CAPITAL:,.2f}" in status["text"]  # nothing traded yet
    assert "open positions 0" in status["text"] and "kill switch off" in status["text"]
    assert profit["text"].splitlines()[1].startswith("day: +0.00 (0 closed")
    assert "fader-btc: on (active)" in ghosts["text"]
    assert [a["command"] for a in commands_audited()] == ["status", "profit", "ghosts"]
    assert not KillSwitch.objects.filter(tripped=True).exists()
    assert {a["chat_id"] for a in commands_audited()} == {OPS_CHAT}
    # the poll asked with the token read from the encrypted row
    assert bot.polls()[0] == {"timeout": 0, "allowed_updates": ["message"]}


def test_disable_and_enable_a_ghost_through_the_service_with_the_reason(desk, bot):
    bot.say(OPS_CHAT, "/disable fader-btc spreads too wide")
    telegram_commands_poll()
    ghost = Ghost.objects.get(pk=desk["ghost"].pk)
    assert not ghost.enabled and ghost.status == "disabled"
    row = AuditEvent.objects.get(action="ghost.disabled")
    assert row.reason == f"spreads too wide (telegram chat {OPS_CHAT} @olga)"
    assert bot.sent()[-1]["text"] == "fader-btc disabled."

    bot.say(OPS_CHAT, "/enable FADER-BTC")  # no reason: refused, nothing changes
    bot.say(OPS_CHAT, "/enable nosuch back on")
    bot.say(OPS_CHAT, "/enable fader-btc spreads back")
    telegram_commands_poll()
    assert [m["text"] for m in bot.sent()[-3:]] == [
        "Usage: /enable <ghost> <reason>", "No ghost named 'nosuch'. /ghosts lists them.", "fader-btc enabled."]
    assert Ghost.objects.get(pk=desk["ghost"].pk).enabled
    assert AuditEvent.objects.filter(action="ghost.enabled").count() == 1


def test_killswitch_trips_only(desk, bot):
    bot.say(OPS_CHAT, "/killswitch")
    bot.say(OPS_CHAT, "/killswitch exchange looks broken")
    bot.say(OPS_CHAT, "/killswitch reset")
    telegram_commands_poll()
    usage, tripped, reset = (m["text"] for m in bot.sent())
    assert usage == "Usage: /killswitch <reason>"
    assert tripped.startswith("Kill switch TRIPPED: exchange looks broken (telegram chat")
    assert "desk only" in reset
    ks = KillSwitch.objects.get(pk=1)
    assert ks.tripped and ks.reason == f"exchange looks broken (telegram chat {OPS_CHAT} @olga)"
    assert AuditEvent.objects.filter(action="killswitch.tripped").count() == 1
    assert not AuditEvent.objects.filter(action="killswitch.reset").exists()


def test_a_chat_not_on_the_allow_list_gets_no_reply_and_changes_nothing(desk, bot):
    for text in ("/status", "/profit", "/ghosts", "/disable fader-btc bye", "/killswitch now", "/help"):
        bot.say(STRANGER, text, username="mallory")
    assert telegram_commands_poll() == 0
    assert bot.sent() == []  # silence: not even a refusal
    assert Ghost.objects.get(pk=desk["ghost"].pk).enabled
    assert not KillSwitch.objects.filter(tripped=True).exists()
    refused = commands_audited("telegram.refused")
    assert [a["command"] for a in refused] == ["status", "profit", "ghosts", "disable", "killswitch", "help"]
    assert {a["chat_id"] for a in refused} == {STRANGER} and not commands_audited()


def test_no_update_runs_twice_and_the_offset_confirms_them(desk, bot):
    from django.core.cache import cache

    bot.say(OPS_CHAT, "/disable fader-btc once")
    assert telegram_commands_poll() == 1
    assert telegram_commands_poll() == 0
    assert bot.polls()[1]["offset"] == 1001  # the last update id + 1
    # the offset lost (or two polls overlapping): Telegram sends the update again, the claim stops a second run
    cache.delete("tgcmd:123456789:offset")
    bot.updates.append({"update_id": 1000, "message": {"chat": {"id": int(OPS_CHAT)}, "text": "/ghosts"}})
    assert poll_telegram_commands() == 0  # the beat task's own entry point
    assert len(bot.sent()) == 1 and len(commands_audited()) == 1


def test_commands_are_off_without_an_allow_list(desk, bot, settings):
    settings.HFT_TELEGRAM_COMMAND_CHATS = ""
    bot.say(OPS_CHAT, "/status")
    assert telegram_commands_poll() == 0
    assert bot.calls == []  # the bot is not even polled


def test_a_bot_api_error_is_logged_without_the_token(desk, bot, caplog):
    bot.fail_with = 401
    bot.say(OPS_CHAT, "/status")
    with caplog.at_level(logging.WARNING, logger="apps.alerts.telegram_commands"):
        assert telegram_commands_poll() == 0
    assert "getUpdates" in caplog.text and TOKEN not in caplog.text
    assert TOKEN.split(":")[1] not in caplog.text


def test_the_poll_runs_on_beat_every_few_seconds_and_is_registered_with_the_worker(settings):
    from hftweb.celery import app

    entry = next(e for e in settings.CELERY_BEAT_SCHEDULE.values() if e["task"] == poll_telegram_commands.name)
    assert entry["schedule"] <= 5 and entry["options"]["expires"] < entry["schedule"]
    assert "apps.alerts.telegram_commands" in settings.CELERY_IMPORTS  # autodiscovery reads tasks.py only
    app.loader.import_default_modules()
    assert poll_telegram_commands.name in app.tasks


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_the_desk_answers_a_command_with_real_beat_and_worker(desk, bot, tmp_path):
    """As `make run` runs it: beat sends the poll, a worker on `default` answers; the command reaches the ghost."""
    from tests.e2e.procs import beat_start, foreign_workers, proc_kill, wait_until, worker_log, worker_start

    assert not foreign_workers(set()), "other Celery workers share this broker and would take the tasks"
    env = {"HFT_ALERT_TELEGRAM_API": bot.url, "HFT_TELEGRAM_COMMAND_CHATS": OPS_CHAT}
    bot.say(OPS_CHAT, "/disable fader-btc from the phone")
    worker = worker_start("tgcmd", queues="default", concurrency=1, env=env)
    beat = beat_start(tmp_path)
    try:
        sent = wait_until(bot.sent, 40, "the reply to /disable")
        assert sent[0]["text"] == "fader-btc disabled.", worker_log(worker)[-2000:]
    finally:
        proc_kill(beat)
        proc_kill(worker)
    assert not Ghost.objects.get(pk=desk["ghost"].pk).enabled
    assert AuditEvent.objects.filter(action="ghost.disabled", reason__contains=f"telegram chat {OPS_CHAT}").exists()
    assert len(bot.sent()) == 1  # polled every 5 s meanwhile: the update ran once
