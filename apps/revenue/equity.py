"""Reads of the equity page (issue 14): the realised equity curve, the profit table and the per-ghost P&L
against its revenue target, all from the day rows (`PnlDay`), never from the positions.

Sampling: one point per trading day with a close (data time: the UTC date of `Position.closed_at`), placed
at the END of that day (00:00 UTC of the next), plus one point at the start of the chosen window holding
the equity carried in from before it. Between points the curve is flat (nothing was realised). The curve
is realised only: start capital + cumulative net P&L (gross - entry and exit fees); open positions are in
the header's equity but on no day row yet, so with no position open the last point equals the header's
equity to the cent (tests/equity).

Query count is fixed whatever the number of ghosts, instruments or days (one query per read below).
"""

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db.models import F, Min, Sum
from django.db.models.functions import TruncDay, TruncMonth, TruncWeek

from apps.audit.models import AuditEvent
from apps.revenue.models import PnlDay, RevenueTarget
from apps.trading.selectors import period_start

ZERO = Decimal(0)
WINDOWS: dict[str, int | None] = {"7d": 7, "30d": 30, "90d": 90, "365d": 365, "all": None}
BUCKETS = {"day": TruncDay, "week": TruncWeek, "month": TruncMonth}
GROUPS = ("portfolio", "ghost", "instrument")


def window_start(today: date, window: str) -> date | None:
    """First trading day of the window ending `today` (inclusive); None for all history."""
    days = WINDOWS[window]
    return None if days is None else today - timedelta(days=days - 1)


def _day_ms(d: date) -> int:
    return int(datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp() * 1000)


@dataclass(frozen=True)
class Curve:
    t_ms: list[int]  # sample times (ms since the epoch, UTC)
    equity: list[Decimal]  # realised equity at each sample, exact
    start: date | None  # window start (None: all history)
    peak_before: Decimal  # highest realised equity before the window (the start capital at least)

    @property
    def last(self) -> Decimal:
        return self.equity[-1]


def equity_curve(*, since: date | None, ghost_id: int | None = None) -> Curve:
    """Start capital + cumulative realised net P&L, one point per closing day (see the module doc).

    Two queries: the days before `since` (carried-in net and peak), and the net of each day from `since` on. A ghost's
    curve starts from the same start capital as the portfolio's (the drawdown fractions of the ghosts page,
    `GhostLedger`, are measured that way too).
    """
    rows = PnlDay.objects.all()
    if ghost_id is not None:
        rows = rows.filter(ghost_id=ghost_id)
    capital = Decimal(settings.HFT_START_CAPITAL)
    carried = ZERO
    peak = capital
    if since is not None:
        # The days before the window (a few hundred rows) give the carried-in net and the peak the window's
        # drawdown is measured from: a window opening inside a drawdown starts below zero, not at a new high.
        for net in (rows.filter(day__lt=since).values("day").order_by("day")
                    .annotate(n=Sum(F("gross") - F("fees"))).values_list("n", flat=True)):
            carried += net
            peak = max(peak, capital + carried)
        rows = rows.filter(day__gte=since)
    days = list(rows.values("day").order_by("day").annotate(n=Sum(F("gross") - F("fees"))).values_list("day", "n"))
    first = since if since is not None else (days[0][0] if days else None)
    level = capital + carried
    t = [_day_ms(first)] if first else [0]
    eq = [level]
    for d, net in days:
        level += net
        t.append(_day_ms(d + timedelta(days=1)))
        eq.append(level)
    return Curve(t_ms=t, equity=eq, start=since, peak_before=peak)


@dataclass(frozen=True)
class ProfitRow:
    bucket: date
    label: str  # "portfolio", the ghost's name or the instrument's symbol
    trades: int
    wins: int
    net: Decimal
    fees: Decimal

    @property
    def win_rate(self) -> float | None:
        return self.wins / self.trades * 100 if self.trades else None


