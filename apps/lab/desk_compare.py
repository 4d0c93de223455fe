"""Backtest against the desk: run the backtest over the bars a paper desk traded, with the desk's ghosts and
parameters, and explain every trade on which the two disagree.

`lab_desk_compare_create` (a service) queues an ordinary lab run (source "desk_compare") whose settings are the
desk's: the instrument's ghosts that were enabled or signalled in the period (by their desk names, current
parameters), the desk's risk limits, the exchange's fill model, and as start capital the desk's equity when the
period began (start capital + net P&L of the positions closed before it). The lab loads the ghosts' warm-up
before the period, so the backtest's first decision sees the window the desk saw.

`desk_comparison(run)` (a selector) then pairs the desk's positions with the run's trades by (ghost, signal bar)
and `compare_trades` (pure) says for each pair or lone trade what differs and why, from what the desk recorded:
- the desk's signal fate (a stale decision, a ghost disabled, a position still open...);
- a feed gap: 1m bars missing around the trade in the stored history;
- a changed parameter or toggle: an audit event of that ghost after the desk decided (wall time: the desk's
  Signal.created_at against AuditEvent.created_at, both wall clock);
- fill prices: live, the desk fills at the first trade after the bar and checks stops on every trade; the
  backtest fills at the next bar's open and checks each bar's range.
A difference with none of these is reported as unexplained, never hidden.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings as dj_settings
from django.db.models import Q, Sum

from apps.audit.models import AuditEvent
from apps.ghosts.models import Ghost
from apps.lab.models import BacktestRun, BacktestSignal, BacktestTrade
from apps.market.models import Candle
from apps.signals.models import Signal
from apps.trading.models import Position
from apps.trading.risk_selectors import risk_limits

CENT = Decimal("0.01")
PRICE_TOLERANCE = Decimal("0.000001")  # the desk stores levels in 1e-8 steps; the backtest keeps floats
GAP_LOOKBACK = timedelta(minutes=15)  # bars before the signal a missing bar can change (the spike window)
PARAM_ACTIONS = ("ghost.params_changed",)
TOGGLE_ACTIONS = ("ghost.enabled", "ghost.disabled")  # auto-disable is a "ghost.disabled" by the system

SAME, DIFFERS, DESK_ONLY, BACKTEST_ONLY = "same", "differs", "desk_only", "backtest_only"


@dataclasses.dataclass(frozen=True)
class TradeRow:
    """One round trip from either side (exit fields None while a desk position is open)."""

    ghost: str
    side: int
    signal_time: datetime
    entry_time: datetime
    entry_price: Decimal
    exit_time: datetime | None
    exit_price: Decimal | None
    qty: Decimal
    net_pnl: Decimal | None
    reason: str


@dataclasses.dataclass(frozen=True)
class DeskSignal:
    fate: str
    detail: str
    created_at: datetime  # wall time the desk evaluated the bar


@dataclasses.dataclass(frozen=True)
class GhostEvent:
    """An audited change of a ghost (wall time)."""

    ghost: str
    action: str
    at: datetime
    reason: str


@dataclasses.dataclass(frozen=True)
class Context:
    """What the desk recorded around the trades: its signals and the backtest's by (ghost, bar), the missing
    1m bars of the range (sorted open times), and the ghosts' audited changes (sorted by time)."""

    desk_signals: Mapping[tuple[str, datetime], DeskSignal]
    lab_signals: Mapping[tuple[str, datetime], tuple[str, str]]
    missing_bars: Sequence[datetime]
    events: Sequence[GhostEvent]
    desk_eval_times: Sequence[tuple[datetime, datetime]] = ()  # (bar time, wall time) of every desk signal, sorted


@dataclasses.dataclass(frozen=True)
class Difference:
    kind: str  # same | differs | desk_only | backtest_only
    ghost: str
    side: int
    signal_time: datetime
    desk: TradeRow | None
    backtest: TradeRow | None
    fields: tuple[str, ...]  # what differs (kind "differs")
    causes: tuple[str, ...]  # stale, feed_gap, param_change, toggled, fate, fill_model, open_on_desk, unexplained
    explanation: str


def _gap_text(ctx: Context, start: datetime, end: datetime) -> str | None:
    missing = [t for t in ctx.missing_bars if start <= t <= end]
    if not missing:
        return None
    return (f"{len(missing)} 1m bar(s) missing in the stored history between {missing[0]:%Y-%m-%d %H:%M} and "
            f"{missing[-1]:%Y-%m-%d %H:%M} UTC: the desk's feed had a gap there")


