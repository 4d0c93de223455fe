"""What every page's header needs: mode, role, quote currency, the P&L snapshot, the lead feed and the desk clock
(data time and wall time, apps.common.clock).

Views reuse the same per-request values through `request_pnl` / `request_is_operator`, so a page
that also shows the snapshot (the overview) does not compute it twice.
"""

from typing import Any

from django.conf import settings
from django.http import HttpRequest

from apps.accounts.roles import is_operator, role_of
from apps.common.clock import RULE, DeskClock, desk_clock
from apps.market.models import FeedStatus
from apps.market.selectors import feed_statuses
from apps.trading.risk_selectors import kill_switch
from apps.trading.selectors import pnl_snapshot


def request_is_operator(request: HttpRequest) -> bool:
    if not hasattr(request, "_desk_is_operator"):
        request._desk_is_operator = is_operator(request.user)
    return request._desk_is_operator


def request_pnl(request: HttpRequest) -> dict[str, Any]:
    if not hasattr(request, "_desk_pnl"):
        request._desk_pnl = pnl_snapshot()
    return request._desk_pnl


def _header_feed(request: HttpRequest) -> FeedStatus | None:
    if not hasattr(request, "_desk_feed"):
        request._desk_feed = feed_statuses().first()
    return request._desk_feed


def request_clock(request: HttpRequest) -> DeskClock:
    if not hasattr(request, "_desk_clock"):
        request._desk_clock = desk_clock()
    return request._desk_clock


def desk(request: HttpRequest) -> dict[str, Any]:
    ctx: dict[str, Any] = {
        "desk_mode": "LIVE" if settings.HFT_LIVE_TRADING else "PAPER",
        "quote_currency": settings.HFT_QUOTE_CURRENCY,
        "is_operator": False,
    }
    user = getattr(request, "user", None)
    if not getattr(user, "is_authenticated", False):
        return ctx  # the login page: no numbers for strangers, and no queries
    operator = request_is_operator(request)
    ctx.update(
        is_operator=operator,
        desk_role=role_of(user) if not operator else "operator",
        desk_pnl=request_pnl(request),
        header_feed=_header_feed(request),
        desk_kill_switch=kill_switch(),  # the header's KILL SWITCH TRIPPED banner on every page
        desk_clock=request_clock(request),  # the header's clock: data time and wall time, on every page
        clock_rule=RULE,
        # for desk.js's copy of feed_speed_label, when a feed's status names its source after the page was drawn
        clock_speeds=(f"{settings.HFT_SIM_SPEED:g}", f"{settings.HFT_REPLAY_SPEED:g}"),
    )
    return ctx
