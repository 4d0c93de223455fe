"""One delivery attempt of one alert: the HTTP request to Telegram, Discord or a webhook, the attempt recorded
on the AlertDelivery row, and the retry decision. Called by the `deliver_alert` task (apps.alerts.tasks);
apps.alerts.services writes the rows and enqueues the task. This module imports neither, so services -> tasks
-> delivery has no circle (issue 13). The delivery rules (timeouts, backoff, redaction) are in
apps.alerts.services' docstring.
"""

import json
import logging
import urllib.error
import urllib.request
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from apps.alerts.models import AlertChannel, AlertDelivery, AlertEvent
from apps.alerts.redact import RedactFilter, redact
from apps.alerts.selectors import Target, delivery_target, telegram_api_base

log = logging.getLogger(__name__)
log.addFilter(RedactFilter())

TELEGRAM_TEXT_MAX = 4096  # Telegram's sendMessage limit, characters
DISCORD_CONTENT_MAX = 2000  # Discord's message content limit, characters
UNREADABLE_SECRET = ("the channel's secret cannot be decrypted with HFT_SECRETS_KEY (was the key replaced? put the "
                     "old key after the new one, or enter the secret again)")
ANSWER_MAX = 300  # characters of an endpoint's error answer kept in the delivery error (cut after redaction)


class AlertTransientError(Exception):
    """The endpoint may accept the alert later; `retry_in` is the backoff in seconds before the next attempt."""

    def __init__(self, message: str, retry_in: float):
        super().__init__(message)
        self.retry_in = retry_in


def _text(d: AlertDelivery) -> str:
    mode = "LIVE" if settings.HFT_LIVE_TRADING else "PAPER"
    return f"[hftweb {mode}] {d.title}" + (f"\n{d.body}" if d.body else "")


def alert_request(target: Target, d: AlertDelivery) -> tuple[str, dict]:
    """(URL, JSON body) for one delivery: Telegram sendMessage, Discord webhook, or the generic webhook."""
    if target.kind == AlertChannel.Kind.TELEGRAM:
        return f"{telegram_api_base()}/bot{target.secret}/sendMessage", {
            "chat_id": target.chat_id, "text": _text(d)[:TELEGRAM_TEXT_MAX], "disable_web_page_preview": True}
    if target.kind == AlertChannel.Kind.DISCORD:
        # allowed_mentions: an alert text containing "@everyone" must not ping the server
        return target.secret, {"content": _text(d)[:DISCORD_CONTENT_MAX], "allowed_mentions": {"parse": []}}
    return target.secret, {"kind": d.event, "title": d.title, "body": d.body, "data": d.data,
                           "ts": d.event_at.isoformat()}


def _post_json(url: str, payload: dict, timeout: float) -> tuple[int, str, float | None]:
    """POST JSON; returns (status, first 2 kB of the answer, Retry-After seconds). Network errors raise."""
    req = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                 headers={"Content-Type": "application/json", "User-Agent": "hftweb-alerts/1"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read(2000).decode("utf-8", "replace"), None
    except urllib.error.HTTPError as e:
        text = e.read(2000).decode("utf-8", "replace") if e.fp else ""
        try:
            retry_after = float(e.headers.get("Retry-After", "")) if e.headers else None
        except ValueError:
            retry_after = None
        return e.code, text, retry_after


def retry_delay(retries: int) -> float:
    """Seconds before retry number `retries + 1`: base × 2^retries, capped."""
    return min(float(settings.HFT_ALERT_RETRY_BACKOFF_MAX), float(settings.HFT_ALERT_RETRY_BACKOFF) * 2 ** retries)


def _record(d: AlertDelivery, *, status: str, entry: dict, http_status: int | None, error: str,
            next_retry_at=None) -> None:
    d.status, d.attempts, d.http_status, d.error = status, entry["n"], http_status, error[:2000]
    d.next_retry_at = next_retry_at
    d.attempts_log = [*(d.attempts_log or []), entry]
    fields = ["status", "attempts", "http_status", "error", "next_retry_at", "attempts_log", "updated_at"]
    if status == AlertDelivery.Status.SENT:
        d.sent_at = timezone.now()
        fields.append("sent_at")
    d.save(update_fields=fields)


def alert_delivery_attempt(*, delivery_id: int, retries: int, max_retries: int) -> str:
    """One attempt to deliver one alert; returns its final status or raises AlertTransientError to retry.

    `retries` is how many retries came before this attempt (Celery's request.retries). A delivery already
    sent or failed is left alone, so a duplicate task is a no-op. No transaction is held over the HTTP call.
    """
    d = AlertDelivery.objects.filter(pk=delivery_id).first()
    if d is None:
        return "missing"
    if d.status in (AlertDelivery.Status.SENT, AlertDelivery.Status.FAILED):
        return d.status
    now = timezone.now()
    entry: dict[str, Any] = {"n": d.attempts + 1, "at": now.isoformat(), "http_status": None, "error": ""}
    target = delivery_target(d.channel_key)
    refused = ("the channel was removed" if target is None
               else UNREADABLE_SECRET if target.secret_unreadable
               else "the channel has no secret" if not target.secret
               else "the channel is disabled" if not target.enabled and d.event != AlertEvent.TEST else "")
    if refused:
        entry["error"] = refused
        _record(d, status=AlertDelivery.Status.FAILED, entry=entry, http_status=None, error=refused)
        return d.status
    url, body = alert_request(target, d)
    status = None
    try:
        status, text, retry_after = _post_json(url, body, float(settings.HFT_ALERT_TIMEOUT))
    except Exception as exc:  # refused, reset, DNS, TLS, timeout: the endpoint may come back
        error, transient, retry_after = redact(f"{type(exc).__name__}: {exc}", [target.secret]), True, None
    else:
        if 200 <= status < 300:
            _record(d, status=AlertDelivery.Status.SENT, entry={**entry, "http_status": status}, http_status=status,
                    error="")
            return d.status
        # redact the whole answer, then cut: a cut through a token would leave a piece redaction cannot recognise
        error = f"HTTP {status}: {redact(text, [target.secret])[:ANSWER_MAX]}".strip()
        transient = status in (408, 425, 429) or status >= 500
    entry.update(http_status=status, error=error[:500])
    if transient and retries < max_retries:
        retry_in = retry_delay(retries)
        if retry_after:  # the endpoint's own rate limit (Discord/Telegram 429) wins, within the cap
            retry_in = max(retry_in, min(retry_after, float(settings.HFT_ALERT_RETRY_BACKOFF_MAX)))
        entry["retry_in"] = retry_in
        _record(d, status=AlertDelivery.Status.RETRYING, entry=entry, http_status=status, error=error,
                next_retry_at=now + timedelta(seconds=retry_in))
        log.warning("alert %s to %s: attempt %s failed (%s), retry in %.1f s", d.pk, d.channel_label,
                    entry["n"], error, retry_in)
        raise AlertTransientError(error, retry_in)
    _record(d, status=AlertDelivery.Status.FAILED, entry=entry, http_status=status, error=error)
    log.warning("alert %s to %s failed after %s attempt(s): %s", d.pk, d.channel_label, entry["n"], error)
    return d.status


def alert_delivery_fail(*, delivery_id: int, error: str) -> None:
    """Mark a delivery failed for a reason outside the HTTP exchange (e.g. the retry could not be scheduled)."""
    AlertDelivery.objects.filter(pk=delivery_id).exclude(status=AlertDelivery.Status.SENT).update(
        status=AlertDelivery.Status.FAILED, error=redact(error)[:2000], next_retry_at=None, updated_at=timezone.now())
