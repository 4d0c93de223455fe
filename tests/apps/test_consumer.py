"""DeskConsumer through Channels' WebsocketCommunicator on the real Redis channel layer."""

import json

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AnonymousUser

from apps.audit.models import AuditEvent
from apps.common.realtime import send_now
from apps.dashboard.consumers import DeskConsumer
from apps.ghosts.models import Ghost

pytestmark = pytest.mark.django_db(transaction=True)


async def connected(user) -> WebsocketCommunicator:
    comm = WebsocketCommunicator(DeskConsumer.as_asgi(), "/ws/desk/")
    comm.scope["user"] = user
    ok, _ = await comm.connect()
    assert ok
    return comm


async def ghost_state(pk: int) -> tuple[bool, str]:
    g = await Ghost.objects.aget(pk=pk)
    return g.enabled, g.status


async def test_anonymous_is_refused(desk):
    comm = WebsocketCommunicator(DeskConsumer.as_asgi(), "/ws/desk/")
    comm.scope["user"] = AnonymousUser()
    ok, code = await comm.connect()
    assert not ok and code == 4401
    await comm.disconnect()


async def test_viewer_receives_group_events(desk, viewer):
    comm = await connected(viewer)
    try:
        await sync_to_async(send_now)("ghosts", {"type": "ghost.status", "ghost_id": 1, "status": "degraded"})
        assert await comm.receive_json_from(timeout=3) == {"type": "ghost.status", "ghost_id": 1,
                                                           "status": "degraded"}
    finally:
        await comm.disconnect()


async def test_viewer_cannot_toggle(desk, viewer):
    ghost = desk["ghost"]
    comm = await connected(viewer)
    try:
        await comm.send_json_to({"action": "ghost.toggle", "ghost_id": ghost.pk, "enabled": False, "reason": "x"})
        reply = await comm.receive_json_from(timeout=3)
        assert reply["type"] == "error" and reply["code"] == "forbidden"
        assert await ghost_state(ghost.pk) == (True, "active")
        assert not await AuditEvent.objects.filter(action="ghost.disabled").aexists()
    finally:
        await comm.disconnect()


async def test_operator_toggle_acks_audits_and_broadcasts(desk, operator, viewer):
    ghost = desk["ghost"]
    op_comm, watcher = await connected(operator), await connected(viewer)
    try:
        await op_comm.send_json_to(
            {"action": "ghost.toggle", "ghost_id": ghost.pk, "enabled": False, "reason": "drawdown"}
        )
        replies = [await op_comm.receive_json_from(timeout=3), await op_comm.receive_json_from(timeout=3)]
        ack = next(r for r in replies if r["type"] == "ack")  # the ack and the broadcast may come in any order
        assert ack == {"type": "ack", "action": "ghost.toggle", "ghost_id": ghost.pk, "enabled": False,
                       "status": "disabled"}
        assert await ghost_state(ghost.pk) == (False, "disabled")
        ev = await AuditEvent.objects.select_related("actor").aget(action="ghost.disabled")
        assert ev.actor.username == "olga" and ev.reason == "drawdown"
        event = await watcher.receive_json_from(timeout=3)
        assert event["type"] == "ghost.toggled" and event["ghost_id"] == ghost.pk
        assert event["enabled"] is False and event["actor"] == "olga"
    finally:
        await op_comm.disconnect()
        await watcher.disconnect()


MALFORMED = [
    ("not json", "bad_json"),
    ("[1, 2]", "bad_message"),
    ('"ping"', "bad_message"),
    ("{}", "bad_message"),
    ('{"action": 5}', "bad_message"),
    ('{"action": "rm -rf"}', "unknown_action"),
    (json.dumps({"action": "ghost.toggle", "ghost_id": "1", "enabled": False, "reason": "x"}), "bad_message"),
    (json.dumps({"action": "ghost.toggle", "ghost_id": 1, "enabled": "false", "reason": "x"}), "bad_message"),
    (json.dumps({"action": "ghost.toggle", "ghost_id": True, "enabled": False, "reason": "x"}), "bad_message"),
    (json.dumps({"action": "ghost.toggle", "ghost_id": 1, "enabled": False}), "bad_message"),
    (json.dumps({"action": "ghost.toggle", "ghost_id": 999999, "enabled": False, "reason": "x"}), "not_found"),
    (json.dumps({"action": "ghost.toggle", "ghost_id": "GHOST", "enabled": False, "reason": " "}), "invalid"),
    (json.dumps({"action": "ping", "pad": "x" * 5000}), "bad_message"),
    (json.dumps({"action": "ping", "pad": "é" * 2100}, ensure_ascii=False), "bad_message"),  # > 4 KiB in UTF-8
]


@pytest.mark.parametrize("raw,code", MALFORMED)
async def test_malformed_messages_get_an_error_and_the_socket_survives(desk, operator, raw, code):
    raw = raw.replace('"GHOST"', str(desk["ghost"].pk))
    comm = await connected(operator)
    try:
        await comm.send_to(text_data=raw)
        reply = await comm.receive_json_from(timeout=3)
        assert reply["type"] == "error" and reply["code"] == code, reply
        await comm.send_json_to({"action": "ping"})
        assert await comm.receive_json_from(timeout=3) == {"type": "pong"}
        assert await ghost_state(desk["ghost"].pk) == (True, "active")
    finally:
        await comm.disconnect()


async def test_binary_frame_is_an_error(desk, viewer):
    comm = await connected(viewer)
    try:
        await comm.send_to(bytes_data=b'{"action": "ping"}')
        reply = await comm.receive_json_from(timeout=3)
        assert reply["type"] == "error" and reply["code"] == "bad_message"
        await comm.send_json_to({"action": "ping"})
        assert await comm.receive_json_from(timeout=3) == {"type": "pong"}
    finally:
        await comm.disconnect()
