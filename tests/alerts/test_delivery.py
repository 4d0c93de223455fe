"""Alert delivery against a real HTTP endpoint on 127.0.0.1: each channel's payload, raised by the real
event hooks (kill switch, fills, feed down, auto-disable); retries with exponential backoff; permanent
4xx; an endpoint that is down never reaches the trade that raised the alert."""

import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pandas as pd
import pytest
from django.db import transaction

from apps.alerts.models import SUBSCRIBABLE, AlertDelivery
from apps.alerts.services import alert_channel_create, alert_emit
from apps.engine.types import Draft
from apps.ghosts.models import Ghost
from apps.market.models import FeedStatus
from apps.market.services import feed_status_update
from apps.revenue.services import ghost_review
from apps.signals.services import signal_record
from apps.trading.models import Fill, Position
from apps.trading.risk_services import kill_switch_reset, kill_switch_trip
from apps.trading.services import position_close, signal_execute_paper

pytestmark = pytest.mark.django_db
TOKEN = "123456789:AAHfakeTokenForTests_0123456789abcdef"  # BotFather-shaped; not a real token
HOOK_PATH = "/api/webhooks/1234567890/s3cr3t-webhook-token-part"
T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def channel(kind: str, secret: str, *, events=None, chat_id: str = "", name: str | None = None, enabled=True):
    return alert_channel_create(actor=None, kind=kind, name=name or f"{kind}-test", events=events or SUBSCRIBABLE,
                                secret=secret, chat_id=chat_id, enabled=enabled)


def draft(side: int = 1, entry: float = 100.0) -> Draft:
    return Draft(side=side, confidence=0.9, priority=2, entry=entry, stop=entry * (1 - 0.01 * side),
                 target=entry * (1 + 0.01 * side), size_mult=1.0, max_hold_s=3600, reason="test",
                 bar_time=pd.Timestamp(T0))


def open_position(ghost, minute: int = 0, price: str = "100") -> Position:
    signal, _ = signal_record(ghost=ghost, bar_time=T0 + timedelta(minutes=minute), draft=draft())
    position = signal_execute_paper(signal_id=signal.pk, price=Decimal(price),
                                    at=T0 + timedelta(minutes=minute + 1), quantity=1.0)
    assert position is not None
    return position


# --- payload shapes, from the real hooks --------------------------------------------------------------


def test_telegram_send_message_on_kill_switch_trip_and_reset(endpoint, eager, settings, operator,
                                                             django_capture_on_commit_callbacks):
    settings.HFT_ALERT_TELEGRAM_API = endpoint.url  # Telegram's API base, pointed at the local server
    channel("telegram", TOKEN, chat_id="-1001234567", events=["kill_switch"])
    with django_capture_on_commit_callbacks(execute=True):
        kill_switch_trip(actor=None, reason="daily loss 3.1% >= 3.0%", flatten=False)
    with django_capture_on_commit_callbacks(execute=True):
        kill_switch_reset(actor=operator, reason="checked the feed")
    trip, reset = endpoint.requests
    assert trip.method == "POST" and trip.path == f"/bot{TOKEN}/sendMessage"
    assert trip.headers["Content-Type"] == "application/json"
    assert trip.body == {"chat_id": "-1001234567", "disable_web_page_preview": True,
                         "text": "[hftweb PAPER] Kill switch tripped\ndaily loss 3.1% >= 3.0% (by system)"}
    assert reset.body["text"] == "[hftweb PAPER] Kill switch reset\nchecked the feed (by olga)"
    rows = list(AlertDelivery.objects.order_by("id").values_list("event", "status", "http_status", "attempts"))
    assert rows == [("kill_switch", "sent", 200, 1)] * 2


