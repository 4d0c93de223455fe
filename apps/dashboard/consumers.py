"""The desk's one websocket: server events out, a few typed commands in.

Sync consumer (Channels docs: sync unless everything called is async); the ORM calls are plain.
Every command re-checks the role on the server, so a viewer's hand-made message is refused.
"""

import logging

from channels.generic.websocket import JsonWebsocketConsumer
from django.core.exceptions import ObjectDoesNotExist

from apps.accounts.roles import is_operator
from apps.common.parsing import ParseError, parse_json
from apps.ghosts.events import GHOSTS_GROUP
from apps.ghosts.services import GhostError, ghost_set_enabled
from apps.lab.events import LAB_GROUP
from apps.market.selectors import instruments
from apps.signals.events import SIGNALS_GROUP
from apps.trading.events import PORTFOLIO_GROUP

log = logging.getLogger(__name__)
FEEDS_GROUP = "feeds"
MAX_MESSAGE_BYTES = 4096


class DeskConsumer(JsonWebsocketConsumer):
    def connect(self) -> None:
        user = self.scope.get("user")
        if not getattr(user, "is_authenticated", False):
            self.close(code=4401)
            return
        # LAB_GROUP: lab run progress (bars done, bars/s, ETA) for every viewer of a run page
        self.groups_joined = [GHOSTS_GROUP, SIGNALS_GROUP, PORTFOLIO_GROUP, FEEDS_GROUP, LAB_GROUP]
        self.groups_joined += [i.group_name for i in instruments()]
        for group in self.groups_joined:
            self.channel_layer_group_add(group)
        self.accept()

    def channel_layer_group_add(self, group: str) -> None:
        from asgiref.sync import async_to_sync

        async_to_sync(self.channel_layer.group_add)(group, self.channel_name)

    def disconnect(self, code: int) -> None:
        from asgiref.sync import async_to_sync

        for group in getattr(self, "groups_joined", []):
            async_to_sync(self.channel_layer.group_discard)(group, self.channel_name)

    # --- server -> browser -------------------------------------------------------------------
    def desk_event(self, message: dict) -> None:
        self.send_json(message["event"])

    # --- browser -> server -------------------------------------------------------------------
    def receive(self, text_data=None, bytes_data=None, **kwargs) -> None:
        # The limit is in bytes (UTF-8), not characters: 2,000 "é" are 4,000 bytes on the wire.
        if text_data is None or len(text_data) > MAX_MESSAGE_BYTES or len(text_data.encode()) > MAX_MESSAGE_BYTES:
            self.error("bad_message", "send one JSON object as text, at most 4 KiB")
            return
        try:
            # parse_json, not json.loads: 1,000 nested "[" raised RecursionError (not a ValueError) and closed the
            # socket with 1011; a 4,000-digit integer hit the int digit limit. Both are a bad_json error now.
            content = parse_json(text_data, max_chars=MAX_MESSAGE_BYTES)
        except ParseError as e:
            self.error("bad_json", f"message: {e}")
            return
        if not isinstance(content, dict) or not isinstance(content.get("action"), str):
            self.error("bad_message", 'expected an object with a string "action"')
            return
        self.receive_json(content)

    def receive_json(self, content: dict, **kwargs) -> None:
        action = content["action"]
        if action == "ping":
            self.send_json({"type": "pong"})
        elif action == "ghost.toggle":
            self.ghost_toggle(content)
        else:
            self.error("unknown_action", f"unknown action {action[:40]!r}")

    def ghost_toggle(self, content: dict) -> None:
        user = self.scope["user"]
        if not is_operator(user):  # re-checked per command: roles can change while a socket is open
            self.error("forbidden", "only operators can enable or disable ghosts")
            return
        ghost_id, enabled, reason = content.get("ghost_id"), content.get("enabled"), content.get("reason")
        if type(ghost_id) is not int or type(enabled) is not bool or not isinstance(reason, str):
            self.error("bad_message", "ghost.toggle needs ghost_id (int), enabled (bool) and reason (str)")
            return
        try:
            ghost = ghost_set_enabled(ghost_id=ghost_id, enabled=enabled, actor=user, reason=reason)
        except ObjectDoesNotExist:
            self.error("not_found", f"no ghost {ghost_id}")
            return
        except GhostError as e:
            self.error("invalid", str(e))
            return
        self.send_json(
            {
                "type": "ack",
                "action": "ghost.toggle",
                "ghost_id": ghost.pk,
                "enabled": ghost.enabled,
                "status": ghost.status,
            }
        )

    def error(self, code: str, message: str) -> None:
        self.send_json({"type": "error", "code": code, "message": message})
