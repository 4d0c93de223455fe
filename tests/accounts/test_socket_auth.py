"""The desk socket follows the login: logout, deactivation and role change close it, and every message a
client sends re-checks the session, the user and the role first.

Through the production ASGI application (origin check, session cookie, AuthMiddlewareStack) with
WebsocketCommunicator, the real Redis channel layer and the real session store; the sessions come from the
real login form.
"""

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import Group
from django.contrib.sessions.models import Session
from django.test import Client
from django.urls import reverse

from apps.accounts.services import user_ensure
from apps.audit.models import AuditEvent
from apps.common.realtime import send_now
from apps.dashboard import consumers
from apps.ghosts.models import Ghost
from hftweb.asgi import application
from tests.conftest import PASSWORD_SUFFIX

pytestmark = pytest.mark.django_db(transaction=True)


@sync_to_async
def logged_in_client(username: str) -> Client:
    client = Client()
    response = client.post(reverse("login"), {"username": username, "password": username + PASSWORD_SUFFIX})
    assert response.status_code == 302
    return client


async def open_socket(client: Client) -> WebsocketCommunicator:
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
    headers = [(b"cookie", cookie), (b"origin", b"http://127.0.0.1"), (b"host", b"127.0.0.1")]
    comm = WebsocketCommunicator(application, "/ws/desk/", headers=headers)
    ok, _ = await comm.connect(timeout=5)
    assert ok
    await comm.send_json_to({"action": "ping"})
    assert await comm.receive_json_from(timeout=5) == {"type": "pong"}
    return comm


async def closed_with(comm: WebsocketCommunicator) -> int | None:
    """The close code if the server closes the socket within 3 s, skipping any event frames before it."""
    while True:
        try:
            message = await comm.receive_output(timeout=3)
        except TimeoutError:
            return None
        if message["type"] == "websocket.close":
            return message.get("code")


async def toggle(comm: WebsocketCommunicator, ghost_id: int) -> None:
    await comm.send_json_to({"action": "ghost.toggle", "ghost_id": ghost_id, "enabled": False, "reason": "x"})


async def nothing_toggled(ghost_id: int) -> bool:
    ghost = await Ghost.objects.aget(pk=ghost_id)
    return ghost.enabled and not await AuditEvent.objects.filter(action="ghost.disabled").aexists()


async def test_logout_closes_that_sessions_sockets_at_once(desk, make_user):
    await sync_to_async(make_user)("olga", "operator")
    laptop, phone = await logged_in_client("olga"), await logged_in_client("olga")
    on_laptop, on_phone = await open_socket(laptop), await open_socket(phone)
    try:
        assert (await sync_to_async(laptop.post)(reverse("logout"))).status_code == 302
        assert await closed_with(on_laptop) == 4401  # without the client sending anything
        # The phone's session is still logged in: its socket stays.
        await on_phone.send_json_to({"action": "ping"})
        assert await on_phone.receive_json_from(timeout=3) == {"type": "pong"}
    finally:
        await on_laptop.disconnect()
        await on_phone.disconnect()


async def test_a_logged_out_socket_cannot_toggle_even_if_it_missed_the_close(desk, make_user):
    """The session is deleted behind the socket's back (no event): the next command re-checks and closes."""
    await sync_to_async(make_user)("olga", "operator")
    client = await logged_in_client("olga")
    comm = await open_socket(client)
    try:
        await Session.objects.filter(session_key=client.cookies["sessionid"].value).adelete()
        await toggle(comm, desk["ghost"].pk)
        assert await closed_with(comm) == 4401
        assert await nothing_toggled(desk["ghost"].pk)
    finally:
        await comm.disconnect()


async def test_deactivation_closes_the_sockets_and_is_rechecked_per_command(desk, make_user):
    olga = await sync_to_async(make_user)("olga", "operator")
    first, second = await logged_in_client("olga"), await logged_in_client("olga")
    comm = await open_socket(first)
    try:
        olga.is_active = False
        await olga.asave()  # as the admin's user form does
        assert await closed_with(comm) == 4401
    finally:
        await comm.disconnect()

    await type(olga).objects.filter(pk=olga.pk).aupdate(is_active=True)
    comm = await open_socket(second)
    try:
        await type(olga).objects.filter(pk=olga.pk).aupdate(is_active=False)  # a bulk update sends no signal
        await toggle(comm, desk["ghost"].pk)
        assert await closed_with(comm) == 4401
        assert await nothing_toggled(desk["ghost"].pk)
    finally:
        await comm.disconnect()


