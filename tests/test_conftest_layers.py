"""The tests' channel layer is the desk's, on the test Redis (issue 12 leftover): tests/conftest.py used to replace
CHANNEL_LAYERS with a bare URL, dropping the socket_timeout that keeps an idle receive alive past channels-redis's
5 s blocking read, so in-process consumers and receives in the tests still died after 5 s of silence.
"""

import asyncio

import pytest
from channels.layers import get_channel_layer
from django.conf import settings

from hftweb import settings as desk_settings

pytestmark = pytest.mark.services


def test_the_test_layer_keeps_the_desks_options_and_uses_the_test_redis(redis_url):
    (desk_host,) = desk_settings.CHANNEL_LAYERS["default"]["CONFIG"]["hosts"]
    (test_host,) = settings.CHANNEL_LAYERS["default"]["CONFIG"]["hosts"]
    assert test_host == {**desk_host, "address": redis_url}
    assert settings.CHANNEL_LAYERS["default"]["BACKEND"] == desk_settings.CHANNEL_LAYERS["default"]["BACKEND"]
    assert desk_settings.CHANNEL_LAYERS["default"]["CONFIG"]["hosts"][0]["address"] != redis_url  # not modified


async def test_an_in_process_receive_survives_8_s_of_silence():
    layer = get_channel_layer()
    channel = await layer.new_channel()
    waiting = asyncio.ensure_future(layer.receive(channel))
    await asyncio.sleep(8)  # longer than redis-py's default 5 s read timeout
    assert not waiting.done() or waiting.exception() is None, waiting.exception()
    await layer.send(channel, {"type": "probe", "n": 1})
    assert (await asyncio.wait_for(waiting, 5)) == {"type": "probe", "n": 1}