def test_discord_content_on_entry_and_exit_fills(desk, endpoint, eager, django_capture_on_commit_callbacks):
    channel("discord", endpoint.url + HOOK_PATH, events=["fill"])
    with django_capture_on_commit_callbacks(execute=True):
        position = open_position(desk["ghost"])
    with django_capture_on_commit_callbacks(execute=True):
        position_close(position_id=position.pk, price=101.0, at=T0 + timedelta(minutes=5), reason="target")
    entry, exit_ = endpoint.requests
    assert entry.path == HOOK_PATH and set(entry.body) == {"content", "allowed_mentions"}
    assert entry.body["allowed_mentions"] == {"parse": []}  # no @everyone pings from alert text
    fill = Fill.objects.get(order__position=position, order__purpose="entry")
    qty, px, fee = (f"{v.normalize():f}" for v in (fill.quantity, fill.price, fill.fee))
    # 100 plus 5 bps of slippage; one unit decided at the 100 close keeps its notional: 100 / 100.05 units
    assert (qty, px) == ("0.99950025", "100.05")
    assert entry.body["content"] == (f"[hftweb PAPER] BTC/USDT long entry filled\nfader-btc: {qty} @ {px} USDT, "
                                     f"fee {fee} USDT")
    position.refresh_from_db()
    net = position.net_pnl
    assert net > 0  # a target at 101 after an entry at 100.05 nets more than the two fees
    assert exit_.body["content"].startswith(f"[hftweb PAPER] BTC/USDT long exit filled\nfader-btc: {qty} @ 101 USDT")
    assert f"exit: target, net P&L +{net.normalize():f} USDT" in exit_.body["content"]
    d = AlertDelivery.objects.order_by("id").last()
    assert d.data["purpose"] == "exit" and Decimal(d.data["net_pnl"]) == position.net_pnl


def test_webhook_json_on_feed_down(desk, endpoint, eager, django_capture_on_commit_callbacks):
    channel("webhook", endpoint.url + "/hook", events=["feed_down"])
    inst = desk["instrument"]
    FeedStatus.objects.filter(instrument=inst).update(state="connected")
    retry_at = datetime(2026, 3, 2, 10, 0, 30, tzinfo=UTC)
    before = datetime.now(UTC)
    with django_capture_on_commit_callbacks(execute=True):
        feed_status_update(instrument_id=inst.pk, state="reconnecting", last_error="NetworkError: reset by peer",
                           next_retry_at=retry_at)
    [req] = endpoint.requests
    assert req.path == "/hook" and set(req.body) == {"kind", "title", "body", "data", "ts"}
    assert req.body["kind"] == "feed_down" and req.body["title"] == "Feed binance:BTC/USDT reconnecting"
    assert req.body["body"] == "connected -> reconnecting: NetworkError: reset by peer; next retry 10:00:30 UTC"
    assert req.body["data"] == {"instrument_id": inst.pk, "instrument": "binance:BTC/USDT", "source": "sim",
                                "from": "connected", "to": "reconnecting", "error": "NetworkError: reset by peer",
                                "next_retry_at": retry_at.isoformat().replace("+00:00", "Z")}
    ts = datetime.fromisoformat(req.body["ts"])
    assert ts.utcoffset() == timedelta(0) and before <= ts <= datetime.now(UTC)


def test_feed_down_fires_on_the_transition_only(desk, endpoint, eager, settings, django_capture_on_commit_callbacks):
    channel("webhook", endpoint.url + "/hook", events=["feed_down"])
    inst = desk["instrument"]

    def update(**fields):
        with django_capture_on_commit_callbacks(execute=True):
            feed_status_update(instrument_id=inst.pk, **fields)
        return len(endpoint.requests)

    assert update(state="error", last_error="boot failure") == 0  # starting -> error: never was up
    assert update(state="connected", last_error="") == 0
    assert update(state="reconnecting", last_error="reset") == 1  # up -> down
    assert update(state="reconnecting", last_error="reset again") == 1  # still down: every retry is not news
    assert update(state="error", last_error="exchange error") == 1  # down -> down
    assert update(state="connected") == 1
    assert update(state="lagging") == 1  # slow is not down
    assert update(state="error", last_error="flap") == 1  # up -> down again, inside the cooldown: quiet
    settings.HFT_ALERT_FEED_COOLDOWN = 0
    assert update(state="connected") == 1
    assert update(state="error", last_error="flap") == 2
    assert [r.body["data"]["from"] for r in endpoint.requests] == ["connected", "connected"]


