"""Fan-out to many desk sockets (issue 13): events encoded once and batched per transaction, a bounded outbox per
socket with newest-wins for ticks and P&L, and a stalled browser that never holds up the others.

Real Redis channel layer; the slow-client tests run the web server `make run` starts with HFT_WEB=uvicorn:1
(hftweb.devrun.web_specs) on the test database, with real TCP clients: one reads everything, the other stops
reading (a small receive buffer and a client that pauses reading once one message waits), as a frozen browser tab
or a dead network would.
"""

import asyncio
import base64
import json
import os
import socket
import struct
import subprocess
import tempfile
import uuid

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.db import transaction
from django.test import Client

from apps.common.realtime import coalesce_key, desk_message, send_many, send_now, send_on_commit
from apps.dashboard.consumers import CLOSE_TOO_SLOW, OUTBOX_LIMIT, DeskConsumer, Outbox
from hftweb.devrun import web_specs
from tests.conftest import ROOT, _subprocess_env, free_port, stop_proc, wait_for_port

websockets = pytest.importorskip("websockets", reason="the websockets client is a test dependency")


# --- the outbox -------------------------------------------------------------------------------------------------
async def test_outbox_keeps_order_and_a_newer_tick_replaces_the_waiting_one_in_place():
    box = Outbox(limit=10)
    assert box.put("signal-1")
    assert box.put("tick-a", "tick:1")
    assert box.put("pnl-a", "pnl")
    assert box.put("signal-2")
    assert box.put("tick-b", "tick:1")  # replaces tick-a where it waits
    assert box.put("tick-c", "tick:1")
    assert box.put("other-instrument", "tick:2")
    assert box.put("pnl-b", "pnl")
    assert [await box.get() for _ in range(len(box))] == ["signal-1", "tick-c", "pnl-b", "signal-2",
                                                          "other-instrument"]
    assert box.put("tick-d", "tick:1")  # sent ones are gone: a new tick queues again
    assert await box.get() == "tick-d"


async def test_outbox_is_bounded_but_a_full_outbox_still_takes_the_newest_tick():
    box = Outbox(limit=3)
    assert box.put("a") and box.put("tick", "tick:1") and box.put("b")
    assert not box.put("c")  # full: the socket is too slow
    assert box.put("newer tick", "tick:1")  # replacing takes no room
    assert [await box.get() for _ in range(3)] == ["a", "newer tick", "b"]


async def test_outbox_get_waits_for_a_frame():
    box = Outbox()
    waiter = asyncio.create_task(box.get())
    await asyncio.sleep(0.05)
    assert not waiter.done()
    box.put("x")
    assert await asyncio.wait_for(waiter, 1) == "x"


def test_coalesce_keys():
    assert coalesce_key({"type": "market.tick", "instrument_id": 3}) == "tick:3"
    assert coalesce_key({"type": "pnl.updated"}) == "pnl"
    for kind in ("signal.created", "trade.closed", "bar.closed", "ghost.status", "auth.check"):
        assert coalesce_key({"type": kind}) is None


# --- encoded once, batched per transaction ----------------------------------------------------------------------
def _listen(group: str) -> tuple:
    layer = get_channel_layer()
    channel = f"listen-{uuid.uuid4().hex}"  # not process-local: each receive below runs on an event loop of its own
    async_to_sync(layer.group_add)(group, channel)
    return layer, channel


def _received(layer, channel, timeout: float = 3) -> list[dict]:
    async def drain():
        out = []
        try:
            while True:
                out.append(await asyncio.wait_for(layer.receive(channel), timeout if not out else 0.5))
        except TimeoutError:
            return out

    return async_to_sync(drain)()


@pytest.mark.django_db(transaction=True)
def test_send_now_carries_the_json_text_once_and_the_coalescing_key():
    layer, channel = _listen("ghosts")
    event = {"type": "market.tick", "instrument_id": 7, "price": 101.5}
    send_now("ghosts", event)
    [message] = _received(layer, channel)
    assert message["type"] == "desk.event" and message["key"] == "tick:7"
    assert json.loads(message["text"]) == event


@pytest.mark.django_db(transaction=True)
def test_a_transactions_events_go_out_as_one_batch_per_group_in_order_after_commit(desk):
    ghosts, signals = _listen("ghosts"), _listen("signals")
    with transaction.atomic():
        send_on_commit("ghosts", {"type": "ghost.status", "n": 1})
        send_on_commit("signals", {"type": "signal.created", "n": 2})
        send_on_commit("ghosts", {"type": "ghost.status", "n": 3})
        try:
            with transaction.atomic():  # undone work: its event is never sent
                send_on_commit("ghosts", {"type": "ghost.status", "n": "rolled back"})
                raise RuntimeError
        except RuntimeError:
            pass
        send_on_commit("ghosts", {"type": "ghost.status", "n": 4})
        assert _received(*ghosts, timeout=0.5) == []  # nothing before the commit
    got = _received(*ghosts)
    texts = [t for m in got for t in (m["texts"] if m["type"] == "desk.batch" else [m["text"]])]
    assert [json.loads(t)["n"] for t in texts] == [1, 3, 4]
    assert len(got) == 1 and got[0]["type"] == "desk.batch"  # one group send for the group, not three
    assert [json.loads(m["text"])["n"] for m in _received(*signals)] == [2]


