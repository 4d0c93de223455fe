"""The desk's one websocket: server events out, a few typed commands in.

Asynchronous (issue 13): server events never go through a thread; only database work (the login re-check, a
command) goes through `database_sync_to_async`. The sockets of a server process share one channel per group
(apps/dashboard/hub.py): the hub receives each group message once and hands its frames, already JSON text, to every
member socket's outbox.

Each socket's `Outbox` is drained by the socket's own writer task: a slow or stalled browser only fills its own
outbox (the server's `send` waits while that socket's send buffer is full under uvicorn; Daphne's Twisted buffers
instead), in which a newer tick or P&L replaces the older one still waiting, and a socket whose outbox overflows with
events that cannot be replaced is closed (CLOSE_TOO_SLOW): the browser reconnects and catches up from state.json, as
after any drop. No socket ever waits for another.

Every command re-checks the role on the server, so a viewer's hand-made message is refused.
Every client message first re-checks the login itself (session still there, user active, role unchanged), and
the user's sockets are told to re-check at once on logout, deactivation and role change (apps/accounts/events.py).
"""

import asyncio
import json
import logging
import random
import time
import weakref
from collections import deque

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.contrib.auth import get_user_model
from django.core.exceptions import ObjectDoesNotExist

from apps.accounts.events import CLOSE_LOGGED_OUT, CLOSE_ROLE_CHANGED, session_digest, user_group
from apps.accounts.roles import OPERATOR, role_of
from apps.accounts.selectors import session_user
from apps.common.parsing import ParseError, parse_json
from apps.dashboard.hub import Hub, hub
from apps.ghosts.events import GHOSTS_GROUP
from apps.ghosts.services import GhostError, ghost_set_enabled
from apps.lab.events import LAB_GROUP
from apps.market.selectors import instruments
from apps.signals.events import SIGNALS_GROUP
from apps.trading.events import PORTFOLIO_GROUP

log = logging.getLogger(__name__)
FEEDS_GROUP = "feeds"
MAX_MESSAGE_BYTES = 4096
# A socket that only listens re-checks its login at least this often (s), in case an auth.check event was lost
# (Redis down at that moment); a socket that sends re-checks before every message. Each socket's period is drawn
# between half and all of it, so 500 sockets opened together do not all re-check on the same event.
AUTH_RECHECK_S = 30.0
# Frames waiting for one socket; past this, with nothing left to replace, the socket is too slow and is closed.
OUTBOX_LIMIT = 256
CLOSE_TOO_SLOW = 4008  # the browser reconnects (desk.js: any code but 4401/4403) and catches up from state.json
# Sockets joining or leaving their groups at once, per server process: channels-redis' connection pool holds 100
# connections and raises (MaxConnectionsError, the socket refused with 500) rather than wait when they are all
# busy, which 50 browsers reconnecting together did. Each socket joins its groups one after the other in one slot.
GROUP_SLOTS = 32
_group_slots: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore]" = weakref.WeakKeyDictionary()


def group_slot() -> asyncio.Semaphore:
    loop = asyncio.get_running_loop()
    if loop not in _group_slots:
        _group_slots[loop] = asyncio.Semaphore(GROUP_SLOTS)
    return _group_slots[loop]


class Outbox:
    """A bounded queue of text frames for one socket, in order; a frame with a key replaces the waiting frame with
    the same key in its place (newest wins: ticks, P&L). `put` returns False when full (the socket is too slow)."""

    def __init__(self, limit: int = OUTBOX_LIMIT) -> None:
        self.limit = limit
        self.frames: deque[list] = deque()  # [text, key] cells, so a keyed frame is replaced in place
        self.keyed: dict[str, list] = {}
        self.ready = asyncio.Event()
        self.replaced = 0

    def __len__(self) -> int:
        return len(self.frames)

    def put(self, text: str, key: str | None = None) -> bool:
        if key is not None and (cell := self.keyed.get(key)) is not None:
            cell[0] = text
            self.replaced += 1
            return True
        if len(self.frames) >= self.limit:
            return False
        cell = [text, key]
        self.frames.append(cell)
        if key is not None:
            self.keyed[key] = cell
        self.ready.set()
        return True

    async def get(self) -> str:
        while not self.frames:
            self.ready.clear()
            await self.ready.wait()
        text, key = self.frames.popleft()
        if key is not None:
            del self.keyed[key]
        return text


def _login_facts(user) -> tuple[str, list[str]]:
    """(role, instrument groups) for a socket being opened: the database work of connect()."""
    return role_of(user), [i.group_name for i in instruments()]


