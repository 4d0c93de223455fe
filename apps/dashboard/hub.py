"""Fan-out inside one web process: the channel layer delivers each group message once per process, and the hub
hands it to this process's desk sockets in memory (issue 13, 500 viewers).

Why: with a channel of its own per socket, channels-redis sent one message per process listing every socket's
channel, and then each of 500 sockets waited in the layer's `receive()` (a lock and two futures per socket per
message, the holder popping Redis one message at a time) and went through Channels' `dispatch()`, which closes old
database connections in a worker thread for every message: 500 viewers at 4 pushes/s fell seconds behind and the
layer dropped half the frames at its capacity. Now each group has one channel per process (`_Group`), one task
receiving from it, and the frames are handed to the members' outboxes in one loop: no thread hop, no per-socket
Redis traffic, and the JSON text is made once per process (by the sender, apps.common.realtime).

The groups are ordinary channel-layer groups, so anything that sends to a group (`group_send`) reaches the sockets
as before. A group whose receive fails (Redis gone) closes its sockets (CLOSE_LAYER_DOWN): their events are being
lost, the browser shows the desk offline and reconnects (and catches up from state.json) once Redis is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import weakref
from collections.abc import Iterable
from typing import Protocol

from channels.layers import get_channel_layer

log = logging.getLogger(__name__)
REFRESH_S = 60.0  # re-add every group's channel this often: group membership expires (channels-redis: a day), and a
# Redis restarted without its data forgets it
# 1011 (server error) would say it best, but Daphne (autobahn) lets an application close only with 1000 or 3000-4999;
# desk.js reconnects after any code but 4401/4403
CLOSE_LAYER_DOWN = 4011


class Member(Protocol):
    def hub_frames(self, frames: list[tuple[str, str | None]]) -> None: ...

    def hub_auth_check(self, message: dict) -> None: ...

    def hub_lost(self, code: int) -> None: ...


def frames_of(message: dict) -> list[tuple[str, str | None]] | None:
    """The (text, coalescing key) frames of a desk message, made once for all sockets; None: not a desk event."""
    kind = message.get("type")
    if kind == "desk.event":
        text = message.get("text")
        return [(text if isinstance(text, str) else json.dumps(message["event"]), message.get("key"))]
    if kind == "desk.batch":
        return list(zip(message["texts"], message["keys"], strict=True))
    return None


class _Group:
    def __init__(self, hub: Hub, name: str) -> None:
        self.hub, self.name = hub, name
        self.members: set[Member] = set()
        self.channel = ""
        self.task: asyncio.Task | None = None
        self.started = asyncio.get_running_loop().create_future()

    async def start(self) -> None:
        try:
            # the default prefix: channels-redis keeps all of a process's channels that share it in one Redis key,
            # which whichever receive holds its lock pops for all (another prefix would wait its turn at the lock)
            self.channel = await self.hub.layer.new_channel()
            await self.hub.layer.group_add(self.name, self.channel)
        except BaseException as exc:
            self.started.set_exception(exc)
            self.started.exception()  # retrieved here; each joiner re-raises it from `started`
            raise
        self.task = asyncio.create_task(self.run(), name=f"desk-hub {self.name}")
        self.started.set_result(None)

    async def run(self) -> None:
        layer = self.hub.layer
        while True:
            try:
                message = await layer.receive(self.channel)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - Redis gone: these sockets are losing events
                log.warning("desk sockets of group %s closed: the channel layer failed (%s)", self.name, exc)
                self.hub.lost(self)
                return
            frames = frames_of(message)
            for member in list(self.members):
                try:
                    if frames is not None:
                        member.hub_frames(frames)
                    elif message.get("type") == "auth.check":
                        member.hub_auth_check(message)
                except Exception:  # one socket's trouble never stops the others' delivery
                    log.exception("desk socket delivery failed")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            # Wait for the cancelled receive to unwind: channels-redis counts receivers and binds its receive lock
            # to their event loop, and a receive abandoned with its loop (a test's async_to_sync) would leave both
            # held, so the next loop's receive fails with "bound to a different event loop" and closes its sockets.
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
        if self.channel:
            try:
                await self.hub.layer.group_discard(self.name, self.channel)
            except Exception as exc:  # noqa: BLE001 - it expires; Redis may be the reason we stop
                log.debug("group_discard %s: %s", self.name, exc)


class Hub:
    """The desk sockets of one event loop (one server process) and the groups they joined."""

    def __init__(self) -> None:
        self.layer = get_channel_layer()
        self.groups: dict[str, _Group] = {}
        self.refresher = asyncio.create_task(self.refresh(), name="desk-hub refresh")

    async def join(self, member: Member, names: Iterable[str]) -> None:
        """Join `member` to each group; when this returns, the groups' messages reach it. Raises if the channel
        layer is unreachable (the socket is then refused; the browser retries)."""
        for name in names:
            group = self.groups.get(name)
            if group is None:
                group = self.groups[name] = _Group(self, name)
                try:
                    await group.start()
                except BaseException:
                    self.groups.pop(name, None)
                    raise
            else:
                await asyncio.shield(group.started)
                # every join re-adds: cheap, and a Redis that was flushed or restarted learns the group again
                await self.layer.group_add(name, group.channel)
            group.members.add(member)

    async def leave(self, member: Member) -> None:
        for name, group in list(self.groups.items()):
            group.members.discard(member)
            if not group.members and self.groups.get(name) is group:
                del self.groups[name]
                await group.stop()

    def lost(self, group: _Group) -> None:
        if self.groups.get(group.name) is group:
            del self.groups[group.name]
        for member in list(group.members):
            member.hub_lost(CLOSE_LAYER_DOWN)
        group.members.clear()

    async def refresh(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_S)
            started = time.monotonic()
            for name, group in list(self.groups.items()):
                try:
                    if group.started.done() and not group.started.exception():
                        await self.layer.group_add(name, group.channel)
                except Exception as exc:  # noqa: BLE001 - the group's receive notices a dead Redis too
                    log.debug("refresh of group %s failed: %s", name, exc)
            log.debug("desk hub refreshed %d groups in %.3f s", len(self.groups), time.monotonic() - started)


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub] = weakref.WeakKeyDictionary()


def hub() -> Hub:
    """This event loop's hub (one per server process; tests run an event loop per test)."""
    loop = asyncio.get_running_loop()
    current = _hubs.get(loop)
    if current is None or current.layer is not get_channel_layer():  # tests swap the layer (override_settings)
        if current is not None:
            current.refresher.cancel()
        _forget_dead_receivers(loop)
        current = _hubs[loop] = Hub()
    return current


def _forget_dead_receivers(loop: asyncio.AbstractEventLoop) -> None:
    """channels-redis allows one event loop to receive at a time and counts its receivers; a receive abandoned with
    a loop that is closed now (a test's async_to_sync that ended with a socket open) would keep that count and lock
    for ever and fail every receive of the next loop. A server process has one loop, so this never fires there."""
    layer = get_channel_layer()
    old = getattr(layer, "receive_event_loop", None)
    if old is not None and old is not loop and old.is_closed():
        log.warning("channel layer: forgetting %d receiver(s) of a closed event loop", layer.receive_count)
        layer.receive_count, layer.receive_lock, layer.receive_event_loop = 0, None, None
