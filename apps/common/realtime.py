"""One way to push an event to browsers: after the surrounding transaction commits (DESIGN §3)."""

import logging
from collections.abc import Mapping
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

log = logging.getLogger(__name__)


def send_now(group: str, event: Mapping[str, Any]) -> None:
    """Send one event to a group; a dead Redis is logged, never allowed to break the caller."""
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(group, {"type": "desk.event", "event": dict(event)})
    except Exception:  # the desk must keep trading when the browser push fails
        log.exception("push to %s failed", group)


def send_on_commit(group: str, event: Mapping[str, Any]) -> None:
    transaction.on_commit(lambda: send_now(group, event))