@pytest.mark.django_db(transaction=True)
def test_a_forked_child_pushes_on_a_loop_of_its_own():
    """Celery's prefork children inherit the push loop object but not its thread: the first push in the child
    starts one of its own (a push through the parent's dead loop would wait for ever)."""
    from apps.common import realtime

    layer, channel = _listen("ghosts")
    send_now("ghosts", {"type": "ghost.status", "from": "parent"})
    parent_loop = realtime._layer_loop.loop()
    pid = os.fork()
    if pid == 0:  # the child: push, then say by the exit status whether it ran on a new, running loop
        try:
            send_now("ghosts", {"type": "ghost.status", "from": "child"})
            child_loop = realtime._layer_loop.loop()
            os._exit(0 if child_loop is not parent_loop and child_loop.is_running() else 1)
        except BaseException:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert [json.loads(m["text"])["from"] for m in _received(layer, channel)] == ["parent", "child"]


@pytest.mark.django_db(transaction=True)
def test_outside_a_transaction_send_on_commit_sends_at_once():
    layer, channel = _listen("ghosts")
    send_on_commit("ghosts", {"type": "ghost.status", "n": 1})
    [message] = _received(layer, channel)
    assert json.loads(message["text"]) == {"type": "ghost.status", "n": 1}


@pytest.mark.django_db(transaction=True)
async def test_the_consumer_sends_batches_and_pre_encoded_text_as_frames_in_order(desk, viewer):
    comm = WebsocketCommunicator(DeskConsumer.as_asgi(), "/ws/desk/")
    comm.scope["user"] = viewer
    assert (await comm.connect(timeout=10))[0]
    try:
        events = [("ghosts", {"type": "ghost.status", "i": i}) for i in range(3)]
        await sync_to_async(send_many)(events + [("signals", {"type": "signal.created", "i": 3})])
        got = [await comm.receive_json_from(timeout=3) for _ in range(4)]
        assert sorted(e["i"] for e in got) == [0, 1, 2, 3]
        assert [e["i"] for e in got if e["type"] == "ghost.status"] == [0, 1, 2]
        # an event a sender put on the layer itself, unencoded (the older form), still arrives
        await get_channel_layer().group_send("feeds", {"type": "desk.event", "event": {"type": "feed.status"}})
        assert await comm.receive_json_from(timeout=3) == {"type": "feed.status"}
    finally:
        await comm.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_sockets_are_closed_to_reconnect_when_the_channel_layer_dies(desk, viewer, tmp_path):
    """Redis gone: the sockets' events are being lost, so they close (the browser shows the desk offline, then
    reconnects and catches up) rather than sit open and silent."""
    from django.test import override_settings

    from apps.dashboard.hub import CLOSE_LAYER_DOWN
    from tests.conftest import redis_binary

    port = free_port()
    redis = subprocess.Popen([redis_binary(), "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--dir",
                              str(tmp_path)], stdout=subprocess.DEVNULL)
    try:
        wait_for_port(port, redis)
        layers = {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer",
                              "CONFIG": {"hosts": [f"redis://127.0.0.1:{port}/0"]}}}
        with override_settings(CHANNEL_LAYERS=layers):
            comm = WebsocketCommunicator(DeskConsumer.as_asgi(), "/ws/desk/")
            comm.scope["user"] = viewer
            assert (await comm.connect(timeout=10))[0]
            await comm.send_json_to({"action": "ping"})
            assert await comm.receive_json_from(timeout=5) == {"type": "pong"}
            redis.kill()
            closed = await comm.receive_output(timeout=10)
            assert closed == {"type": "websocket.close", "code": CLOSE_LAYER_DOWN}
            await comm.disconnect()
    finally:
        redis.kill()
        redis.wait()


def test_desk_message_shapes():
    one = desk_message([{"type": "pnl.updated", "equity": 1.0}])
    assert one == {"type": "desk.event", "text": '{"type": "pnl.updated", "equity": 1.0}', "key": "pnl"}
    two = desk_message([{"type": "a"}, {"type": "market.tick", "instrument_id": 1}])
    assert two["type"] == "desk.batch" and two["keys"] == [None, "tick:1"] and len(two["texts"]) == 2