def _desk_wall_time(ctx: Context, ghost: str, bar: datetime) -> datetime | None:
    """When the desk evaluated `bar` (wall clock): its signal's creation, else the nearest earlier signal of
    any ghost on the instrument."""
    own = ctx.desk_signals.get((ghost, bar))
    if own is not None:
        return own.created_at
    before = [w for t, w in ctx.desk_eval_times if t <= bar]
    return before[-1] if before else None


def _changes_after(ctx: Context, ghost: str, wall: datetime | None, actions: Iterable[str]) -> list[GhostEvent]:
    if wall is None:
        return []
    acts = set(actions)
    return [e for e in ctx.events if e.ghost == ghost and e.action in acts and e.at > wall]


def _toggled_off_at(ctx: Context, ghost: str, wall: datetime | None) -> GhostEvent | None:
    """The last toggle of `ghost` at or before `wall`, if it switched the ghost off."""
    if wall is None:
        return None
    last = [e for e in ctx.events if e.ghost == ghost and e.action in TOGGLE_ACTIONS and e.at <= wall]
    return last[-1] if last and last[-1].action != "ghost.enabled" else None


def _explain_lone(kind: str, row: TradeRow, ctx: Context) -> tuple[tuple[str, ...], str]:
    causes: list[str] = []
    texts: list[str] = []
    key = (row.ghost, row.signal_time)
    desk_sig = ctx.desk_signals.get(key)
    lab_sig = ctx.lab_signals.get(key)
    wall = _desk_wall_time(ctx, row.ghost, row.signal_time)
    if kind == BACKTEST_ONLY:
        if desk_sig is not None:
            causes.append("stale" if desk_sig.fate == "stale" else "fate")
            texts.append(f"the desk decided this signal {desk_sig.fate.replace('_', ' ')}: {desk_sig.detail}"
                         if desk_sig.detail else f"the desk decided this signal {desk_sig.fate.replace('_', ' ')}")
        else:
            off = _toggled_off_at(ctx, row.ghost, wall)
            if off is not None:
                causes.append("toggled")
                texts.append(f"the ghost was off on the desk ({off.action} at {off.at:%Y-%m-%d %H:%M:%S} wall time"
                             f"{': ' + off.reason if off.reason else ''})")
            else:
                texts.append("the desk's ghost drew no signal on this bar")
    else:
        if lab_sig is not None:
            causes.append("fate")
            texts.append(f"the backtest decided this signal {lab_sig[0].replace('_', ' ')}: {lab_sig[1]}"
                         if lab_sig[1] else f"the backtest decided this signal {lab_sig[0].replace('_', ' ')}")
        else:
            texts.append("the backtest's ghost drew no signal on this bar")
    changed = _changes_after(ctx, row.ghost, wall, PARAM_ACTIONS)
    if changed:
        causes.append("param_change")
        texts.append(f"its parameters changed after the desk decided ({changed[0].at:%Y-%m-%d %H:%M:%S} wall time"
                     f"{': ' + changed[0].reason if changed[0].reason else ''}); the backtest uses the current ones")
    gap = _gap_text(ctx, row.signal_time - GAP_LOOKBACK, row.exit_time or row.signal_time)
    if gap:
        causes.append("feed_gap")
        texts.append(gap)
    if not causes:
        causes.append("unexplained")
    return tuple(causes), "; ".join(texts)


def _bar(t: datetime) -> datetime:
    """The 1m bar a time falls in: the desk stamps a fill with its trade's (or a kline exit's) time inside the
    bar, the backtest with the bar's open time."""
    return t.replace(second=0, microsecond=0)


def _differing_fields(d: TradeRow, b: TradeRow) -> tuple[str, ...]:
    out = []
    if d.side != b.side:
        out.append("side")
    if _bar(d.entry_time) != _bar(b.entry_time):
        out.append("entry_time")
    if abs(d.entry_price - b.entry_price) > PRICE_TOLERANCE:
        out.append("entry_price")
    if d.qty.normalize() != b.qty.normalize():
        out.append("qty")
    if d.exit_time is None:
        out.append("open_on_desk")
        return tuple(out)
    if d.reason != b.reason:
        out.append("reason")
    if b.exit_time is None or _bar(d.exit_time) != _bar(b.exit_time):
        out.append("exit_time")
    if b.exit_price is not None and abs(d.exit_price - b.exit_price) > PRICE_TOLERANCE:
        out.append("exit_price")
    if b.net_pnl is not None and d.net_pnl is not None and d.net_pnl.quantize(CENT) != b.net_pnl.quantize(CENT):
        out.append("net_pnl")
    return tuple(out)


