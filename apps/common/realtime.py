"""One way to push an event to browsers: after the surrounding transaction commits (DESIGN §3)."""

import logging
import time
from collections.abc import Mapping
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger(__name__)
UNREACHABLE_WARN_EVERY_S = 60.0  # one line a minute while the channel layer is down, not a traceback per push
_last_unreachable_warning = [float("-inf")]


def layer_send(group: str, message: Mapping[str, Any]) -> None:
    """channel_layer.group_send that never raises into the caller: Redis down (a known state) is one warning line a
    minute, any other failure a logged traceback."""
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(group, dict(message))
    except (OSError, RedisConnectionError, RedisTimeoutError) as exc:  # Redis down: a known state, said once a minute
        now = time.monotonic()
        if now - _last_unreachable_warning[0] >= UNREACHABLE_WARN_EVERY_S:
            _last_unreachable_warning[0] = now
            log.warning("push to %s failed: the channel layer is unreachable (%s); browsers miss live events "
                        "until it is back (said at most once a minute)", group, exc)
    except Exception:  # the desk must keep trading when the browser push fails
        log.exception("push to %s failed", group)


def send_now(group: str, event: Mapping[str, Any]) -> None:
    """Send one event to a group; a dead Redis is logged, never allowed to break the caller."""
    layer_send(group, {"type": "desk.event", "event": dict(event)})


def send_on_commit(group: str, event: Mapping[str, Any]) -> None:
    transaction.on_commit(lambda: send_now(group, event))