async def test_role_change_closes_the_users_sockets_only(desk, make_user):
    await sync_to_async(make_user)("olga", "operator")
    await sync_to_async(make_user)("otto", "operator")
    olga_comm = await open_socket(await logged_in_client("olga"))
    otto_comm = await open_socket(await logged_in_client("otto"))
    try:
        await sync_to_async(user_ensure)(username="olga", role="viewer")
        assert await closed_with(olga_comm) == 4403  # the browser reconnects as a viewer
        await otto_comm.send_json_to({"action": "ping"})
        assert await otto_comm.receive_json_from(timeout=3) == {"type": "pong"}
    finally:
        await olga_comm.disconnect()
        await otto_comm.disconnect()


async def test_role_taken_away_without_a_signal_is_caught_by_the_next_command(desk, make_user):
    olga = await sync_to_async(make_user)("olga", "operator")
    comm = await open_socket(await logged_in_client("olga"))
    try:
        operators = await Group.objects.aget(name="operator")
        await olga.groups.through.objects.filter(user_id=olga.pk, group=operators).adelete()  # no m2m_changed
        await toggle(comm, desk["ghost"].pk)
        assert await closed_with(comm) == 4403
        assert await nothing_toggled(desk["ghost"].pk)
    finally:
        await comm.disconnect()


async def test_group_side_role_change_closes_the_socket(desk, make_user):
    olga = await sync_to_async(make_user)("olga", "operator")
    comm = await open_socket(await logged_in_client("olga"))
    try:
        operators = await Group.objects.aget(name="operator")
        await sync_to_async(operators.user_set.remove)(olga)
        assert await closed_with(comm) == 4403
    finally:
        await comm.disconnect()


async def test_password_change_elsewhere_closes_other_sessions(desk, make_user):
    olga = await sync_to_async(make_user)("olga", "operator")
    comm = await open_socket(await logged_in_client("olga"))
    try:
        olga.set_password("a-brand-new-password-1")
        await olga.asave()
        assert await closed_with(comm) == 4401
    finally:
        await comm.disconnect()


async def test_a_listening_socket_rechecks_on_server_events(desk, make_user, monkeypatch):
    """A socket that never sends is still closed if its auth.check was lost (Redis down at logout)."""
    monkeypatch.setattr(consumers, "AUTH_RECHECK_S", 0.0, raising=False)  # every event, not every 30 s
    await sync_to_async(make_user)("vera", "viewer")
    client = await logged_in_client("vera")
    comm = await open_socket(client)
    try:
        await sync_to_async(send_now)("ghosts", {"type": "ghost.status", "ghost_id": 1, "status": "active"})
        assert (await comm.receive_json_from(timeout=3))["type"] == "ghost.status"
        await Session.objects.filter(session_key=client.cookies["sessionid"].value).adelete()
        await sync_to_async(send_now)("ghosts", {"type": "ghost.status", "ghost_id": 1, "status": "degraded"})
        assert await closed_with(comm) == 4401
    finally:
        await comm.disconnect()


async def test_the_operator_can_still_toggle(desk, make_user):
    """The re-check lets a valid operator through and acts as the fresh user (audited as olga)."""
    await sync_to_async(make_user)("olga", "operator")
    comm = await open_socket(await logged_in_client("olga"))
    try:
        await toggle(comm, desk["ghost"].pk)
        replies = [await comm.receive_json_from(timeout=3), await comm.receive_json_from(timeout=3)]
        assert any(r["type"] == "ack" for r in replies)
        event = await AuditEvent.objects.select_related("actor").aget(action="ghost.disabled")
        assert event.actor.username == "olga"
    finally:
        await comm.disconnect()