class DeskConsumer(AsyncJsonWebsocketConsumer):
    # No channel of its own: group messages come through this process's hub (apps/dashboard/hub.py). An alias with
    # no layer configured makes Channels skip the socket's own channel and its receive loop.
    channel_layer_alias = "desk-sockets-receive-through-the-hub"
    # Until connect() accepts an authenticated user, the socket is closed for every purpose.
    auth_closed = True
    session_key: str | None = None
    role: str | None = None
    auth_due_at = 0.0
    outbox: Outbox | None = None
    writer: asyncio.Task | None = None
    joined: Hub | None = None
    held: list | None = None  # frames waiting for a login re-check in flight

    async def connect(self) -> None:
        user = self.scope.get("user")
        if not getattr(user, "is_authenticated", False):
            await self.close(code=CLOSE_LOGGED_OUT)
            return
        self.role, instrument_groups = await database_sync_to_async(_login_facts)(user)
        self.auth_closed = False
        self.tasks: set[asyncio.Task] = set()
        session = self.scope.get("session")
        self.session_key = session.session_key if session is not None else None
        self.auth_recheck_scheduled()
        # LAB_GROUP: lab run progress (bars done, bars/s, ETA) for every viewer of a run page
        self.groups_joined = [GHOSTS_GROUP, SIGNALS_GROUP, PORTFOLIO_GROUP, FEEDS_GROUP, LAB_GROUP]
        self.groups_joined += instrument_groups
        self.groups_joined.append(user_group(user.pk))  # auth.check events for this user's sockets only
        self.outbox = Outbox()
        self.joined = hub()
        try:
            async with group_slot():
                await self.joined.join(self, self.groups_joined)
        except BaseException:  # Redis unreachable: the socket is refused (the browser retries); no half-membership
            self.auth_closed = True
            await self.joined.leave(self)
            raise
        await self.accept()
        self.writer = asyncio.create_task(self.write_loop())

    async def disconnect(self, code: int) -> None:
        self.auth_closed = True
        for task in [self.writer, *getattr(self, "tasks", ())]:
            if task is not None and task is not asyncio.current_task():
                task.cancel()
        if self.joined is not None:
            await self.joined.leave(self)

    def spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.task_done)

    def task_done(self, task: asyncio.Task) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:  # e.g. a close on a connection already gone
            log.debug("desk socket task failed", exc_info=task.exception())

    # --- the socket's writer ---------------------------------------------------------------------
    async def write_loop(self) -> None:
        """Send what the outbox holds, one frame at a time; only this socket waits when its browser is slow."""
        try:
            while True:
                await self.send(text_data=await self.outbox.get())
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - the connection went away under a send; disconnect() follows
            log.debug("desk socket writer stopped", exc_info=True)

    def queue(self, text: str, key: str | None = None) -> None:
        if self.auth_closed or self.outbox is None:
            return
        if not self.outbox.put(text, key):
            log.warning("desk socket too slow (%d frames waiting): closed with %d, the browser reconnects",
                        len(self.outbox), CLOSE_TOO_SLOW)
            self.auth_closed = True
            self.spawn(self.shut(CLOSE_TOO_SLOW))

    async def shut(self, code: int) -> None:
        """Close now: frames still waiting are dropped (a logged-out user gets no more; a slow one catches up)."""
        self.auth_closed = True
        if self.writer is not None:
            self.writer.cancel()
        if not getattr(self, "close_sent", False):
            self.close_sent = True
            await self.close(code=code)

    async def send_json(self, content, close: bool = False) -> None:
        # replies (pong, ack, error) take their turn in the outbox behind the events already queued
        self.queue(json.dumps(content))

    # --- from the hub (apps/dashboard/hub.py): called on the event loop, never blocking ----------------------
    def hub_frames(self, frames: list[tuple[str, str | None]]) -> None:
        if self.auth_closed:
            return
        if self.held is not None:  # a re-check is in flight: these wait for its answer, in order
            self.held.extend(frames)
            return
        if time.monotonic() >= self.auth_due_at:
            self.held = list(frames)
            self.spawn(self.release_after_recheck())
            return
        for text, key in frames:
            self.queue(text, key)

    async def release_after_recheck(self) -> None:
        try:
            allowed = await self.auth_recheck()
        finally:
            held, self.held = self.held or [], None
        if allowed:
            for text, key in held:
                self.queue(text, key)

    def hub_auth_check(self, message: dict) -> None:
        self.spawn(self.auth_check(message))

    def hub_lost(self, code: int) -> None:
        self.spawn(self.shut(code))

    # --- login re-checks -----------------------------------------------------------------------
    def auth_recheck_scheduled(self) -> None:
        self.auth_due_at = time.monotonic() + AUTH_RECHECK_S * random.uniform(0.5, 1.0)  # noqa: S311 - spread only

    async def auth_recheck(self) -> bool:
        """Is this socket's user still logged in through the same session, active, and in the same role?

        Read afresh from the session store and the database. If not, the socket closes (4401 logged out or
        deactivated, 4403 role changed: the browser reconnects in its new role) and this returns False.
        """
        if self.auth_closed:
            return False
        self.auth_recheck_scheduled()
        user, role = await database_sync_to_async(self.fresh_user)()
        if user is None or user.pk != self.scope["user"].pk:
            return await self.auth_close(CLOSE_LOGGED_OUT)
        if role != self.role:
            return await self.auth_close(CLOSE_ROLE_CHANGED)
        self.scope["user"] = user  # commands act as the fresh user
        return True

    def fresh_user(self) -> tuple[object | None, str | None]:
        if "session" in self.scope:
            user = session_user(self.session_key)
        else:
            # Only tests build a scope without a session (setting scope["user"] by hand): hftweb.asgi always wraps
            # this consumer in AuthMiddlewareStack. Without one, the user is at least read afresh.
            user = get_user_model()._default_manager.filter(pk=self.scope["user"].pk, is_active=True).first()
        return user, (role_of(user) if user is not None else None)

    async def auth_close(self, code: int) -> bool:
        await self.shut(code)
        return False

    async def auth_check(self, message: dict) -> None:
        """`auth.check` from apps.accounts.events: the user logged out, was changed or was deactivated."""
        if self.auth_closed:
            return
        ended = message.get("ended_session")
        if ended and self.session_key and ended == session_digest(self.session_key):
            await self.auth_close(CLOSE_LOGGED_OUT)  # logout sends this before it deletes the session
            return
        await self.auth_recheck()

    async def websocket_receive(self, message: dict) -> None:
        # Before anything the client sent is even parsed: a logged-out or deactivated user's socket acts no more.
        if await self.auth_recheck():
            await super().websocket_receive(message)

    # --- browser -> server -------------------------------------------------------------------
    async def receive(self, text_data=None, bytes_data=None, **kwargs) -> None:
        # The limit is in bytes (UTF-8), not characters: 2,000 "é" are 4,000 bytes on the wire.
        if text_data is None or len(text_data) > MAX_MESSAGE_BYTES or len(text_data.encode()) > MAX_MESSAGE_BYTES:
            await self.error("bad_message", "send one JSON object as text, at most 4 KiB")
            return
        try:
            # parse_json, not json.loads: 1,000 nested "[" raised RecursionError (not a ValueError) and closed the
            # socket with 1011; a 4,000-digit integer hit the int digit limit. Both are a bad_json error now.
            content = parse_json(text_data, max_chars=MAX_MESSAGE_BYTES)
        except ParseError as e:
            await self.error("bad_json", f"message: {e}")
            return
        if not isinstance(content, dict) or not isinstance(content.get("action"), str):
            await self.error("bad_message", 'expected an object with a string "action"')
            return
        await self.receive_json(content)

    async def receive_json(self, content: dict, **kwargs) -> None:
        action = content["action"]
        if action == "ping":
            await self.send_json({"type": "pong"})
        elif action == "ghost.toggle":
            await self.ghost_toggle(content)
        else:
            await self.error("unknown_action", f"unknown action {action[:40]!r}")

    async def ghost_toggle(self, content: dict) -> None:
        user = self.scope["user"]
        # self.role was read afresh by the re-check before this message (websocket_receive), and a change closed
        # the socket: roles can change while a socket is open
        if self.role != OPERATOR:
            await self.error("forbidden", "only operators can enable or disable ghosts")
            return
        ghost_id, enabled, reason = content.get("ghost_id"), content.get("enabled"), content.get("reason")
        if type(ghost_id) is not int or type(enabled) is not bool or not isinstance(reason, str):
            await self.error("bad_message", "ghost.toggle needs ghost_id (int), enabled (bool) and reason (str)")
            return
        if "\x00" in reason:  # SQLite would store it; PostgreSQL refuses the row (the form's CharField refuses it too)
            await self.error("bad_message", "reason: null characters are not allowed")
            return
        try:
            ghost = await database_sync_to_async(ghost_set_enabled)(
                ghost_id=ghost_id, enabled=enabled, actor=user, reason=reason
            )
        except ObjectDoesNotExist:
            await self.error("not_found", f"no ghost {ghost_id}")
            return
        except GhostError as e:
            await self.error("invalid", str(e))
            return
        await self.send_json(
            {
                "type": "ack",
                "action": "ghost.toggle",
                "ghost_id": ghost.pk,
                "enabled": ghost.enabled,
                "status": ghost.status,
            }
        )

    async def error(self, code: str, message: str) -> None:
        await self.send_json({"type": "error", "code": code, "message": message})
