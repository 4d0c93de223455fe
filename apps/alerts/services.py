"""Writes for alerts: channel configuration, emitting events, and one delivery attempt.

Trading never waits for, nor fails because of, an alert (issue 5):
- `alert_emit` only registers an after-commit callback; that callback (rows + Celery enqueue) and
  everything before it are wrapped so any exception is logged and swallowed. A rolled-back trade
  raises no alert.
- The HTTP call happens in the `deliver_alert` task on the `default` queue (apps.alerts.tasks, which calls
  apps.alerts.delivery: the task module never imports this one, so there is no import circle), with a short timeout,
  outside any database transaction (SQLite's IMMEDIATE transactions would otherwise hold the write
  lock for up to the timeout and stall fills).
- Transient failures (connection refused/reset, timeout, HTTP 408/425/429/5xx) retry with exponential
  backoff `HFT_ALERT_RETRY_BACKOFF × 2^n` seconds (capped by `HFT_ALERT_RETRY_BACKOFF_MAX`, longer when
  the endpoint's Retry-After says so) up to `HFT_ALERT_MAX_RETRIES` retries; other 4xx (bad token, chat
  not found) fail at once: repeating them cannot succeed. Every attempt is recorded on the AlertDelivery.
- Every error stored, shown or logged goes through `apps.alerts.redact.redact` first (an endpoint that echoes
  its URL would otherwise print the token in it), and this module's logger redacts whatever it prints.
Delivery is at least once: a worker killed between the POST and the row update sends the alert again.
"""

import json
import logging
import re
from decimal import Decimal
from functools import partial
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.cache import cache
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.utils import timezone

from apps.alerts.crypto import SecretUnreadable, secret_rotate
from apps.alerts.models import SUBSCRIBABLE, AlertChannel, AlertDelivery, AlertEvent
from apps.alerts.redact import RedactFilter, redact
from apps.alerts.selectors import Target, delivery_target, delivery_targets
from apps.alerts.tasks import deliver_alert
from apps.audit.services import audit_record

log = logging.getLogger(__name__)
log.addFilter(RedactFilter())

# Telegram bot tokens are "<bot id>:<35 url-safe chars>"; chat ids are numbers (negative for groups) or @channel.
TELEGRAM_TOKEN_RE = re.compile(r"^\d{3,15}:[A-Za-z0-9_-]{20,64}$")
CHAT_ID_RE = re.compile(r"^(-?\d{1,20}|@[A-Za-z][A-Za-z0-9_]{4,31})$")
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
# The one rule, said the same way by the check's refusals and the alert form's help text (issue 14, rough edges):
# the URL carries the token, so plain http only where it never leaves the machine (local relays, tests).
URL_RULE = "a full URL starting with https:// (http:// only to this machine: 127.0.0.1, ::1 or localhost)"
# Broker publish: a couple of quick tries, then give up and mark the delivery failed (never block the caller).
_PUBLISH_RETRY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5}


class AlertConfigError(ValueError):
    """A channel configuration the service refuses; the message is safe to show (it never echoes a secret)."""


# --- configuration ---------------------------------------------------------------------------------


def _check_url(url: str, what: str) -> str:
    url = (url or "").strip()
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        raise AlertConfigError(f"{what} is not a valid URL") from None
    if parts.scheme not in ("https", "http") or not host or any(c.isspace() for c in url):
        raise AlertConfigError(f"{what} must be {URL_RULE}")
    if parts.scheme == "http" and host not in LOOPBACK_HOSTS:
        raise AlertConfigError(f"{what} must be {URL_RULE}")
    if len(url) > 2000:
        raise AlertConfigError(f"{what} is too long (2000 characters at most)")
    return url


def _check_secret(kind: str, secret: str) -> str:
    if kind == AlertChannel.Kind.TELEGRAM:
        secret = (secret or "").strip()
        if not TELEGRAM_TOKEN_RE.match(secret):
            raise AlertConfigError("bot token must look like 123456789:AA… (from @BotFather)")
        return secret
    what = "Discord webhook URL" if kind == AlertChannel.Kind.DISCORD else "webhook URL"
    return _check_url(secret, what)


