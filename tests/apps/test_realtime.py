"""A push while the channel layer (Redis) is down: the caller goes on, and the log says so in one line a minute
rather than a traceback per push (a command run without Redis printed 23 tracebacks)."""

import logging
import socket

from django.test import override_settings

from apps.common import realtime


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_pushes_to_a_dead_channel_layer_log_one_line_without_traceback(caplog) -> None:
    dead = {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer",
                        "CONFIG": {"hosts": [f"redis://127.0.0.1:{_closed_port()}/0"]}}}
    realtime._last_unreachable_warning[0] = float("-inf")
    with override_settings(CHANNEL_LAYERS=dead), caplog.at_level(logging.WARNING, logger="apps.common.realtime"):
        for _ in range(5):
            realtime.send_now("lab", {"type": "lab.progress"})  # never raises
    records = [r for r in caplog.records if r.name == "apps.common.realtime"]
    assert len(records) == 1, [r.getMessage() for r in records]
    assert records[0].levelno == logging.WARNING and records[0].exc_info is None
    assert "channel layer is unreachable" in records[0].getMessage()
