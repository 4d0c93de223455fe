"""An idle desk websocket stays open (issue 12, faults).

channels-redis 4.3 waits for a socket's messages with a blocking BZPOPMIN of 5 s (`brpop_timeout`); redis-py 8
made the client's read timeout 5 s by default (it was None). The two collided: the read timed out first, the
consumer died with "Timeout reading from ..." and Daphne closed every quiet socket with 1011 about every 5-6 s
(django/channels_redis#422, redis/redis-py#4091). The channel layer's `socket_timeout` is now set above the
blocking read (hftweb/settings.py, CHANNEL_LAYERS).

Through the production ASGI app in the session's Daphne: a logged-in socket hears nothing for 60 s (the browser
sends nothing either), is still open, and still receives an event pushed through the channel layer afterwards.
"""

import asyncio
import json
import time

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.test import Client

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]
websockets = pytest.importorskip("websockets", reason="the websockets client is a test dependency")

SILENCE_S = 60


def _session_cookie(user) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


async def test_idle_socket_stays_open_through_60s_of_silence(daphne_url, operator):
    from apps.market.events import FEEDS_GROUP

    cookie = await sync_to_async(_session_cookie)(operator)
    url = daphne_url.replace("http://", "ws://") + "/ws/desk/"
    async with websockets.connect(
        url, additional_headers={"Cookie": f"sessionid={cookie}", "Origin": daphne_url}, ping_interval=None
    ) as ws:
        started = time.monotonic()
        try:
            message = await asyncio.wait_for(ws.recv(), timeout=SILENCE_S)
        except TimeoutError:
            message = None
        except websockets.ConnectionClosed as closed:
            pytest.fail(
                f"the idle socket was closed after {time.monotonic() - started:.1f} s of silence: code "
                f"{closed.rcvd.code if closed.rcvd else None} {closed.rcvd.reason if closed.rcvd else ''!r}"
            )
        assert message is None, f"nothing was sent, yet the socket received {message!r}"

        # Still alive, not only open: an event pushed through Redis reaches it.
        event = {"type": "feed.status", "instrument_id": 0, "state": "connected", "probe": "after-silence"}
        await get_channel_layer().group_send(FEEDS_GROUP, {"type": "desk.event", "event": event})
        got = json.loads(await asyncio.wait_for(ws.recv(), timeout=10))
        assert got.get("probe") == "after-silence", got