def profit_table(*, by: str, group: str, since: date | None, ghost_id: int | None = None,
                 limit: int = 400) -> list[ProfitRow]:
    """Trades, win rate, net P&L and fees per day / week (ISO, Monday) / month, newest first, for the portfolio
    or per ghost or instrument: one grouped SQL query over the day rows (at most `limit` rows). With `ghost_id`
    (the page's Curve select on one ghost), that ghost's rows only, so the table agrees with its curve."""
    trunc = BUCKETS[by]
    rows = PnlDay.objects.all()
    if ghost_id is not None:
        rows = rows.filter(ghost_id=ghost_id)
    if since is not None:
        rows = rows.filter(day__gte=since)
    keys = ["bucket"]
    if group == "ghost":
        keys.append("ghost__name")
    elif group == "instrument":
        keys.append("instrument__symbol")
    q = (rows.annotate(bucket=trunc("day")).values(*keys).order_by("-bucket", *keys[1:])
         .annotate(trades=Sum("trades"), wins=Sum("wins"), gross=Sum("gross"), fees=Sum("fees")))[:limit]
    out = []
    for r in q:
        b = r["bucket"]
        b = b.date() if isinstance(b, datetime) else b
        label = r.get("ghost__name") or r.get("instrument__symbol") or "portfolio"
        out.append(ProfitRow(bucket=b, label=label, trades=r["trades"] or 0, wins=r["wins"] or 0,
                             net=(r["gross"] or ZERO) - (r["fees"] or ZERO), fees=r["fees"] or ZERO))
    return out


@dataclass(frozen=True)
class TargetPeriod:
    ghost: str
    period: str  # day / week / month (the target's)
    start: date
    net: Decimal
    target: Decimal
    ghost_id: int = 0
    # The auto-disables that fired in this period (data time; place_auto_disables), oldest first.
    auto_disables: tuple[dict[str, Any], ...] = ()

    @property
    def percent(self) -> float:
        return float(self.net / self.target * 100)

    @property
    def bar_percent(self) -> float:
        return max(0.0, min(100.0, self.percent))

    @property
    def met(self) -> bool:
        return self.net >= self.target


def _next_period(start: date, period: str) -> date:
    step = 32 if period == "month" else 7 if period == "week" else 1
    return period_start(start + timedelta(days=step), period).date()


def target_history(*, since: date | None, today: date, ghost_id: int | None = None,
                   limit: int = 400) -> list[TargetPeriod]:
    """Each targeted ghost's net P&L over its target periods in the window (data time), newest first, against the
    amount. A period with no close reads 0 (nothing realised, target missed).

    Which periods (one rule for every window; "all history" is the same rule without the window's clip): from the
    period holding the ghost's **start** to the one holding the desk's trading day `today`. The start is when its
    target came to exist, in data time: the data day of the target's oldest `revenue_target.set` audit row. A
    target set before the desk had any data (that row has no data time) starts at the desk's first data, its
    first close (the oldest day row of any ghost). A target with no audit row (made outside the services) starts
    at the ghost's first close. A ghost with none of these lists only the current period. All of these are data
    time, so nothing is listed before the desk's first data, before the ghost traded or its target existed; a
    window longer than that life shows the same rows as "all history", a shorter one a subset of them.
    The window drops the periods that END before it starts; the period holding the window's first day is listed
    whole (its net counts every day of the period, not only the days inside the window). At most `limit`
    periods per ghost (the newest).

    Four queries whatever the number of ghosts, targets and days: the targets, the first day per ghost, the
    targets' audit rows, the day nets.
    """
    targets = RevenueTarget.objects.filter(ghost__isnull=False).select_related("ghost")
    if ghost_id is not None:
        targets = targets.filter(ghost_id=ghost_id)
    targets = list(targets)
    if not targets:
        return []
    firsts = dict(PnlDay.objects.values("ghost_id").order_by("ghost_id").annotate(first=Min("day"))
                  .values_list("ghost_id", "first"))
    desk_first = min(firsts.values(), default=None)
    set_days: dict[int, date | None] = {}
    for oid, dt in (AuditEvent.objects.filter(action="revenue_target.set", object_type="revenue.revenuetarget",
                                              object_id__in=[str(t.pk) for t in targets])
                    .values_list("object_id", "data_time")):
        day = desk_first if dt is None else dt.astimezone(UTC).date()
        if day is not None:
            prev = set_days.get(int(oid))
            set_days[int(oid)] = day if prev is None else min(prev, day)
    starts_of: dict[int, date] = {}
    for t in targets:
        start = set_days.get(t.pk) or firsts.get(t.ghost_id) or today
        start = min(start, today)  # a replay run again over earlier data: its start is "now" at the latest
        if since is not None:
            start = max(start, since)
        starts_of[t.pk] = period_start(start, t.period).date()
    rows = PnlDay.objects.filter(ghost_id__in=[t.ghost_id for t in targets],
                                 day__gte=min(starts_of.values()))
    nets: dict[int, list[tuple[date, Decimal]]] = defaultdict(list)
    for gid, d, n in (rows.values("ghost_id", "day").order_by("ghost_id", "day")
                      .annotate(n=Sum(F("gross") - F("fees"))).values_list("ghost_id", "day", "n")):
        nets[gid].append((d, n))
    out: list[TargetPeriod] = []
    last_of = {p: period_start(today, p).date() for p in ("day", "week", "month")}
    for t in sorted(targets, key=lambda t: t.ghost.name):
        by_start: dict[date, Decimal] = defaultdict(lambda: ZERO)
        for d, n in nets[t.ghost_id]:
            by_start[period_start(d, t.period).date()] += n
        start, last = starts_of[t.pk], last_of[t.period]
        starts: list[date] = []
        while start <= last:
            starts.append(start)
            start = _next_period(start, t.period)
        for s in reversed(starts[-limit:]):
            out.append(TargetPeriod(ghost=t.ghost.name, period=t.period, start=s, net=by_start[s], target=t.amount,
                                    ghost_id=t.ghost_id))
    return out


