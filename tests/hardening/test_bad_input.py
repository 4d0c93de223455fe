"""The six causes of the 129 server errors in the fuzzing run of issue 12, one test each (or two where the
issue names two endpoints): each answers 400 (or an error frame on the socket) with a message that says what
was wrong, logs no traceback, and changes nothing."""

import json
from datetime import UTC, datetime

import pytest
from channels.testing import WebsocketCommunicator
from django.urls import reverse

from apps.alerts.models import AlertChannel, AlertDelivery
from apps.alerts.services import alert_channel_create
from apps.audit.models import AuditEvent
from apps.dashboard.consumers import DeskConsumer
from apps.ghosts.models import Ghost
from apps.revenue.models import RevenueTarget
from apps.trading.models import RiskSettings
from tests.factories import make_position

pytestmark = pytest.mark.django_db


def _params_url(ghost) -> str:
    return reverse("dashboard:ghost-params", args=[ghost.pk])


def _assert_refused(response, tracebacks, *words: str, status: int = 400) -> str:
    body = response.content.decode() if not response.streaming else b"".join(response.streaming_content).decode()
    assert response.status_code == status, (response.status_code, tracebacks.text())
    assert not tracebacks.records, tracebacks.text()
    for w in words:
        assert w in body, f"{w!r} not in the {status} page"
    return body


# --- 1. ghost params: nesting depth and the int digit limit -------------------------------------------------


def test_params_nested_2000_deep_is_a_400(op_http, desk, tracebacks):
    ghost = desk["ghost"]
    before = dict(ghost.params)
    r = op_http.post(_params_url(ghost), {"params": "[" * 2000 + "]" * 2000, "reason": "fuzz"})
    _assert_refused(r, tracebacks, "nested")
    assert Ghost.objects.get(pk=ghost.pk).params == before
    assert not AuditEvent.objects.filter(action="ghost.params_changed").exists()


def test_params_int_of_4301_digits_is_a_400(op_http, desk, tracebacks):
    ghost = desk["ghost"]
    before = dict(ghost.params)
    r = op_http.post(_params_url(ghost), {"params": '{"move_pct": ' + "9" * 4301 + "}", "reason": "fuzz"})
    _assert_refused(r, tracebacks, "digits")
    assert Ghost.objects.get(pk=ghost.pk).params == before


# --- 2. overflowing integers in the risk and auto-disable forms ----------------------------------------------


def _risk_post(**override: str) -> dict[str, str]:
    from apps.dashboard.views_risk import LIMIT_SPECS
    from apps.engine.risk import RiskLimits

    current = RiskLimits().to_params()
    data = {s.name: str(current[s.name]) for s in LIMIT_SPECS if s.kind != "bool"}
    return {**data, "reason": "fuzz", **override}


def test_risk_limit_of_400_nines_is_a_400(op_http, desk, tracebacks):
    r = op_http.post(reverse("dashboard:risk"), _risk_post(max_open_positions="9" * 400))
    _assert_refused(r, tracebacks, "Max open positions", "too large")
    assert not RiskSettings.objects.exists()
    assert not AuditEvent.objects.filter(action="risk.limits_changed").exists()


def test_auto_disable_min_trades_of_400_nines_is_a_400(op_http, desk, tracebacks):
    from apps.engine.performance import AutoDisableRules

    ghost = desk["ghost"]
    rules = {k: str(v) for k, v in AutoDisableRules().to_params().items()}
    r = op_http.post(reverse("dashboard:ghost-auto-disable", args=[ghost.pk]),
                     {**rules, "min_trades": "9" * 400, "reason": "fuzz"})
    _assert_refused(r, tracebacks, "Min trades", "too large")
    assert Ghost.objects.get(pk=ghost.pk).auto_disable == ghost.auto_disable
    assert not AuditEvent.objects.filter(action="ghost.auto_disable_changed").exists()


# --- 3. out-of-range dates in the trades filter (a viewer can send them) --------------------------------------


@pytest.mark.parametrize("name", ["dashboard:trades", "dashboard:trades-csv"])
@pytest.mark.parametrize("query", [{"date_to": "9999-12-31"}, {"date_from": "0001-01-01", "date_to": "9999-12-31"}])
def test_trades_filter_with_a_date_out_of_range_is_a_400(viewer_http, desk, tracebacks, name, query):
    make_position(ghost=desk["ghost"], opened_at=datetime(2026, 3, 2, 9, 30, tzinfo=UTC))
    r = viewer_http.get(reverse(name), query)
    _assert_refused(r, tracebacks, "between")


# --- 4. unicode digits: isdigit() says yes, int() says no ----------------------------------------------------


def test_target_owner_superscript_two_is_a_400(op_http, desk, tracebacks):
    r = op_http.post(reverse("dashboard:targets"), {"owner": "²", "amount": "25", "period": "day"})
    _assert_refused(r, tracebacks, "owner must be")
    assert not RevenueTarget.objects.exists()


def test_alert_test_to_channel_db_superscript_two_is_a_400(op_http, operator, desk, tracebacks):
    alert_channel_create(actor=operator, kind="webhook", name="hook", events=["fill"], chat_id="",
                         secret="https://hooks.example.invalid/x", enabled=True)
    for key in ("db:²", "db:١", "db:" + "9" * 30):
        r = op_http.post(reverse("dashboard:alert-test"), {"channel": key})
        _assert_refused(r, tracebacks, "no such channel")
    assert not AlertDelivery.objects.exists() and AlertChannel.objects.count() == 1


# --- 5. a websocket message nested 1,000 deep -----------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_websocket_message_nested_1000_deep_gets_an_error_and_the_socket_lives(operator, tracebacks):
    comm = WebsocketCommunicator(DeskConsumer.as_asgi(), "/ws/desk/")
    comm.scope["user"] = operator
    ok, _ = await comm.connect(timeout=10)  # joining the groups on Redis can take over 1 s on a busy machine
    assert ok
    try:
        for text in ("[" * 1000 + "]" * 1000, '{"action": "ping", "x": ' + "[" * 1000 + "]" * 1000 + "}",
                     '{"action": "ping", "x": ' + "9" * 4000 + "}"):
            await comm.send_to(text_data=text)
            reply = await comm.receive_json_from(timeout=10)
            assert reply["type"] == "error" and reply["code"] == "bad_json", reply
        await comm.send_to(text_data=json.dumps({"action": "ping"}))  # still open, still answering
        assert await comm.receive_json_from(timeout=10) == {"type": "pong"}
        assert not tracebacks.records, tracebacks.text()
    finally:
        await comm.disconnect()
