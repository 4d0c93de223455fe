"""Telegram commands for operators (issue 14): `/status`, `/profit`, `/ghosts`, `/disable <ghost> <reason>`,
`/enable <ghost> <reason>`, `/killswitch <reason>` (trip only; resetting stays on the desk).

The beat task lives here, not in apps.alerts.tasks: commands reach ghosts and trading services, which raise
alerts through apps.alerts.services, which imports apps.alerts.tasks; a task there importing this module would
close that circle (tests/test_import_circles.py). settings.CELERY_IMPORTS names this module for the worker.

The bot is the alert channel's own (a Telegram channel row, token decrypted like a delivery does, or
HFT_ALERT_TELEGRAM_TOKEN), polled with `getUpdates` by a beat task every few seconds (`poll_telegram_commands`
below): a short poll, not a long one, so no worker is held for the poll's duration and the task's
`expires` drops a backlog. The offset (last update id + 1) is kept per bot in the cache (Redis); updates are
also claimed one by one in the cache for a day (Telegram keeps unconfirmed updates 24 h), so two overlapping
polls or a lost offset never run a command twice.

Who may command: only chat ids listed in HFT_TELEGRAM_COMMAND_CHATS (comma-separated). Any other chat gets NO
reply at all (silence gives a stranger nothing, not even that the bot listens to commands); its attempt is
audited (`telegram.refused`, with the chat id and the command word only). Every allowed command is audited
(`telegram.command`), and the writes go through the same services the desk uses (ghost_set_enabled,
kill_switch_trip), which audit the change itself with the reason, suffixed with the chat and sender.
"""

import json
import logging
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from celery import shared_task
from django.conf import settings
from django.core.cache import cache
from django.db import transaction

from apps.alerts.crypto import SecretUnreadable
from apps.alerts.models import AlertChannel
from apps.alerts.redact import RedactFilter, redact
from apps.alerts.selectors import telegram_api_base
from apps.audit.services import audit_record

log = logging.getLogger(__name__)
log.addFilter(RedactFilter())

COMMANDS = ("status", "profit", "ghosts", "disable", "enable", "killswitch")
HELP = ("Commands: /status, /profit, /ghosts, /disable <ghost> <reason>, /enable <ghost> <reason>, "
        "/killswitch <reason> (trip only)")
TEXT_MAX = 4096  # Telegram's sendMessage limit
CLAIM_TTL = 26 * 3600  # s: longer than Telegram keeps an unconfirmed update (24 h)


@dataclass(frozen=True)
class TelegramChat:
    """The audited object of a command: a chat, not a database row (audit_record reads `pk`)."""

    pk: str


def allowed_chats() -> frozenset[str]:
    """HFT_TELEGRAM_COMMAND_CHATS (settings, else the environment): the chat ids that may command. Empty: none."""
    raw = getattr(settings, "HFT_TELEGRAM_COMMAND_CHATS", None)
    if raw is None:
        raw = os.environ.get("HFT_TELEGRAM_COMMAND_CHATS", "")
    return frozenset(p.strip() for p in str(raw).split(",") if p.strip())


def bot_tokens() -> list[str]:
    """The alert channels' Telegram bot tokens (enabled rows, then the environment's), each once."""
    out: list[str] = []
    for ch in AlertChannel.objects.filter(kind=AlertChannel.Kind.TELEGRAM, enabled=True).order_by("pk"):
        try:
            token = ch.secret
        except SecretUnreadable:  # the delivery page says so already; nothing to poll with
            continue
        if token and token not in out:
            out.append(token)
    env = os.environ.get("HFT_ALERT_TELEGRAM_TOKEN", "")
    if env and env not in out:
        out.append(env)
    return out


def _call(token: str, method: str, payload: dict) -> Any:
    """POST one Bot API method; returns `result` or raises RuntimeError (token redacted from the message)."""
    url = f"{telegram_api_base()}/bot{token}/{method}"
    req = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                 headers={"Content-Type": "application/json", "User-Agent": "hftweb-commands/1"})
    try:
        with urllib.request.urlopen(req, timeout=float(settings.HFT_ALERT_TIMEOUT)) as resp:
            body = json.loads(resp.read(1_000_000) or b"{}")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise RuntimeError(redact(f"{method}: {type(exc).__name__}: {exc}", [token])) from None
    if not isinstance(body, dict) or not body.get("ok"):
        raise RuntimeError(redact(f"{method}: {str(body)[:300]}", [token]))
    return body.get("result")


