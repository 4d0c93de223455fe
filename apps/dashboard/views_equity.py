"""The equity page (issue 14): the realised equity curve with its drawdown beneath (portfolio or one ghost)
over a window the user picks, the profit table by day / week / month, and each ghost's P&L against its
revenue target per target period with the auto-disables that fired. With one ghost chosen (the "Curve" select),
both tables and the auto-disables are that ghost's too, so they agree with its curve.
Reads only (`apps.revenue.equity`);
the charts use the lab's decimation (`apps.lab.charts.equity_chart`, via `curve_chart`) and the locally served plotly.

Unknown query values fall back to the defaults (a bookmark with an old value still opens the page).
"""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from apps.dashboard.context_processors import request_pnl
from apps.dashboard.views import _plotly_version
from apps.ghosts.models import Ghost
from apps.lab.charts import chart_time
from apps.market.selectors import desk_now
from apps.revenue.equity import (
    BUCKETS,
    GROUPS,
    WINDOWS,
    auto_disables,
    curve_chart,
    equity_curve,
    place_auto_disables,
    profit_table,
    target_history,
    window_start,
)


def _choice(request: HttpRequest, name: str, allowed, default: str) -> str:
    value = request.GET.get(name, default)
    return value if value in allowed else default


@require_GET
def equity_page(request: HttpRequest) -> HttpResponse:
    window = _choice(request, "window", WINDOWS, "90d")
    by = _choice(request, "by", BUCKETS, "day")
    group = _choice(request, "group", GROUPS, "portfolio")
    ghosts = list(Ghost.objects.order_by("name").values_list("pk", "name"))
    raw = request.GET.get("ghost", "")
    ghost_id = next((pk for pk, _ in ghosts if str(pk) == raw), None)
    now = desk_now()
    today = now.date()  # data time: the trading day of the data being traded
    since = window_start(today, window)
    curve = equity_curve(since=since, ghost_id=ghost_id)
    chart = curve_chart(curve)
    pnl = request_pnl(request)
    if ghost_id is None and pnl["open_positions"]:
        # The header's equity now (realised + the open positions' unrealised): a marker after the realised curve,
        # not a point of it (no day row holds the open positions yet).
        now_ms = int(now.timestamp() * 1000)
        chart["now"] = {"t": chart_time([now_ms])[0], "equity": pnl["equity"]}
    disables = auto_disables(ghost_ids=[ghost_id] if ghost_id else [pk for pk, _ in ghosts])
    return render(request, "dashboard/equity.html", {
        "nav": "equity",
        "windows": list(WINDOWS), "window": window,
        "buckets": list(BUCKETS), "by": by,
        "groups": GROUPS, "group": group,
        "ghosts": ghosts, "ghost_id": ghost_id,
        "ghost_name": dict(ghosts).get(ghost_id),
        "today": today, "since": since,
        "curve_last": curve.last,
        "header_equity": pnl["equity"],
        "open_positions": pnl["open_positions"],
        "chart": chart,
        "plotly_version": _plotly_version(),
        "table": profit_table(by=by, group=group, since=since, ghost_id=ghost_id),
        "targets": place_auto_disables(target_history(since=since, today=today, ghost_id=ghost_id), disables),
        "auto_disables": disables,
    })