def auto_disables(*, ghost_ids: list[int], limit: int = 50) -> list[dict[str, Any]]:
    """The auto-disable events of these ghosts, newest first, from the audit log: the system's (no actor)
    `ghost.disabled` rows whose reason says "auto-disabled" (`apps.revenue.services.ghost_review`). `at` is the
    row's wall time, `data_time` the desk's data time when it fired (None on rows written before the audit kept
    it); the rule and the numbers are in the reason. One query."""
    q = (AuditEvent.objects.filter(action="ghost.disabled", actor__isnull=True, object_type="ghosts.ghost",
                                   object_id__in=[str(g) for g in ghost_ids], reason__startswith="auto-disabled")
         .order_by("-created_at", "-id").values("object_id", "created_at", "data_time", "reason"))[:limit]
    return [{"ghost_id": int(r["object_id"]), "at": r["created_at"], "data_time": r["data_time"],
             "reason": r["reason"]} for r in q]


def place_auto_disables(periods: list[TargetPeriod], disables: list[dict[str, Any]]) -> list[TargetPeriod]:
    """Each target period with the auto-disables that fired in it: by the desk's DATA time when the disable fired
    (the P&L that tripped the rule is that trading day's), in the ghost's own target period. A disable without a
    data time (an older audit row) or outside the listed periods stays in the page's list only. No query."""
    by_key: dict[tuple[int, date], list[dict[str, Any]]] = defaultdict(list)
    for d in disables:
        if d.get("data_time") is not None:
            by_key[(d["ghost_id"], d["data_time"].astimezone(UTC).date())].append(d)
    if not by_key:
        return periods
    out = []
    for p in periods:
        fired = [d for (gid, day), ds in by_key.items() if gid == p.ghost_id
                 and period_start(day, p.period).date() == p.start for d in ds]
        if fired:
            fired.sort(key=lambda d: d["data_time"])
            p = TargetPeriod(**{**p.__dict__, "auto_disables": tuple(fired)})
            for d in fired:
                d["placed"] = True
        out.append(p)
    return out


def curve_chart(curve: Curve) -> dict[str, Any]:
    """The curve as the lab's chart data (`apps.lab.charts.equity_chart`: equity and drawdown on one decimated x),
    the drawdown measured from the running peak INCLUDING the peak before the window. The peak goes in as a
    leading point (the decimation always keeps the first point) and is taken out again."""
    from apps.lab.charts import chart_time, equity_chart

    t = [curve.t_ms[0] - 1, *curve.t_ms]
    data = equity_chart(t, [float(curve.peak_before), *(float(e) for e in curve.equity)])
    for key in ("t", "equity", "drawdown"):
        data[key] = data[key][1:]
    data["points"] -= 1
    data["of"] -= 1
    data["t"] = chart_time(data["t"])
    return data
