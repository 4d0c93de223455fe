"""Telling a user's open desk sockets that their login changed (logout, deactivation, role change).

Every DeskConsumer joins `user.<id>`; an `auth.check` event makes each of them re-check its session, the
user and the role (apps.dashboard.consumers.DeskConsumer.auth_check) and close when anything changed. The
consumer also re-checks before every client message, so a lost event (Redis down at that moment) never lets
a logged-out or deactivated user act: it only delays closing a socket that is merely listening.
"""

import hashlib
from typing import Literal, NotRequired, TypedDict

from django.db import transaction

from apps.common.realtime import layer_send

# WebSocket close codes (4000-4999 are the application's): the browser's desk.js reconnects after either;
# a logged-out socket is then refused at connect with 4401, a socket whose role changed comes back in its new role.
CLOSE_LOGGED_OUT = 4401
CLOSE_ROLE_CHANGED = 4403


class AuthCheck(TypedDict):
    type: Literal["auth.check"]
    ended_session: NotRequired[str]  # session_digest() of a session that logged out: its sockets close at once


def user_group(user_id: int) -> str:
    return f"user.{user_id}"


def session_digest(session_key: str | None) -> str:
    """What identifies a session in channel messages: never the key itself, which would log the user in."""
    return hashlib.sha256((session_key or "").encode()).hexdigest()[:32]


def user_sockets_check(user_id: int, *, ended_session_key: str | None = None) -> None:
    """Ask the user's open sockets to re-check their login, once the surrounding transaction commits (so
    they read the change). A dead Redis is logged, never allowed to fail the logout or the admin's save."""
    message = AuthCheck(type="auth.check")
    if ended_session_key:
        message["ended_session"] = session_digest(ended_session_key)

    def send() -> None:
        # never raises; if it is lost (Redis down), the sockets re-check on their next message anyway
        layer_send(user_group(user_id), message)

    transaction.on_commit(send)