# --- a stalled browser, for real ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def uvicorn_url(services_use_test_redis, django_db_setup):
    """The web server as `make run` starts it with HFT_WEB=uvicorn:1, on the test database and Redis."""
    port = free_port()
    [(_name, cmd, fds)] = web_specs("uvicorn:1", "127.0.0.1", port)
    log = tempfile.NamedTemporaryFile(prefix="uvicorn-", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_subprocess_env(), pass_fds=fds, stdout=log, stderr=subprocess.STDOUT)
    wait_for_port(port, proc)
    url = URL(f"http://127.0.0.1:{port}")
    url.log_path = log.name
    yield url
    stop_proc(proc)


class URL(str):
    """The server's address, and where its output goes."""

    log_path: str


@pytest.mark.django_db(transaction=True)
async def test_the_web_server_logs_no_line_per_socket(uvicorn_url, viewer):
    """Sockets opened and closed leave nothing in the log (uvicorn's INFO lines per websocket were half of a
    browsing operator's log under make run)."""
    from pathlib import Path

    for _ in range(3):
        ws = await _open(uvicorn_url, await sync_to_async(_cookie)(viewer))
        await ws.close()
    await asyncio.sleep(0.3)
    text = Path(uvicorn_url.log_path).read_text(errors="replace")
    assert "WebSocket /ws/desk/" not in text and "connection open" not in text, text[-2000:]


def _cookie(user) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


async def _open(url: str, cookie: str):
    headers = {"Cookie": f"sessionid={cookie}", "Origin": url}
    ws = await websockets.connect(url.replace("http://", "ws://") + "/ws/desk/", additional_headers=headers,
                                  ping_interval=None, max_queue=None, max_size=None, open_timeout=20)
    await ws.send('{"action": "ping"}')  # answered once the socket has joined its groups
    assert json.loads(await asyncio.wait_for(ws.recv(), 10)) == {"type": "pong"}
    return ws