def test_auto_disable_reaches_the_webhook(desk, endpoint, eager, django_capture_on_commit_callbacks):
    channel("webhook", endpoint.url + "/hook", events=["auto_disable"])  # fills are not subscribed
    ghost = desk["ghost"]
    Ghost.objects.filter(pk=ghost.pk).update(auto_disable={"min_trades": 3})
    for k in range(3):
        p = open_position(ghost, minute=10 * k)
        position_close(position_id=p.pk, price=99.0, at=T0 + timedelta(minutes=10 * k + 2), reason="stop")
    with django_capture_on_commit_callbacks(execute=True):
        reasons = ghost_review(ghost_id=ghost.pk)
    [req] = endpoint.requests
    assert reasons and req.body["kind"] == "auto_disable" and req.body["title"] == "fader-btc auto-disabled"
    assert req.body["data"]["reasons"] == reasons and "win rate 0.0% over 3 trades" in req.body["body"]


def test_event_filter_and_disabled_channels(endpoint, eager, django_capture_on_commit_callbacks):
    channel("webhook", endpoint.url + "/fills", events=["fill"], name="fills-only")
    channel("webhook", endpoint.url + "/off", events=SUBSCRIBABLE, name="switched-off", enabled=False)
    with django_capture_on_commit_callbacks(execute=True):
        alert_emit(kind="kill_switch", title="Kill switch tripped")
        alert_emit(kind="fill", title="BTC/USDT long entry filled", data={"price": Decimal("65000.5")})
    [req] = endpoint.requests
    assert req.path == "/fills" and req.body["data"] == {"price": "65000.5"}


def test_nothing_is_sent_for_a_rolled_back_transaction(endpoint, eager, django_capture_on_commit_callbacks):
    channel("webhook", endpoint.url + "/hook")
    with django_capture_on_commit_callbacks(execute=True):
        with pytest.raises(RuntimeError):
            with transaction.atomic():
                alert_emit(kind="fill", title="never filled")
                raise RuntimeError("the trade failed")
    assert endpoint.requests == [] and not AlertDelivery.objects.exists()


# --- retries and failures ----------------------------------------------------------------------------


def test_500_then_200_retries_with_exponential_backoff(endpoint, eager, settings, django_capture_on_commit_callbacks):
    settings.HFT_ALERT_RETRY_BACKOFF, settings.HFT_ALERT_MAX_RETRIES = 2, 3
    endpoint.script = [500, 500, 200]
    channel("webhook", endpoint.url + "/hook")
    with django_capture_on_commit_callbacks(execute=True):
        alert_emit(kind="kill_switch", title="Kill switch tripped", body="daily loss")
    assert len(endpoint.requests) == 3 and len({str(r.body) for r in endpoint.requests}) == 1  # same alert
    d = AlertDelivery.objects.get()
    assert (d.status, d.attempts, d.http_status, d.error, d.next_retry_at) == ("sent", 3, 200, "", None)
    assert [e["http_status"] for e in d.attempts_log] == [500, 500, 200]
    assert [e.get("retry_in") for e in d.attempts_log] == [2.0, 4.0, None]  # base x 2^n seconds


def test_retries_stop_after_the_maximum_and_backoff_is_capped(endpoint, eager, settings,
                                                              django_capture_on_commit_callbacks):
    settings.HFT_ALERT_RETRY_BACKOFF, settings.HFT_ALERT_RETRY_BACKOFF_MAX, settings.HFT_ALERT_MAX_RETRIES = 2, 3, 2
    endpoint.script = [503]
    channel("webhook", endpoint.url + "/hook")
    with django_capture_on_commit_callbacks(execute=True):
        alert_emit(kind="fill", title="x")
    d = AlertDelivery.objects.get()
    assert len(endpoint.requests) == 3 and (d.status, d.attempts, d.http_status) == ("failed", 3, 503)
    assert [e.get("retry_in") for e in d.attempts_log] == [2.0, 3.0, None]
    assert d.error.startswith("HTTP 503: ") and "scripted failure" in d.error


def test_rate_limit_retry_after_is_honoured(endpoint, eager, settings, django_capture_on_commit_callbacks):
    settings.HFT_ALERT_RETRY_BACKOFF = 1
    endpoint.script, endpoint.retry_after = [429, 200], "7"
    channel("discord", endpoint.url + HOOK_PATH)
    with django_capture_on_commit_callbacks(execute=True):
        alert_emit(kind="fill", title="x")
    d = AlertDelivery.objects.get()
    assert d.status == "sent" and [e.get("retry_in") for e in d.attempts_log] == [7.0, None]