def _explain_pair(d: TradeRow, b: TradeRow, fields: tuple[str, ...], ctx: Context) -> tuple[tuple[str, ...], str]:
    causes: list[str] = []
    texts: list[str] = []
    if "open_on_desk" in fields:
        causes.append("open_on_desk")
        texts.append(f"the desk position is still open; the backtest closed it ({b.reason} at "
                     f"{b.exit_time:%Y-%m-%d %H:%M} UTC)" if b.exit_time else "the desk position is still open")
    if {"entry_price", "entry_time"} & set(fields):
        causes.append("fill_model")
        texts.append("the desk filled at the first price after the bar closed (live trades), the backtest at the "
                     "next bar's open")
    elif {"exit_price", "exit_time", "reason"} & set(fields) and "open_on_desk" not in fields:
        causes.append("fill_model")
        texts.append("the desk checks stops and targets on every trade print, the backtest on each bar's open, "
                     "high and low")
    elif "qty" in fields:
        causes.append("fill_model")
        texts.append("a different size: the equity at the decision differed (earlier trades, marks or fees)")
    gap = _gap_text(ctx, d.signal_time - GAP_LOOKBACK, d.exit_time or b.exit_time or d.signal_time)
    if gap:
        causes.append("feed_gap")
        texts.append(gap)
    changed = _changes_after(ctx, d.ghost, _desk_wall_time(ctx, d.ghost, d.signal_time), PARAM_ACTIONS)
    if changed:
        causes.append("param_change")
        texts.append(f"its parameters changed after the desk decided ({changed[0].at:%Y-%m-%d %H:%M:%S} wall time)")
    if not causes:
        causes.append("unexplained")
    return tuple(causes), "; ".join(texts)


def compare_trades(desk: Sequence[TradeRow], backtest: Sequence[TradeRow], ctx: Context) -> list[Difference]:
    """Every desk trade and backtest trade, paired by (ghost, signal bar), in signal-time order, each with
    what differs and why (see the module docstring)."""
    by_key_b = {(t.ghost, t.signal_time): t for t in backtest}
    by_key_d = {(t.ghost, t.signal_time): t for t in desk}
    out: list[Difference] = []
    for key in sorted(set(by_key_b) | set(by_key_d), key=lambda k: (k[1], k[0])):
        d, b = by_key_d.get(key), by_key_b.get(key)
        if d is not None and b is not None:
            fields = _differing_fields(d, b)
            if not fields:
                out.append(Difference(SAME, d.ghost, d.side, d.signal_time, d, b, (), (), "same trade"))
                continue
            causes, text = _explain_pair(d, b, fields, ctx)
            out.append(Difference(DIFFERS, d.ghost, d.side, d.signal_time, d, b, fields, causes, text))
        else:
            row = d or b
            kind = DESK_ONLY if d is not None else BACKTEST_ONLY
            causes, text = _explain_lone(kind, row, ctx)
            out.append(Difference(kind, row.ghost, row.side, row.signal_time, d, b, (), causes, text))
    return out


# --- Django: what the desk recorded ---------------------------------------------------------------------------

def desk_start_equity(start: datetime) -> Decimal:
    """The desk's equity when `start` began: start capital + net P&L of the positions closed before it."""
    closed = Position.objects.filter(status=Position.Status.CLOSED, closed_at__lt=start).aggregate(
        g=Sum("gross_pnl"), f=Sum("fees"))
    return dj_settings.HFT_START_CAPITAL + (closed["g"] or Decimal(0)) - (closed["f"] or Decimal(0))


def desk_compare_ghosts(*, instrument_id: int, start: datetime, end: datetime) -> list[Ghost]:
    """The instrument's ghosts enabled now or with a signal in [start, end), in id order."""
    signalled = Signal.objects.filter(instrument_id=instrument_id, bar_time__gte=start, bar_time__lt=end)
    return list(Ghost.objects.filter(Q(instrument_id=instrument_id)
                                     & (Q(enabled=True) | Q(pk__in=signalled.values("ghost_id"))))
                .order_by("pk"))


def desk_compare_settings(*, instrument_id: int, start: datetime, end: datetime) -> dict[str, Any]:
    """The lab settings that replay the desk over [start, end) (validated by the lab like any request)."""
    ghosts = desk_compare_ghosts(instrument_id=instrument_id, start=start, end=end)
    return {
        "instrument_id": instrument_id, "start": start.isoformat(), "end": end.isoformat(),
        "ghosts": [{"kind": g.kind, "name": g.name, "params": g.params or {}, "direction": "both"} for g in ghosts],
        "start_capital": str(desk_start_equity(start)), "limits": risk_limits().to_params(),
        "sizing": {"mode": "risk"}, "auto_disable": True, "kill_switch": True,
    }


