"""The desk's one websocket: server events out, a few typed commands in.

Sync consumer (Channels docs: sync unless everything called is async); the ORM calls are plain.
Every command re-checks the role on the server, so a viewer's hand-made message is refused.
Every client message first re-checks the login itself (session still there, user active, role unchanged), and
the user's sockets are told to re-check at once on logout, deactivation and role change (apps/accounts/events.py).
"""

import logging
import time

from channels.generic.websocket import JsonWebsocketConsumer
from django.contrib.auth import get_user_model
from django.core.exceptions import ObjectDoesNotExist

from apps.accounts.events import CLOSE_LOGGED_OUT, CLOSE_ROLE_CHANGED, session_digest, user_group
from apps.accounts.roles import is_operator, role_of
from apps.accounts.selectors import session_user
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
# A socket that only listens re-checks its login at least this often (s), in case an auth.check event was lost
# (Redis down at that moment); a socket that sends re-checks before every message.
AUTH_RECHECK_S = 30.0


class DeskConsumer(JsonWebsocketConsumer):
    # Until connect() accepts an authenticated user, the socket is closed for every purpose.
    auth_closed = True
    session_key: str | None = None
    role: str | None = None
    auth_checked_at = 0.0

    def connect(self) -> None:
        user = self.scope.get("user")
        if not getattr(user, "is_authenticated", False):
            self.close(code=CLOSE_LOGGED_OUT)
            return
        self.auth_closed = False
        self.role = role_of(user)
        session = self.scope.get("session")
        self.session_key = session.session_key if session is not None else None
        self.auth_checked_at = time.monotonic()
        # LAB_GROUP: lab run progress (bars done, bars/s, ETA) for every viewer of a run page
        self.groups_joined = [GHOSTS_GROUP, SIGNALS_GROUP, PORTFOLIO_GROUP, FEEDS_GROUP, LAB_GROUP]
        self.groups_joined += [i.group_name for i in instruments()]
        self.groups_joined.append(user_group(user.pk))  # auth.check events for this user's sockets only
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

    # --- login re-checks -----------------------------------------------------------------------
    def auth_recheck(self) -> bool:
        """Is this socket's user still logged in through the same session, active, and in the same role?

        Read afresh from the session store and the database. If not, the socket closes (4401 logged out or
        deactivated, 4403 role changed: the browser reconnects in its new role) and this returns False.
        """
        if self.auth_closed:
            return False
        self.auth_checked_at = time.monotonic()
        if "session" in self.scope:
            user = session_user(self.session_key)
        else:
            # Only tests build a scope without a session (setting scope["user"] by hand): hftweb.asgi always wraps
            # this consumer in AuthMiddlewareStack. Without one, the user is at least read afresh.
            user = get_user_model()._default_manager.filter(pk=self.scope["user"].pk, is_active=True).first()
        if user is None or user.pk != self.scope["user"].pk:
            return self.auth_close(CLOSE_LOGGED_OUT)
        if role_of(user) != self.role:
            return self.auth_close(CLOSE_ROLE_CHANGED)
        self.scope["user"] = user  # commands act as the fresh user
        return True

    def auth_close(self, code: int) -> bool:
        self.auth_closed = True
        self.close(code=code)
        return False

    def auth_check(self, message: dict) -> None:
        """`auth.check` from apps.accounts.events: the user logged out, was changed or was deactivated."""
        if self.auth_closed:
            return
        ended = message.get("ended_session")
        if ended and self.session_key and ended == session_digest(self.session_key):
            self.auth_close(CLOSE_LOGGED_OUT)  # logout sends this before it deletes the session
            return
        self.auth_recheck()

    def websocket_receive(self, message: dict) -> None:
        # Before anything the client sent is even parsed: a logged-out or deactivated user's socket acts no more.
        if self.auth_recheck():
            super().websocket_receive(message)

    # --- server -> browser -------------------------------------------------------------------
    def desk_event(self, message: dict) -> None:
        if self.auth_closed:
            return
        if time.monotonic() - self.auth_checked_at > AUTH_RECHECK_S and not self.auth_recheck():
            return
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
        if "\x00" in reason:  # SQLite would store it; PostgreSQL refuses the row (the form's CharField refuses it too)
            self.error("bad_message", "reason: null characters are not allowed")
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