def _check_common(*, kind: str, name: str, events, chat_id: str) -> tuple[str, list[str], str]:
    if kind not in AlertChannel.Kind.values:
        raise AlertConfigError("kind must be one of " + ", ".join(AlertChannel.Kind.values))
    name = (name or "").strip()
    if not name or len(name) > 64:
        raise AlertConfigError("name: 1 to 64 characters")
    if not isinstance(events, list | tuple) or any(e not in SUBSCRIBABLE for e in events):
        raise AlertConfigError("events must be chosen from " + ", ".join(SUBSCRIBABLE))
    events = [e for e in SUBSCRIBABLE if e in events]  # canonical order, no duplicates
    if not events:
        raise AlertConfigError("choose at least one event (a test alert is always allowed)")
    chat_id = (chat_id or "").strip()
    if kind == AlertChannel.Kind.TELEGRAM:
        if not CHAT_ID_RE.match(chat_id):
            raise AlertConfigError("chat id must be a number (negative for groups) or @channelname")
    else:
        chat_id = ""
    return name, events, chat_id


def _public(ch: AlertChannel) -> dict:
    """What the audit log may keep: everything but the secret."""
    return {"name": ch.name, "kind": ch.kind, "enabled": ch.enabled, "events": list(ch.events),
            "chat_id": ch.chat_id, "secret": "set" if ch.secret_set else "not set"}


@transaction.atomic
def alert_channel_create(*, actor, kind: str, name: str, events: list[str], secret: str, chat_id: str = "",
                         enabled: bool = True) -> AlertChannel:
    """Add a channel; refuses (AlertConfigError) a bad kind, name, event, chat id, token or URL."""
    name, events, chat_id = _check_common(kind=kind, name=name, events=events, chat_id=chat_id)
    secret = _check_secret(kind, secret)
    if AlertChannel.objects.filter(name=name).exists():
        raise AlertConfigError(f"a channel named {name!r} exists already")
    ch = AlertChannel.objects.create(kind=kind, name=name, events=events, chat_id=chat_id, secret=secret,
                                     enabled=enabled,
                                     created_by=actor if getattr(actor, "is_authenticated", False) else None)
    audit_record(actor=actor, action="alert_channel.create", obj=ch, after=_public(ch))
    return ch


@transaction.atomic
def alert_channel_update(*, actor, channel_id: int, name: str, events: list[str], chat_id: str = "",
                         enabled: bool, secret: str | None = None) -> AlertChannel:
    """Edit a channel. `secret` empty or None keeps the stored one (the form never shows it, so it cannot
    send it back); a value replaces it. The kind is fixed: another kind needs another secret, i.e. a new channel."""
    ch = AlertChannel.objects.select_for_update().get(pk=channel_id)
    name, events, chat_id = _check_common(kind=ch.kind, name=name, events=events, chat_id=chat_id)
    new_secret = _check_secret(ch.kind, secret) if secret else None
    if AlertChannel.objects.filter(name=name).exclude(pk=ch.pk).exists():
        raise AlertConfigError(f"a channel named {name!r} exists already")
    before = _public(ch)
    ch.name, ch.events, ch.chat_id, ch.enabled = name, events, chat_id, bool(enabled)
    fields = ["name", "events", "chat_id", "enabled", "updated_at"]
    if new_secret is not None:
        ch.secret = new_secret  # encrypted under the first key of HFT_SECRETS_KEY
        fields.append("secret_encrypted")
    ch.save(update_fields=fields)
    after = _public(ch)
    after["secret"] = "replaced" if new_secret is not None else "kept"
    audit_record(actor=actor, action="alert_channel.update", obj=ch, before=before, after=after)
    return ch


@transaction.atomic
def alert_channel_set_enabled(*, actor, channel_id: int, enabled: bool) -> AlertChannel:
    ch = AlertChannel.objects.select_for_update().get(pk=channel_id)
    if ch.enabled != enabled:
        ch.enabled = enabled
        ch.save(update_fields=["enabled", "updated_at"])
        audit_record(actor=actor, action="alert_channel.enable" if enabled else "alert_channel.disable", obj=ch,
                     before={"enabled": not enabled}, after={"enabled": enabled})
    return ch