def _bot_key(token: str) -> str:
    return token.split(":", 1)[0]  # the bot id: a cache key without the secret half


def _parse(text: str) -> tuple[str, str, list[str]]:
    """("disable", "hftbot", ["trend", "too", "noisy"]) from "/disable@hftbot trend too noisy" (the bot named is ""
    without "@"); ("", "", []) for non-commands."""
    parts = (text or "").strip().split()
    if not parts or not parts[0].startswith("/"):
        return "", "", []
    name, _, bot = parts[0][1:].partition("@")
    return name.lower(), bot.lower(), parts[1:]


def _bot_username(token: str) -> str:
    """The bot's own @username (getMe, cached an hour): in a group with several bots, "/status@otherbot" is not
    ours to answer."""
    key = f"tgcmd:{_bot_key(token)}:username"
    if (name := cache.get(key)) is None:
        name = str((_call(token, "getMe", {}) or {}).get("username") or "").lower()
        cache.set(key, name, 3600)
    return name


def _money(x: float) -> str:
    return f"{x:+,.2f}"


def _status() -> str:
    from apps.trading.risk_selectors import kill_switch
    from apps.trading.selectors import pnl_snapshot

    snap, ks = pnl_snapshot(), kill_switch()
    mode = "LIVE" if settings.HFT_LIVE_TRADING else "PAPER"
    lines = [f"[hftweb {mode}] trading day {snap['day']}",
             f"equity {snap['equity']:,.2f}", f"today {_money(snap['today_pnl'])} "
             f"(realised {_money(snap['realised_today'])}, open {_money(snap['unrealised'])})",
             f"open positions {snap['open_positions']}",
             f"kill switch {'TRIPPED: ' + ks.reason if ks.tripped else 'off'}"]
    return "\n".join(lines)


def _profit() -> str:
    from apps.market.selectors import desk_now
    from apps.trading.selectors import PERIODS, period_start, pnl_since, realised_net

    today = desk_now().astimezone(UTC).date()
    lines = [f"P&L (net of fees, trading day {today})"]
    for p in PERIODS:
        s = pnl_since(period_start(today, p), until=today)
        lines.append(f"{p}: {_money(float(s.total))} ({s.trades} closed, open {_money(float(s.unrealised))})")
    lines.append(f"all closed: {_money(float(realised_net()))}")
    return "\n".join(lines)


def _ghosts() -> str:
    from apps.ghosts.models import Ghost
    from apps.trading.selectors import ghost_period_pnl

    pnl = ghost_period_pnl()
    rows = [f"{g.name}: {'on' if g.enabled else 'off'} ({g.status}) {_money(float(pnl[g.pk].total))}"
            if g.pk in pnl else f"{g.name}: {'on' if g.enabled else 'off'} ({g.status})"
            for g in Ghost.objects.order_by("name")]
    return "\n".join(["Ghosts (P&L over each one's target period)", *rows]) if rows else "No ghosts."


def _ghost_toggle(args: list[str], *, enabled: bool, who: str) -> str:
    from apps.ghosts.models import Ghost
    from apps.ghosts.services import GhostError, ghost_set_enabled

    verb = "enable" if enabled else "disable"
    if len(args) < 2:
        return f"Usage: /{verb} <ghost> <reason>"
    ghost = Ghost.objects.filter(name__iexact=args[0]).first()
    if ghost is None and args[0].isascii() and args[0].isdigit():
        ghost = Ghost.objects.filter(pk=int(args[0])).first()
    if ghost is None:
        return f"No ghost named {args[0]!r}. /ghosts lists them."
    if ghost.enabled == enabled:
        return f"{ghost.name} is already {'enabled' if enabled else 'disabled'}."
    try:
        ghost = ghost_set_enabled(ghost_id=ghost.pk, enabled=enabled, actor=None,
                                  reason=f"{' '.join(args[1:])} ({who})")
    except GhostError as e:
        return f"Refused: {e}"
    return f"{ghost.name} {'enabled' if ghost.enabled else 'disabled'}."


