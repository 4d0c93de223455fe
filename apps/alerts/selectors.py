"""Reads for alerts: channels (database rows and the environment's), delivery targets, recent deliveries.

Environment channels are read from `os.environ` when needed, not copied into Django settings: Django's
debug page masks settings named *TOKEN* but not *_WEBHOOK / *_URL, and these URLs carry tokens.
"""

import os
from dataclasses import dataclass, field

from django.conf import settings
from django.db.models import OuterRef, QuerySet, Subquery

from apps.alerts.crypto import SecretUnreadable
from apps.alerts.models import SUBSCRIBABLE, AlertChannel, AlertDelivery
from apps.common.parsing import parse_id


@dataclass(frozen=True)
class Target:
    """Where one alert goes. `secret` is excluded from repr so a logged Target leaks nothing."""

    key: str  # "db:<id>" or "env:<kind>"
    kind: str
    label: str
    enabled: bool
    events: tuple[str, ...]
    chat_id: str = ""
    secret: str = field(default="", repr=False)
    channel_id: int | None = None
    from_env: bool = False
    secret_unreadable: bool = False  # stored, but no key in HFT_SECRETS_KEY opens it (the delivery says so)

    @property
    def secret_set(self) -> bool:
        return bool(self.secret)


def env_events() -> tuple[str, ...]:
    """HFT_ALERT_EVENTS: comma-separated event kinds for the environment's channels (default: all)."""
    raw = os.environ.get("HFT_ALERT_EVENTS", "").strip()
    if not raw:
        return tuple(SUBSCRIBABLE)
    return tuple(e for e in (p.strip() for p in raw.split(",")) if e in SUBSCRIBABLE)


def env_channels() -> list[Target]:
    """Channels configured by environment variables; listed read-only on the dashboard."""
    out = []
    events = env_events()
    token, chat = os.environ.get("HFT_ALERT_TELEGRAM_TOKEN", ""), os.environ.get("HFT_ALERT_TELEGRAM_CHAT_ID", "")
    if token and chat:
        out.append(Target(key="env:telegram", kind="telegram", label="Telegram (environment)", enabled=True,
                          events=events, chat_id=chat, secret=token, from_env=True))
    if url := os.environ.get("HFT_ALERT_DISCORD_WEBHOOK", ""):
        out.append(Target(key="env:discord", kind="discord", label="Discord (environment)", enabled=True,
                          events=events, secret=url, from_env=True))
    if url := os.environ.get("HFT_ALERT_WEBHOOK_URL", ""):
        out.append(Target(key="env:webhook", kind="webhook", label="Webhook (environment)", enabled=True,
                          events=events, secret=url, from_env=True))
    return out


def _target(ch: AlertChannel) -> Target:
    """The channel with its secret decrypted; one that no key opens becomes a target without a secret (its
    deliveries fail with the reason) rather than an exception that would hold up the other channels."""
    try:
        secret, unreadable = ch.secret, False
    except SecretUnreadable:
        secret, unreadable = "", True
    return Target(key=ch.key, kind=ch.kind, label=ch.name, enabled=ch.enabled, events=tuple(ch.events or ()),
                  chat_id=ch.chat_id, secret=secret, channel_id=ch.pk, secret_unreadable=unreadable)


def delivery_targets(event: str) -> list[Target]:
    """Enabled channels (rows and environment) subscribed to `event`."""
    rows = [_target(ch) for ch in AlertChannel.objects.filter(enabled=True)]
    return [t for t in rows + env_channels() if event in t.events]


def delivery_target(key: str) -> Target | None:
    """The target for a delivery's channel key, re-read at send time (a replaced secret takes effect)."""
    if key.startswith("db:"):
        # parse_id, not isdigit(): "db:²" passed isdigit() and failed int(); and only the key as AlertChannel.key
        # spells it ("db:05", "db: 5" name nothing)
        pk = parse_id(key[3:])
        ch = AlertChannel.objects.filter(pk=pk).first() if pk is not None and key[3:] == str(pk) else None
        return _target(ch) if ch else None
    return next((t for t in env_channels() if t.key == key), None)


def alert_channels() -> QuerySet[AlertChannel]:
    """Rows for the dashboard, each with its last delivery's status and time (one query)."""
    last = AlertDelivery.objects.filter(channel=OuterRef("pk")).order_by("-created_at", "-id")
    return AlertChannel.objects.annotate(
        last_status=Subquery(last.values("status")[:1]),
        last_at=Subquery(last.values("created_at")[:1]),
    ).order_by("name")


def recent_deliveries(limit: int = 50) -> QuerySet[AlertDelivery]:
    return AlertDelivery.objects.order_by("-created_at", "-id")[:limit]


def telegram_api_base() -> str:
    return settings.HFT_ALERT_TELEGRAM_API.rstrip("/")