class _AllChannels:
    """The audit row's object for a change to every channel: type alerts.alertchannel, no id."""

    _meta, pk = AlertChannel._meta, ""


@transaction.atomic
def alert_secrets_rotate(*, actor=None) -> tuple[int, list[str]]:
    """Re-encrypt every stored channel secret under the first key of HFT_SECRETS_KEY (after a new key was put
    first), so the old key can be dropped. Returns (re-encrypted, names of channels no key opens: left as they
    are, the old key may still come back). Audited, without any secret."""
    done, unreadable = 0, []
    for ch in AlertChannel.objects.select_for_update().exclude(secret_encrypted="").order_by("name"):
        try:
            ch.secret_encrypted = secret_rotate(ch.secret_encrypted)
        except SecretUnreadable:
            unreadable.append(ch.name)
            continue
        ch.save(update_fields=["secret_encrypted"])  # not updated_at: the channel did not change
        done += 1
    audit_record(actor=actor, action="alert_secrets.rotate", obj=_AllChannels,
                 after={"re_encrypted": done, "unreadable": unreadable})
    return done, unreadable


@transaction.atomic
def alert_test_send(*, actor, channel_key: str) -> AlertDelivery:
    """Queue a test alert to one channel (also a disabled one: check it before switching it on)."""
    target = delivery_target(channel_key)
    if target is None:
        raise AlertConfigError("no such channel")
    who = actor.get_username() if getattr(actor, "is_authenticated", False) else "system"
    payload = _payload(kind=AlertEvent.TEST, title="Test alert", body=f"sent by {who} from the Alerts page",
                       data={"by": who})
    d = _delivery_create(target, payload)
    audit_record(actor=actor, action="alert.test", obj=d, after={"channel": target.label})
    transaction.on_commit(partial(_enqueue, d.pk), robust=True)
    return d


# --- emitting ----------------------------------------------------------------------------------------


def _payload(*, kind: str, title: str, body: str, data: dict | None) -> dict[str, Any]:
    # Decimal/datetime -> JSON-safe now, so a bad value fails here (caught) and not inside the worker.
    clean = json.loads(json.dumps(data or {}, cls=DjangoJSONEncoder))
    return {"kind": str(kind), "title": str(title)[:200], "body": str(body)[:4000], "data": clean,
            "event_at": timezone.now()}


def alert_emit(*, kind: str, title: str, body: str = "", data: dict | None = None) -> None:
    """Raise an alert to every enabled channel subscribed to `kind`, after the current transaction commits.

    Never raises: any error (bad data, database, broker) is logged and the caller carries on. Outside a
    transaction the callback runs at once (Django's on_commit semantics).
    """
    try:
        if kind not in SUBSCRIBABLE:
            raise ValueError(f"unknown alert kind {kind!r}")
        transaction.on_commit(partial(_dispatch, _payload(kind=kind, title=title, body=body, data=data)),
                              robust=True)
    except Exception:
        log.exception("alert %s %r not emitted", kind, title)


def _delivery_create(target: Target, payload: dict) -> AlertDelivery:
    return AlertDelivery.objects.create(
        channel_id=target.channel_id, channel_key=target.key, channel_label=target.label[:100],
        channel_kind=target.kind, event=payload["kind"], title=payload["title"], body=payload["body"],
        data=payload["data"], event_at=payload["event_at"],
    )


def _dispatch(payload: dict) -> list[int]:
    """After commit: one delivery row and one task per subscribed channel. Returns the delivery ids."""
    ids: list[int] = []
    try:
        for target in delivery_targets(payload["kind"]):
            d = _delivery_create(target, payload)
            ids.append(d.pk)
            _enqueue(d.pk)
    except Exception:
        log.exception("alert %s %r: dispatch failed", payload.get("kind"), payload.get("title"))
    return ids