def _killswitch(args: list[str], *, who: str) -> str:
    from apps.trading.risk_services import RiskError, kill_switch_trip

    if args and args[0].lower() in ("reset", "off"):
        return "The kill switch is reset on the desk only (Risk page), not from Telegram."
    if not args:
        return "Usage: /killswitch <reason>"
    try:
        ks = kill_switch_trip(actor=None, reason=f"{' '.join(args)} ({who})")
    except RiskError as e:
        return f"Refused: {e}"
    return f"Kill switch TRIPPED: {ks.reason}"


def command_run(*, chat_id: str, text: str, sender: str = "") -> str | None:
    """Run one message's command for an allowed chat and return the reply; None for a chat not on the allow-list
    (no reply) or a message that is not a command. Audited either way when it is a command."""
    name, _, args = _parse(text)
    if not name:
        return None
    chat = TelegramChat(pk=str(chat_id))
    who = f"telegram chat {chat_id}" + (f" @{sender}" if sender else "")
    if str(chat_id) not in allowed_chats():
        # the command word only (cut): a stranger's text is not worth keeping and may be anything
        audit_record(actor=None, action="telegram.refused", obj=chat, reason="chat not on HFT_TELEGRAM_COMMAND_CHATS",
                     after={"chat_id": str(chat_id), "command": name[:32], "from": sender[:64]})
        return None
    if name == "status":
        reply = _status()
    elif name == "profit":
        reply = _profit()
    elif name == "ghosts":
        reply = _ghosts()
    elif name in ("disable", "enable"):
        reply = _ghost_toggle(args, enabled=name == "enable", who=who)
    elif name == "killswitch":
        reply = _killswitch(args, who=who)
    else:
        reply = HELP
    audit_record(actor=None, action="telegram.command", obj=chat, reason=" ".join(args)[:500],
                 after={"chat_id": str(chat_id), "command": name[:32], "from": sender[:64], "reply": reply[:500]})
    return reply[:TEXT_MAX]


def _handle(token: str, update: dict) -> bool:
    """One update: claim it (once across polls), run its command, reply. True when a reply was sent."""
    if not cache.add(f"tgcmd:{_bot_key(token)}:seen:{update.get('update_id')}", 1, CLAIM_TTL):
        return False  # another poll has it
    msg = update.get("message")
    if not isinstance(msg, dict) or not isinstance(msg.get("text"), str):
        return False
    _, addressed, _ = _parse(msg["text"])
    if addressed and addressed != _bot_username(token):
        return False  # another bot's command in a shared group: neither run nor audited here
    chat_id = str((msg.get("chat") or {}).get("id", ""))
    sender = str((msg.get("from") or {}).get("username") or (msg.get("from") or {}).get("id") or "")
    try:
        with transaction.atomic():
            reply = command_run(chat_id=chat_id, text=msg["text"], sender=sender)
    except Exception as exc:  # a bug in one command must not wedge the offset behind it
        log.exception("telegram command failed")
        reply = (f"Internal error: {type(exc).__name__}" if chat_id in allowed_chats() else None)
    if reply is None:
        return False
    _call(token, "sendMessage", {"chat_id": chat_id, "text": reply, "disable_web_page_preview": True})
    return True


def telegram_commands_poll() -> int:
    """Poll every alert bot once (no wait) and answer its new commands; returns the replies sent. A Bot API
    error on one bot is logged (token redacted) and leaves the others alone."""
    if not allowed_chats():
        return 0  # commands are off until an allow-list is set: the bot is not even asked for updates
    sent = 0
    for token in bot_tokens():
        key = f"tgcmd:{_bot_key(token)}:offset"
        try:
            payload: dict[str, Any] = {"timeout": 0, "allowed_updates": ["message"]}
            if (offset := cache.get(key)) is not None:
                payload["offset"] = int(offset)
            updates = _call(token, "getUpdates", payload) or []
            for update in sorted(updates, key=lambda u: u.get("update_id", 0)):
                # advance first: a command that crashed is answered with its error, never re-run forever
                cache.set(key, int(update["update_id"]) + 1, None)
                sent += _handle(token, update)
        except RuntimeError as e:
            log.warning("telegram commands: %s", e)
    return sent


# beat every 5 s with expires 4 (settings): a short poll each time, so a backlog of polls is dropped, not replayed
@shared_task(ignore_result=True, soft_time_limit=30, time_limit=40)
def poll_telegram_commands() -> int:
    return telegram_commands_poll()