def lab_desk_compare_create(*, actor, instrument_id: int, start: datetime, end: datetime,
                            queue: bool = True) -> BacktestRun:
    """Queue the backtest of the desk's period (a LabError names what is wrong: no ghosts, no bars...);
    `queue=False` leaves the execution to the caller, as `lab_run_create`."""
    from apps.lab.services import LabError, lab_run_create

    settings = desk_compare_settings(instrument_id=instrument_id, start=start, end=end)
    if not settings["ghosts"]:
        raise LabError({"ghosts": ["the desk has no ghost on this instrument that was enabled or signalled in "
                                   "the period"]})
    return lab_run_create(actor=actor, settings=settings, source="desk_compare",
                          name=f"desk vs backtest {start:%Y-%m-%d %H:%M}..{end:%Y-%m-%d %H:%M}",
                          compare_of={"instrument_id": instrument_id, "start": start.isoformat(),
                                      "end": end.isoformat()}, queue=queue)


def _missing_bars(instrument_id: int, start: datetime, end: datetime) -> list[datetime]:
    have = Candle.objects.filter(instrument_id=instrument_id, timeframe="1m", open_time__gte=start,
                                 open_time__lt=end).values_list("open_time", flat=True).order_by("open_time")
    out: list[datetime] = []
    prev = None
    for t in have:
        if prev is not None:
            gap = t - prev
            k = 1
            while gap > timedelta(minutes=k):
                out.append(prev + timedelta(minutes=k))
                k += 1
                if len(out) > 10_000:  # a recorder outage of a week is one explanation, not a million
                    return out
        prev = t
    return out


@dataclasses.dataclass(frozen=True)
class DeskComparison:
    run: BacktestRun
    differences: list[Difference]
    counts: dict[str, int]


def desk_comparison(run: BacktestRun) -> DeskComparison:
    """The trade-by-trade comparison of a finished desk_compare run with the desk's ledger."""
    inst_id = run.instrument_id
    start, end = run.start, run.end
    positions = (Position.objects.filter(instrument_id=inst_id, signal__bar_time__gte=start,
                                         signal__bar_time__lt=end).select_related("ghost", "signal"))
    desk_rows = [TradeRow(ghost=p.ghost.name, side=1 if p.side == "long" else -1, signal_time=p.signal.bar_time,
                          entry_time=p.opened_at, entry_price=p.entry_price, exit_time=p.closed_at,
                          exit_price=p.exit_price, qty=p.quantity,
                          net_pnl=p.net_pnl if p.status == Position.Status.CLOSED else None,
                          reason=p.exit_reason or "open") for p in positions]
    lab_rows = [TradeRow(ghost=t.ghost, side=t.side, signal_time=t.signal_time, entry_time=t.entry_time,
                         entry_price=t.entry_price, exit_time=t.exit_time, exit_price=t.exit_price, qty=t.qty,
                         net_pnl=t.net_pnl, reason=t.reason)
                for t in BacktestTrade.objects.filter(run=run, signal_time__gte=start, signal_time__lt=end)]
    sigs = Signal.objects.filter(instrument_id=inst_id, bar_time__gte=start - GAP_LOOKBACK, bar_time__lt=end)
    desk_signals, eval_times = {}, []
    for s in sigs.select_related("ghost").order_by("bar_time", "pk"):
        desk_signals[(s.ghost.name, s.bar_time)] = DeskSignal(fate=s.fate, detail=s.fate_detail,
                                                             created_at=s.created_at)
        eval_times.append((s.bar_time, s.created_at))
    lab_signals = {(ghost, bar): (fate, detail) for ghost, bar, fate, detail in
                   BacktestSignal.objects.filter(run=run).values_list("ghost", "bar_time", "fate", "detail")}
    ghost_ids = {str(g.pk): g.name for g in Ghost.objects.filter(instrument_id=inst_id)}
    events = [GhostEvent(ghost=ghost_ids[e.object_id], action=e.action, at=e.created_at, reason=e.reason)
              for e in AuditEvent.objects.filter(object_type="ghosts.ghost", object_id__in=list(ghost_ids),
                                                 action__in=PARAM_ACTIONS + TOGGLE_ACTIONS).order_by("created_at")]
    ctx = Context(desk_signals=desk_signals, lab_signals=lab_signals,
                  missing_bars=_missing_bars(inst_id, start - GAP_LOOKBACK, end), events=events,
                  desk_eval_times=eval_times)
    diffs = compare_trades(desk_rows, lab_rows, ctx)
    counts = {k: sum(1 for d in diffs if d.kind == k) for k in (SAME, DIFFERS, DESK_ONLY, BACKTEST_ONLY)}
    return DeskComparison(run=run, differences=diffs, counts=counts)