def _enqueue(delivery_id: int) -> None:
    try:
        deliver_alert.apply_async((delivery_id,), retry=True, retry_policy=_PUBLISH_RETRY)
    except Exception as exc:  # broker down: the row says so, the caller is not held up
        error = redact(f"could not queue: {type(exc).__name__}: {exc}")  # a broker URL may carry its password
        log.warning("alert delivery %s: %s", delivery_id, error)
        AlertDelivery.objects.filter(pk=delivery_id).update(
            status=AlertDelivery.Status.FAILED, error=error[:500], updated_at=timezone.now())


# --- event helpers (one guarded line at each call site) ---------------------------------------------


def _plain(x) -> str:
    """A Decimal as people write it: 100.05, not 100.0500000000 nor 1.0005E+2."""
    d = Decimal(str(x)).normalize()
    return f"{d:f}"


def alert_fill(*, position, fill, purpose: str) -> None:
    """A paper/live fill: entry or exit, with the net P&L on exit (quote currency)."""
    try:
        quote = position.instrument.quote
        body = (f"{position.ghost.name}: {_plain(fill.quantity)} @ {_plain(fill.price)} {quote}, "
                f"fee {_plain(fill.fee)} {quote}")
        data = {"position_id": position.pk, "ghost": position.ghost.name, "instrument": str(position.instrument),
                "mode": position.mode, "side": position.side, "purpose": purpose, "price": fill.price,
                "quantity": fill.quantity, "fee": fill.fee, "filled_at": fill.filled_at}
        if purpose == "exit" and position.gross_pnl is not None:
            net = position.net_pnl
            body += f"; exit: {position.exit_reason}, net P&L {'+' if net >= 0 else ''}{_plain(net)} {quote}"
            data.update(exit_reason=position.exit_reason, net_pnl=position.net_pnl)
        alert_emit(kind=AlertEvent.FILL, title=f"{position.instrument.symbol} {position.side} {purpose} filled",
                   body=body, data=data)
    except Exception:
        log.exception("fill alert for position %s not emitted", getattr(position, "pk", None))


def alert_kill_switch(*, ks) -> None:
    """The kill switch changed (tripped by the risk watch or an operator, or reset by an operator)."""
    try:
        by = ks.changed_by.get_username() if ks.changed_by_id else "system"
        state = "tripped" if ks.tripped else "reset"
        alert_emit(kind=AlertEvent.KILL_SWITCH, title=f"Kill switch {state}", body=f"{ks.reason} (by {by})",
                   data={"tripped": ks.tripped, "reason": ks.reason, "by": by, "at": ks.changed_at})
    except Exception:
        log.exception("kill switch alert not emitted")


def alert_feed_state(*, feed, fields: dict) -> None:
    """Call BEFORE `feed` takes the new `fields`: alerts only on the transition from up (connected or
    lagging) to down (error or reconnecting), and at most once per `HFT_ALERT_FEED_COOLDOWN` seconds per
    feed so a flapping connection does not flood the channel."""
    from apps.market.models import FeedStatus

    try:
        new = fields.get("state")
        up, down = (FeedStatus.State.CONNECTED, FeedStatus.State.LAGGING), (
            FeedStatus.State.ERROR, FeedStatus.State.RECONNECTING)
        if new not in down or feed.state not in up:
            return
        cooldown = int(settings.HFT_ALERT_FEED_COOLDOWN)
        if cooldown > 0 and not cache.add(f"alert:feed-down:{feed.instrument_id}", 1, cooldown):
            return
        # a ccxt error names the URL it called (a signed request's query included): redacted before it leaves
        error = redact(fields.get("last_error") or feed.last_error or "")
        retry = fields.get("next_retry_at")
        body = f"{feed.state} -> {new}" + (f": {error[:500]}" if error else "") + (
            f"; next retry {retry:%H:%M:%S} UTC" if retry else "")
        alert_emit(kind=AlertEvent.FEED_DOWN, title=f"Feed {feed.instrument} {new}", body=body,
                   data={"instrument_id": feed.instrument_id, "instrument": str(feed.instrument), "source": feed.source,
                         "from": feed.state, "to": new, "error": error[:500], "next_retry_at": retry})
    except Exception:
        log.exception("feed alert not emitted")