class StalledBrowser:
    """A websocket client on a plain TCP socket with a small receive buffer that, after the handshake and one
    ping, reads nothing until told to: a frozen tab or a dead network, as the server sees it."""

    def __init__(self, url: str, cookie: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.settimeout(20)
        self.sock.connect((host, int(port)))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /ws/desk/ HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                           f"Origin: {url}\r\nCookie: sessionid={cookie}\r\n\r\n").encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            self.buf += self.sock.recv(4096)
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101"), head
        self.send_text('{"action": "ping"}')
        assert json.loads(self.recv()[1]) == {"type": "pong"}

    def send_text(self, text: str) -> None:
        data, mask = text.encode(), os.urandom(4)
        assert len(data) < 126
        self.sock.sendall(bytes([0x81, 0x80 | len(data)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def _take(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("closed without a close frame")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv(self) -> tuple[int, bytes]:
        """(opcode, payload) of the next frame (the server's frames are unmasked and, here, unfragmented)."""
        b0, b1 = self._take(2)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack(">H", self._take(2))[0]
        elif n == 127:
            n = struct.unpack(">Q", self._take(8))[0]
        return b0 & 0x0F, self._take(n)

    def events_until(self, predicate) -> tuple[list[dict], int | None]:
        """Read on: the events up to the first that satisfies predicate, or up to a close frame (and its code)."""
        out = []
        while True:
            opcode, payload = self.recv()
            if opcode == 0x8:
                return out, struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else None
            if opcode == 0x1:
                out.append(json.loads(payload))
                if predicate(out[-1]):
                    return out, None

    def close(self) -> None:
        self.sock.close()


PAD = "x" * 32_000  # 1,000 of these (32 MB) are far more than the kernel's and the server's buffers hold (~4 MB)


class Reader:
    """Reads a socket all the time, as a live browser does."""

    def __init__(self, ws) -> None:
        self.ws, self.events = ws, []
        self.task = asyncio.create_task(self.run())

    async def run(self) -> None:
        async for frame in self.ws:
            self.events.append(json.loads(frame))

    async def has(self, predicate, timeout: float = 60) -> None:
        async with asyncio.timeout(timeout):
            while not any(predicate(e) for e in self.events[-50:]):
                await asyncio.sleep(0.01)


async def _push_paced(events: list[dict], reader: Reader, *, per_send: int, chunk: int = 50) -> None:
    """Push the events `per_send` to a group send, waiting after each `chunk` until the reading browser has the
    chunk's last one: the channel layer holds at most 100 messages for a process (its capacity), and a test that
    outran the server's receive would lose messages there, not in the sockets' outboxes."""
    for i in range(0, len(events), chunk):
        part = events[i:i + chunk]
        for j in range(0, len(part), per_send):
            await sync_to_async(send_many)([("ghosts", e) for e in part[j:j + per_send]])
        last = part[-1]
        await reader.has(lambda e, last=last: e.get("type") == last["type"] and e.get("seq") == last.get("seq"))


@pytest.mark.django_db(transaction=True)
async def test_a_stalled_browser_gets_only_the_newest_tick_and_holds_up_no_one(uvicorn_url, desk, viewer, operator):
    fast = await _open(uvicorn_url, await sync_to_async(_cookie)(operator))
    slow = await sync_to_async(StalledBrowser)(uvicorn_url, await sync_to_async(_cookie)(viewer))
    reader = Reader(fast)
    try:
        ticks = [{"type": "market.tick", "instrument_id": 1, "seq": i, "pad": PAD} for i in range(1000)]
        # one group send each (in a batch, the newest tick of the batch replaces the others at once, for everyone);
        # the reading browser gets the ticks in order up to the newest, while the other one reads nothing
        await _push_paced(ticks + [{"type": "ghost.status", "marker": "end"}], reader, per_send=1)
        fast_seqs = [e["seq"] for e in reader.events if e["type"] == "market.tick"]
        assert fast_seqs == sorted(fast_seqs) and fast_seqs[-1] == 999

        # The stalled one now reads: what the buffers held, then the newest tick in place of all it missed.
        late, code = await sync_to_async(slow.events_until)(lambda e: e.get("marker") == "end")
        assert code is None
        seqs = [e["seq"] for e in late if e["type"] == "market.tick"]
        assert seqs == sorted(seqs) and seqs[-1] == 999
        assert len(seqs) < 500, f"{len(seqs)} of 1,000 ticks reached the stalled socket: nothing was replaced"
        assert len(seqs) < len(fast_seqs)
        # and it is still open and answering
        await sync_to_async(slow.send_text)('{"action": "ping"}')
        assert (await sync_to_async(slow.events_until)(lambda e: True))[0] == [{"type": "pong"}]
    finally:
        reader.task.cancel()
        await fast.close()
        slow.close()


@pytest.mark.django_db(transaction=True)
async def test_a_stalled_browser_that_falls_too_far_behind_is_closed_to_catch_up(uvicorn_url, desk, viewer,
                                                                                  operator):
    fast = await _open(uvicorn_url, await sync_to_async(_cookie)(operator))
    slow = await sync_to_async(StalledBrowser)(uvicorn_url, await sync_to_async(_cookie)(viewer))
    reader = Reader(fast)
    try:
        signals = [{"type": "signal.created", "seq": i, "pad": PAD} for i in range(1000)]  # none can be replaced
        await _push_paced(signals + [{"type": "ghost.status", "marker": "end"}], reader, per_send=10)
        assert [e["seq"] for e in reader.events if e["type"] == "signal.created"] == list(range(1000))

        late, code = await sync_to_async(slow.events_until)(lambda e: False)
        assert code == CLOSE_TOO_SLOW
        seqs = [e["seq"] for e in late if e["type"] == "signal.created"]
        assert seqs == list(range(len(seqs))), "what it got before the close is in order, with no gap"
        # what the buffers held when it was closed (the frames still in its outbox are dropped: it catches up)
        assert 0 < len(seqs) < 1000 - OUTBOX_LIMIT and not any(e.get("marker") for e in late)
    finally:
        reader.task.cancel()
        await fast.close()
        slow.close()


def test_the_web_specs_of_make_run():
    """HFT_WEB picks the web processes; a bad value is refused with the choices."""
    [(name, cmd, fds)] = web_specs("daphne", "127.0.0.1", 8000)
    assert name == "web" and cmd[0].endswith("daphne") and fds == ()
    [(name, cmd, fds)] = web_specs("uvicorn:3", "127.0.0.1", 8000)
    assert cmd[0].endswith("uvicorn") and cmd[cmd.index("--workers") + 1] == "3"
    assert "--no-proxy-headers" in cmd  # the client address is REMOTE_ADDR, as under Daphne (login throttle)
    assert cmd[cmd.index("--ws") + 1] == "websockets-sansio"  # its send waits on a full socket (the tests above)
    assert cmd[cmd.index("--log-level") + 1] == "warning"
    specs = web_specs("daphne:2", "127.0.0.1", free_port())
    try:
        assert [s[0] for s in specs] == ["web1", "web2"] and specs[0][2] == specs[1][2]
        assert "--fd" in specs[0][1]
    finally:
        os.close(specs[0][2][0])
    for bad in ("gunicorn", "daphne:0", "uvicorn:x", "daphne:-1"):
        with pytest.raises(SystemExit, match="HFT_WEB"):
            web_specs(bad, "127.0.0.1", 8000)