def test_a_refused_token_fails_at_once_and_the_error_hides_it(endpoint, eager, settings,
                                                               django_capture_on_commit_callbacks):
    settings.HFT_ALERT_TELEGRAM_API = endpoint.url
    endpoint.script = [401]
    channel("telegram", TOKEN, chat_id="42")
    with django_capture_on_commit_callbacks(execute=True):
        alert_emit(kind="feed_down", title="x")
    d = AlertDelivery.objects.get()
    assert len(endpoint.requests) == 1 and (d.status, d.attempts, d.http_status) == ("failed", 1, 401)
    assert TOKEN not in d.error and TOKEN not in str(d.attempts_log)


@pytest.mark.django_db(transaction=True)
def test_a_dead_endpoint_never_reaches_the_fill(desk, closed_port, eager, settings):
    """Real commits (transactional test): the fill commits, then the after-commit alert fails every attempt
    against a refused connection, and signal_execute_paper still returns its position."""
    settings.HFT_ALERT_MAX_RETRIES = 2
    url = f"http://127.0.0.1:{closed_port}{HOOK_PATH}"
    channel("webhook", url, events=["fill"])
    position = open_position(desk["ghost"])
    assert Position.objects.filter(pk=position.pk, status="open").exists()
    assert Fill.objects.filter(order__position=position).count() == 1
    d = AlertDelivery.objects.get()
    assert (d.status, d.attempts, d.http_status) == ("failed", 3, None)
    assert "Connection refused" in d.error and HOOK_PATH not in d.error
    assert [e.get("retry_in") for e in d.attempts_log] == [2.0, 4.0, None]


def test_a_broker_that_refuses_the_task_is_recorded_not_raised(endpoint, monkeypatch,
                                                                django_capture_on_commit_callbacks):
    from kombu.exceptions import OperationalError

    from apps.alerts import tasks

    def refuse(*args, **kwargs):  # the broker is the network edge: this is what kombu raises when Redis is gone
        raise OperationalError("Error 111 connecting to 127.0.0.1:1. Connection refused.")

    monkeypatch.setattr(tasks.deliver_alert, "apply_async", refuse)
    channel("webhook", endpoint.url + "/hook")
    with django_capture_on_commit_callbacks(execute=True):
        alert_emit(kind="fill", title="x")
    d = AlertDelivery.objects.get()
    assert d.status == "failed" and d.error.startswith("could not queue: OperationalError")
    assert endpoint.requests == []


def test_bad_alert_input_is_logged_not_raised(endpoint, eager, caplog, django_capture_on_commit_callbacks):
    channel("webhook", endpoint.url + "/hook")
    with django_capture_on_commit_callbacks(execute=True):
        alert_emit(kind="fill", title="x", data={"obj": object()})  # not JSON
        alert_emit(kind="no-such-event", title="x")
    assert endpoint.requests == [] and not AlertDelivery.objects.exists()
    assert caplog.text.count("not emitted") == 2


# --- a real worker ----------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_real_worker_retries_500s_with_growing_waits(endpoint, celery_workers):
    """The Celery worker process `make run` starts: the task is queued after commit, retried by Celery
    with the service's countdowns, and the endpoint sees the attempts spaced by at least those waits."""
    endpoint.script = [500, 500, 200]
    channel("webhook", endpoint.url + "/hook", events=["kill_switch"])
    with transaction.atomic():
        alert_emit(kind="kill_switch", title="Kill switch tripped", body="worker test")
        assert not AlertDelivery.objects.exists()  # nothing queued before the commit
    reqs = endpoint.wait_for(3, timeout=60)
    assert len(reqs) == 3, [r.path for r in reqs]
    d = AlertDelivery.objects.get()
    for _ in range(100):  # the worker records "sent" just after the 200 answer
        if d.status == "sent":
            break
        time.sleep(0.1)
        d.refresh_from_db()
    waits = [e.get("retry_in") for e in d.attempts_log]
    assert d.status == "sent" and d.attempts == 3 and waits[2] is None
    assert waits[1] == 2 * waits[0] > 0
    gaps = [b.at - a.at for a, b in zip(reqs, reqs[1:], strict=False)]
    print(f"\nworker retries: waits {waits[:2]} s, observed gaps {[round(g, 2) for g in gaps]} s")
    assert all(g >= w - 0.25 for g, w in zip(gaps, waits, strict=False))  # Celery's ETA is second-resolution-ish
