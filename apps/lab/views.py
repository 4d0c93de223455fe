"""The lab's pages: runs list + new-run form, a run's progress and results, its trades (table, CSV, the "why"
page of each trade's signal), the comparison of 2-4 runs and the success criteria.

Thin like the desk's views: parse input with apps.lab.forms, call one service (apps.lab.services) or selector
(apps.lab.selectors), render. Roles are enforced here on the server: a viewer's POST (start, cancel, criteria)
gets 403 before its input is read and changes nothing, whatever the page showed. Charts are decimated on the
server (apps.lab.charts): no response carries more than ~2,000 points per series.
"""

import csv
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings as dj_settings
from django.contrib import messages
from django.core.cache import cache
from django.core.exceptions import ObjectDoesNotExist, PermissionDenied
from django.core.handlers.asgi import ASGIRequest
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase, JsonResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from apps.common.csv_stream import Echo as _Echo
from apps.common.csv_stream import aiter_batches as _aiter_batches
from apps.common.csv_stream import csv_text as _csv_text
from apps.common.parsing import ParseError, parse_id, parse_int, parse_json
from apps.dashboard.context_processors import request_is_operator
from apps.dashboard.views import _plotly_version, _wants_json
from apps.dashboard.views_risk import FATE_WORDS, _show, fate_words
from apps.engine import fills
from apps.engine.registry import GHOSTS, warmup_minutes_for
from apps.engine.risk import RiskLimits
from apps.lab import charts
from apps.lab.events import progress_payload
from apps.lab.forms import (
    DIRECTIONS,
    SIZING_MODES,
    CriteriaForm,
    LabRunForm,
    LabTradeFilterForm,
    PeriodForm,
    ghost_readiness,
    params_text,
    parse_run_ids,
    trend_gate_note,
)
from apps.lab.models import BacktestRun, BacktestSignal, BacktestTrade
from apps.lab.selectors import (
    history_before,
    instruments_with_data,
    paper_record,
    run_ohlc,
    run_trades_in_range,
    stored_inputs,
    success_criteria,
)
from apps.lab.series import series_unpack
from apps.lab.services import LabError, lab_criteria_update, lab_run_cancel, lab_run_create
from apps.market.models import Instrument
from apps.market.selectors import desk_now
from apps.trading.risk_selectors import risk_limits

RUNS_PAGE = 25  # runs per page of the list (keyset on id)
TRADES_PAGE = 100  # trades per page of a run's table (keyset on seq)
CSV_BATCH = 2000
PRICE_CACHE_S = 3600  # a finished run's price views, in the shared cache (Redis)
PRICE_TRADES_MAX = 3000  # trade markers per price view: beyond that the chart is unreadable anyway
QUOTE = dj_settings.HFT_QUOTE_CURRENCY


def _run_or_404(run_id: int, *, with_series: bool = False) -> BacktestRun:
    qs = BacktestRun.objects.select_related("instrument__exchange", "created_by")
    if with_series:
        qs = qs.defer(None)
    run = qs.filter(pk=run_id).first()
    if run is None:
        raise Http404(f"no run {run_id}")
    return run


def _progress_pct(run: BacktestRun) -> float:
    if run.status == BacktestRun.Status.DONE:
        return 100.0
    return run.bars_done / run.bars_total * 100 if run.bars_total else 0.0


def _figure_values(run: BacktestRun) -> dict[str, Any]:
    return {f["key"]: f for f in (run.summary or {}).get("figures", [])}


# --- runs list and the new-run form ----------------------------------------------------------------------------


def _fee_defaults(inst: Instrument | None) -> dict[str, Any]:
    m = fills.fill_model_for(inst.exchange.code if inst else None)
    return {"taker_fee": _show(m.taker_fee), "maker_fee": _show(m.maker_fee), "slippage_bps": _show(m.slippage_bps)}


def _day(dt: datetime | None) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%d") if dt else ""


def _initial(data: list[dict[str, Any]]) -> dict[str, Any]:
    """The form's defaults: the first instrument with candles over its whole stored range, the desk's ghosts
    (with the desk's parameters where a ghost of that kind is configured) and risk limits, risk sizing."""
    from apps.ghosts.selectors import ghosts

    inst = next((d for d in data if d["candles"]), data[0] if data else None)
    init: dict[str, Any] = {
        "start_capital": _show(float(dj_settings.HFT_START_CAPITAL)),
        "sizing_mode": "risk", "auto_disable": True, "kill_switch": True,
    }
    if inst:
        init.update(instrument=inst["id"], start=inst["first"], end=inst["last"])
    desk_params: dict[str, Any] = {}
    for g in ghosts():
        desk_params.setdefault(g.kind, g.params)
    for kind, spec in GHOSTS.items():
        init[f"g_{kind}_on"] = getattr(spec, "desk", True)
        init[f"g_{kind}_params"] = params_text(desk_params.get(kind))
        init[f"g_{kind}_direction"] = "both"
    for name, value in risk_limits().to_params().items():
        init[f"limit_{name}"] = value if isinstance(value, bool) else _show(value)
    return init


def _preset_textbook(init: dict[str, Any]) -> str:
    """The textbook rules of issue 9 from the engine's own setup (apps.engine.presets.textbook_setup)."""
    try:
        from apps.engine.presets import textbook_setup
    except ImportError:
        return "The textbook preset needs the engine's textbook_fader ghost, which this version does not have."
    setups, cfg = textbook_setup()
    chosen = {g.kind: g for g in setups}
    for kind in GHOSTS:
        g = chosen.get(kind)
        init[f"g_{kind}_on"] = g is not None
        if g is not None:
            init[f"g_{kind}_params"] = params_text(g.resolved_config().to_params())
            init[f"g_{kind}_direction"] = getattr(g, "direction", "both")
            init[f"g_{kind}_name"] = g.name
    sizing = getattr(cfg, "sizing", None)
    if sizing is not None:
        init.update(sizing_mode=sizing.mode, stake=_show(sizing.stake), equity_pct=_show(sizing.equity_pct))
    m = cfg.model
    init.update(taker_fee=_show(m.taker_fee), maker_fee=_show(m.maker_fee), slippage_bps=_show(m.slippage_bps),
                start_capital=_show(float(cfg.start_capital)), auto_disable=getattr(cfg, "auto_disable", True),
                kill_switch=getattr(cfg, "kill_switch", True))
    for name, value in cfg.limits.to_params().items():
        init[f"limit_{name}"] = value if isinstance(value, bool) else _show(value)
    return ("Textbook preset: the textbook_fader alone, a fixed stake, 0.1 % fee each side, no slippage, one "
            "position at a time, auto-disable and kill switch off. Choose the range and start.")


def _from_run(init: dict[str, Any], run: BacktestRun) -> str:
    """A stored run's settings back into the form ("Copy into a new run")."""
    s = run.settings or {}
    init.update(instrument=run.instrument_id, start=_day(run.start), end=_day(run.end),
                start_capital=s.get("start_capital", init["start_capital"]),
                auto_disable=s.get("auto_disable", True), kill_switch=s.get("kill_switch", True))
    chosen = {g["kind"]: g for g in s.get("ghosts", [])}
    for kind in GHOSTS:
        g = chosen.get(kind)
        init[f"g_{kind}_on"] = g is not None
        if g:
            init[f"g_{kind}_params"] = params_text(g.get("params"))
            init[f"g_{kind}_direction"] = g.get("direction", "both")
            init[f"g_{kind}_name"] = g.get("name", kind)
    for k in ("taker_fee", "maker_fee", "slippage_bps"):
        if (s.get("fee") or {}).get(k) is not None:
            init[k] = _show(s["fee"][k])
    sz = s.get("sizing") or {}
    init.update(sizing_mode=sz.get("mode", "risk"), stake=_show(sz.get("stake", "")),
                equity_pct=_show(sz.get("equity_pct", "")))
    for name, value in (s.get("limits") or {}).items():
        init[f"limit_{name}"] = value if isinstance(value, bool) else _show(value)
    return f"Settings of run #{run.pk} ({run.name}); change what you want to test, then start."


def _coverage(inst: Instrument | None, start: datetime | None, end: datetime | None) -> dict[str, Any] | None:
    """What is stored for the instrument in [start, end) (apps.lab.selectors.stored_inputs), for the form."""
    if inst is None or start is None or end is None or end <= start:
        return None
    st = stored_inputs(instrument_id=inst.pk, start=start, end=end)
    longest = max(warmup_minutes_for(k) for k in GHOSTS)  # what a run of any set may warm up on
    minutes = int((end - start).total_seconds() // 60)
    cov: dict[str, Any] = {
        "instrument": str(inst), "start": start, "end": end, "candles": st.candles, "first": st.first,
        "last": st.last, "uncovered": max(0, minutes - st.candles), "taker": st.taker, "whale": st.whale,
        "liq": st.liquidations, "liq_events": st.liquidation_events, "large_trades": st.large_trades,
        "before_minutes": history_before(instrument_id=inst.pk, start=start, minutes=longest),
    }
    # gaps: minutes without a candle BETWEEN the first and the last stored one (a range reaching past the data
    # is not a gap: the run simply starts or ends where the data does)
    span = int((st.last - st.first).total_seconds() // 60) + 1 if st.candles else 0
    cov["missing"] = max(0, span - st.candles)
    for k in ("taker", "whale", "liq"):
        cov[f"{k}_pct"] = cov[k] / st.candles * 100 if st.candles else None
    if not st.candles:
        whole = next((d for d in instruments_with_data() if d["id"] == inst.pk), None)
        if whole and whole["candles"]:
            cov.update(stored_first=whole["first_time"], stored_last=whole["last_time"])
    return cov


def _ghost_params(form: LabRunForm, kind: str) -> dict[str, Any]:
    raw = form[f"g_{kind}_params"].value()
    if isinstance(raw, dict):
        return raw
    try:
        value = parse_json(raw or "{}")  # not json.loads: 2,000 nested "[" raised RecursionError (a 500)
    except ParseError:
        return {}
    return value if isinstance(value, dict) else {}


def _form_window(form: LabRunForm) -> tuple[Instrument | None, datetime | None, datetime | None]:
    """Instrument and range of a bound or initial form, leniently (for the coverage box only)."""
    from apps.lab.forms import DATETIME_FORMATS, _utc

    def when(name: str) -> datetime | None:
        raw = form[name].value()
        if isinstance(raw, datetime):
            return _utc(raw)
        for fmt in DATETIME_FORMATS:
            try:
                return datetime.strptime(str(raw or "")[:16], fmt).replace(tzinfo=UTC)
            except ValueError:
                continue
        return None

    inst_id = parse_id(str(form["instrument"].value() or ""))  # not isdigit(): "²" passed it and failed int()
    inst = Instrument.objects.select_related("exchange").filter(pk=inst_id).first() if inst_id else None
    return inst, when("start"), when("end")


def _readiness_rows(form: LabRunForm, cov: dict[str, Any] | None) -> list[dict[str, Any]]:
    rows = form.ghost_rows()
    for r in rows:
        r["ready"] = ghost_readiness(r["kind"], _ghost_params(form, r["kind"]), cov or {})
    return rows


def _runs_rows(before: int | None) -> tuple[list[BacktestRun], int | None]:
    qs = BacktestRun.objects.select_related("instrument__exchange", "created_by").order_by("-id")
    if before:
        qs = qs.filter(pk__lt=before)
    runs = list(qs[: RUNS_PAGE + 1])
    more = len(runs) > RUNS_PAGE
    runs = runs[:RUNS_PAGE]
    for r in runs:
        figs = _figure_values(r)
        r.ghost_names = [g.get("name", g.get("kind")) for g in (r.settings or {}).get("ghosts", [])]
        r.summary_net = (figs.get("net_pnl") or {}).get("value")
        r.summary_return = (figs.get("return_pct") or {}).get("value")
        trades = (figs.get("trades") or {}).get("value")
        r.summary_trades = int(trades) if trades is not None else None
        r.progress_pct = _progress_pct(r)
    return runs, (runs[-1].pk if more and runs else None)


def _render_runs(request: HttpRequest, form: LabRunForm, *, status: int = 200, preset_note: str = "") -> HttpResponse:
    before_id = parse_id(request.GET.get("before"))
    runs, next_before = _runs_rows(before_id)
    data = instruments_with_data()
    inst, start, end = _form_window(form)
    cov = _coverage(inst, start, end)
    selected = str(form["instrument"].value() or "")
    options = [{**d, "selected": str(d["id"]) == selected, "fee": _fee_defaults(d["instrument"])} for d in data]
    chosen = [k for k in form.kinds if form[f"g_{k}_on"].value()]
    return render(request, "lab/runs.html", {
        "nav": "lab",
        "form": form,
        "runs": runs,
        "before": before_id,
        "next_before": next_before,
        "instrument_options": options,
        "has_candles": any(d["candles"] for d in data),
        "coverage": cov,
        "ghost_rows": _readiness_rows(form, cov),
        "limit_rows": form.limit_rows(),
        "limits_open": any(form[f"limit_{s['spec'].name}"].errors for s in form.limit_rows()),
        "fee_default": _fee_defaults(inst),
        "directions": DIRECTIONS,
        "sizing_modes": SIZING_MODES,
        "trend_note": trend_gate_note(chosen, cov or {}),
        "preset_note": preset_note,
    }, status=status)


@require_http_methods(["GET", "POST"])
def runs_page(request: HttpRequest) -> HttpResponse:
    """GET: the runs (keyset paged) and, for operators, the new-run form (`?preset=textbook`, `?from=<run>`).
    POST (operators): validate through the service and queue the run, then show its page."""
    if request.method == "POST":
        if not request_is_operator(request):  # before reading the input: a viewer learns nothing, starts nothing
            raise PermissionDenied("only operators can start runs")
        form = LabRunForm(request.POST)
        if form.is_valid():
            try:
                run = lab_run_create(actor=request.user, settings=form.settings_data(),
                                     name=form.cleaned_data.get("name") or "")
            except LabError as e:
                form.apply_lab_error(e.errors)
            else:
                messages.success(request, f"Run #{run.pk} queued: {run.name}.")
                return redirect("lab:run", run_id=run.pk)
        return _render_runs(request, form, status=400)
    init = _initial(instruments_with_data())
    note = ""
    if request.GET.get("preset") == "textbook":
        note = _preset_textbook(init)
    elif src := request.GET.get("from", ""):
        run_id = parse_id(src)
        run = BacktestRun.objects.filter(pk=run_id).first() if run_id else None
        note = _from_run(init, run) if run else f"No run {src[:20]} to copy from."
    return _render_runs(request, LabRunForm(initial=init), preset_note=note)


@require_GET
def coverage_json(request: HttpRequest) -> JsonResponse:
    """What is stored for ?instrument=&start=&end= and, per ghost kind (with ?params_<kind>= overrides), whether
    it will be idle for lack of an input, and why: the new-run form asks as the range changes."""
    form = LabRunForm(initial={"instrument": request.GET.get("instrument"), "start": request.GET.get("start"),
                               "end": request.GET.get("end")})
    inst, start, end = _form_window(form)
    cov = _coverage(inst, start, end)
    out: dict[str, Any] = {}
    for kind in GHOSTS:
        try:
            params = parse_json(request.GET.get(f"params_{kind}") or "{}")
        except ParseError:
            params = {}
        r = ghost_readiness(kind, params if isinstance(params, dict) else {}, cov or {})
        out[kind] = {"state": r.state, "notes": list(r.notes)}
    kinds = [k for k in request.GET.getlist("kinds") if k in GHOSTS]
    html = render_to_string("lab/_coverage.html", {"cov": cov}, request=request)
    return JsonResponse({"html": html, "ghosts": out, "trend_note": trend_gate_note(kinds, cov or {}),
                         "candles": (cov or {}).get("candles", 0)}, headers={"Cache-Control": "no-store"})


# --- one run ----------------------------------------------------------------------------------------------------

GATE_LABELS = {
    "win_rate": "Win rate", "sharpe": "Sharpe (daily, ×√365)", "max_drawdown": "Max drawdown",
    "profitable_streak": "Profitable streak (days)", "daily_loss": "Worst daily loss",
    "daily_profit": "Mean daily profit",
}
GATE_OPS = {"win_rate": "> ", "sharpe": "> ", "max_drawdown": "< ", "profitable_streak": "≥ ", "daily_loss": "≤ ",
            "daily_profit": "> "}  # how apps.engine.criteria compares each value with its threshold
GATE_UNITS = {"win_rate": " %", "max_drawdown": " %", "daily_loss": " %", "sharpe": "", "profitable_streak": " d",
              "daily_profit": ""}


def gate_rows(gates: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """apps.engine.criteria rows with labels and numbers formatted for the table."""
    out = []
    for g in gates or []:
        unit = GATE_UNITS.get(g["name"], "")
        places = 0 if g["name"] == "profitable_streak" else 2

        def fmt(v: float, places: int = places, unit: str = unit) -> str:
            return f"{v:,.{places}f}{unit}"

        out.append({**g, "label": GATE_LABELS.get(g["name"], g["name"].replace("_", " ")),
                    "value_text": "n/a" if g.get("value") is None else fmt(g["value"]),
                    "threshold_text": (GATE_OPS.get(g["name"], "") + fmt(g["threshold"]))
                    if g.get("threshold") is not None else "—"})
    return out


def _figures(run: BacktestRun) -> list[dict[str, Any]]:
    summary = run.summary or {}
    dd = summary.get("drawdown") or {}
    out = []
    for f in summary.get("figures", []):
        css = ""
        if f["key"] in ("net_pnl", "return_pct") and f.get("value") is not None:
            css = "pos" if f["value"] > 0 else "neg" if f["value"] < 0 else ""
        note = f.get("na_why") or f.get("sample", "")
        if f["key"] == "max_drawdown" and dd.get("peak"):
            rec = dd.get("recovery")
            note = (f"peak {dd['peak'][:16].replace('T', ' ')} → trough {dd['trough'][:16].replace('T', ' ')} → "
                    + (f"recovered {rec[:16].replace('T', ' ')}" if rec else "not recovered by the end"))
        text = f.get("display") or "n/a"  # the report formats it with its unit ("12.30 %", "1,234.50 USDT")
        unit = f.get("unit") or ""
        if unit and unit != "%" and text.endswith(" " + unit):
            text = text[: -len(unit) - 1]  # the money unit is drawn small beside the number
        else:
            unit = ""
        out.append({**f, "text": text, "unit": unit, "css": css, "note": note, "formula": f.get("formula", "")})
    return out


def _ghost_table(run: BacktestRun) -> list[dict[str, Any]]:
    rows = []
    for g in run.ghost_figures or []:
        pf = g.get("profit_factor")
        note = ""
        if g.get("disabled"):
            when = g["disabled"]["time"][:16].replace("T", " ")
            note = f"auto-disabled {when}: {'; '.join(g['disabled']['reasons'])}"
        elif not (g.get("longs") or g.get("shorts")) and g.get("idle_reason"):
            note = f"idle: {g['idle_reason']}"
        rows.append({
            "name": g["ghost"], "kind": g.get("kind", ""), "trades": g.get("trades", 0), "win_rate": g.get("win_rate"),
            "profit_factor_text": "n/a" if pf is None else ("∞" if pf == float("inf") else f"{pf:.2f}"),
            "net": g.get("net_pnl"), "note": note,
            "fates": sorted((g.get("fates") or {}).items(), key=lambda kv: (-kv[1], kv[0])),
        })
    return rows


def _limit_order(item: tuple[str, Any]) -> tuple[int, str]:
    """The risk limits in the engine's order (a run's settings come back from PostgreSQL's jsonb with their keys
    shortest first); a key it does not know, after them."""
    order = list(RiskLimits().to_params())
    return (order.index(item[0]) if item[0] in order else len(order), item[0])


def _settings_rows(run: BacktestRun) -> list[tuple[str, str]]:
    s = run.settings or {}
    sz = s.get("sizing") or {}
    mode = sz.get("mode", "risk")
    sizing = {"risk": "risk-based (the desk's)", "stake": f"fixed stake {sz.get('stake')} {QUOTE}",
              "equity_pct": f"{sz.get('equity_pct')} % of equity"}.get(mode, mode)
    fee = s.get("fee") or {}
    lim = s.get("limits") or {}
    return [
        ("Start capital", f"{s.get('start_capital', '—')} {QUOTE}"),
        ("Sizing", sizing),
        ("Fees", f"taker {fee.get('taker_fee')} · maker {fee.get('maker_fee')} · "
                 f"slippage {fee.get('slippage_bps')} bps"),
        ("Risk limits", ", ".join(f"{k} {v}" for k, v in sorted(lim.items(), key=_limit_order))),
        ("Auto-disable", "on" if s.get("auto_disable", True) else "off"),
        ("Kill switch", "on" if s.get("kill_switch", True) else "off"),
        ("Ghosts", ", ".join(f"{g['name']} ({g['kind']}, {g.get('direction', 'both')})" for g in s.get("ghosts", []))),
        ("Bars", f"{run.bars_total:,}"),
        ("Created", f"{run.created_at:%Y-%m-%d %H:%M} UTC"
                    + (f" by {run.created_by.get_username()}" if run.created_by else "")),
        ("Finished", f"{run.finished_at:%Y-%m-%d %H:%M:%S} UTC" if run.finished_at else "—"),
    ]


@require_GET
def run_detail(request: HttpRequest, run_id: int) -> HttpResponse:
    done = BacktestRun.objects.filter(pk=run_id, status=BacktestRun.Status.DONE).exists()
    run = _run_or_404(run_id, with_series=done)  # the 2 MB equity series only when there are results to draw
    ctx: dict[str, Any] = {
        "nav": "lab", "run": run, "progress": {"pct": _progress_pct(run)},
        "ghost_names": [g.get("name") for g in (run.settings or {}).get("ghosts", [])],
        "settings_rows": _settings_rows(run),
        "settings_json": json.dumps(run.settings, indent=1, sort_keys=True),
        "plotly_version": _plotly_version(), "max_points": charts.MAX_POINTS, "chart_data": None,
    }
    if run.status == BacktestRun.Status.DONE:
        t, e = series_unpack(run.series)
        summary = run.summary or {}
        equity = charts.equity_chart(t, e) if len(t) else {"t": [], "equity": [], "drawdown": [], "points": 0, "of": 0}
        daily = charts.daily_bars(run.daily or [])
        hist = charts.histogram_bars(summary.get("distribution"))
        ctx.update(
            figures=_figures(run), ghost_table=_ghost_table(run), criteria=gate_rows(run.criteria),
            equity=equity, daily=daily, histogram=hist, monthly=charts.monthly_grid(summary.get("monthly") or []),
            months=charts.MONTHS, trade_count=BacktestTrade.objects.filter(run_id=run.pk).count(),
            chart_data={"equity": equity, "daily": daily, "histogram": hist},
        )
    return render(request, "lab/run.html", ctx)


@require_GET
def run_progress(request: HttpRequest, run_id: int) -> JsonResponse:
    """The run's state as a lab.progress event (the run page polls it while the run is active)."""
    run = BacktestRun.objects.filter(pk=run_id).only(
        "pk", "status", "stage", "bars_done", "bars_total", "error").first()
    if run is None:
        raise Http404(f"no run {run_id}")
    return JsonResponse(dict(progress_payload(run)), headers={"Cache-Control": "no-store"})


@require_POST
def run_cancel(request: HttpRequest, run_id: int) -> HttpResponse:
    as_json = _wants_json(request)
    if not request_is_operator(request):
        if as_json:
            return JsonResponse({"ok": False, "error": "only operators can cancel runs"}, status=403)
        raise PermissionDenied("only operators can cancel runs")
    try:
        run = lab_run_cancel(run_id=run_id, actor=request.user)
    except ObjectDoesNotExist:
        raise Http404(f"no run {run_id}") from None
    if as_json:
        return JsonResponse({"ok": True, "run_id": run.pk, "status": run.status,
                             "cancel_requested": run.cancel_requested})
    messages.info(request, f"Run #{run.pk}: " + ("cancelled." if run.status == "cancelled" else
                                                  "cancel requested; the worker stops within a second."
                                                  if run.is_active else f"already {run.status}."))
    return redirect("lab:run", run_id=run.pk)


def _ms(value: str | None) -> int | None:
    """Milliseconds since the epoch typed in a query (ASCII digits, at most 15: year 33658), else None."""
    if value is None:
        return None
    try:
        return parse_int(value)  # not isdigit()+int(): "²" passed the one and failed the other (a 500)
    except ParseError:
        return None


@require_GET
def run_price(request: HttpRequest, run_id: int) -> JsonResponse:
    """OHLC buckets of the visible range (?start=&end= in ms; default the whole run) and the trades inside it:
    at most charts.MAX_POINTS buckets and PRICE_TRADES_MAX markers whatever the zoom."""
    run = BacktestRun.objects.filter(pk=run_id).only("pk", "instrument_id", "start", "end", "status").first()
    if run is None:
        raise Http404(f"no run {run_id}")
    lo = int(run.start.timestamp() * 1000)
    hi = int(run.end.timestamp() * 1000)
    a, b = _ms(request.GET.get("start")), _ms(request.GET.get("end"))
    if (request.GET.get("start") and a is None) or (request.GET.get("end") and b is None):
        return JsonResponse({"error": "start and end are milliseconds since the epoch (UTC)"}, status=400)
    start, end = max(lo, a if a is not None else lo), min(hi, b if b is not None else hi)
    if end <= start:
        start, end = lo, hi
    # A finished run's candles and trades do not change: its views are cached (the whole 90-day view reads
    # 130k candles, ~0.3 s on SQLite; a zoomed hour reads 60)
    key = f"lab:price:{run.pk}:{start}:{end}:{charts.MAX_POINTS}"
    if run.status == BacktestRun.Status.DONE and (hit := cache.get(key)) is not None:
        return JsonResponse(hit, headers={"Cache-Control": "private, max-age=60"})
    t, o, h, low, c = run_ohlc(instrument_id=run.instrument_id, start_ms=start, end_ms=end)
    out = charts.ohlc_buckets(t, o, h, low, c, start_ms=start, end_ms=end)
    trades, more = run_trades_in_range(run_id=run.pk, start_ms=start, end_ms=end, limit=PRICE_TRADES_MAX)
    marks: dict[str, dict[str, list]] = {k: {"t": [], "price": [], "text": []}
                                         for k in ("entries_long", "entries_short", "exits")}
    for tr in trades:
        side = "long" if tr["side"] > 0 else "short"
        if start <= tr["entry_ms"] < end:
            m = marks["entries_long" if tr["side"] > 0 else "entries_short"]
            m["t"].append(tr["entry_ms"])
            m["price"].append(tr["entry_price"])
            m["text"].append(f"#{tr['seq']} {tr['ghost']} {side} entry")
        if start <= tr["exit_ms"] < end:
            m = marks["exits"]
            m["t"].append(tr["exit_ms"])
            m["price"].append(tr["exit_price"])
            m["text"].append(f"#{tr['seq']} {tr['ghost']} exit ({tr['reason']}) net {tr['net_pnl']:+.2f} {QUOTE}")
    payload = {**out, **marks, "start": start, "end": end, "bars": int(len(t)), "trades_shown": len(trades),
               "trades_more": more}
    if run.status == BacktestRun.Status.DONE:
        cache.set(key, payload, PRICE_CACHE_S)
    return JsonResponse(payload, headers={"Cache-Control": "private, max-age=60"})


# --- trades, CSV, the why page --------------------------------------------------------------------------------


def _run_ghosts(run: BacktestRun) -> list[str]:
    return [g.get("name") for g in (run.settings or {}).get("ghosts", [])]


def _trades_qs(run: BacktestRun, form: LabTradeFilterForm):
    qs = BacktestTrade.objects.filter(run_id=run.pk)
    if form.is_bound:
        kw = form.selector_kwargs()
        if kw["ghost"]:
            qs = qs.filter(ghost=kw["ghost"])
        if kw["side"]:
            qs = qs.filter(side=kw["side"])
        if kw["reason"]:
            qs = qs.filter(reason=kw["reason"])
    return qs.order_by("seq")


@require_GET
def run_trades(request: HttpRequest, run_id: int) -> HttpResponse:
    run = _run_or_404(run_id)
    names = _run_ghosts(run)
    params = request.GET.copy()
    params.pop("after", None)
    form = LabTradeFilterForm(params or None, ghosts=names)
    rows = None
    status = 200
    after = _ms(request.GET.get("after"))
    next_after = None
    total = 0
    if form.is_bound and not form.is_valid():
        status = 400
    else:
        qs = _trades_qs(run, form)
        total = qs.count()
        page = list((qs.filter(seq__gt=after) if after else qs)[: TRADES_PAGE + 1])
        if len(page) > TRADES_PAGE:
            page = page[:TRADES_PAGE]
            next_after = page[-1].seq
        for t in page:
            t.fees = t.entry_fee + t.exit_fee
        rows = page
    return render(request, "lab/trades.html", {
        "nav": "lab", "run": run, "form": form, "rows": rows, "ghost_names": names, "total": total,
        "after": after, "next_after": next_after, "filtered": form.is_bound,
    }, status=status)


CSV_HEADER = ["seq", "ghost", "kind", "side", "signal_time", "entry_time", "entry_price", "exit_time", "exit_price",
              "qty", "entry_fee", "exit_fee", "gross_pnl", "net_pnl", "return_pct", "reason", "currency"]


def _csv_batches(qs) -> Iterator[str]:
    """The export in chunks, keyset on seq: each chunk its own short query (see dashboard.views._csv_batches)."""
    writer = csv.writer(_Echo())
    yield writer.writerow(CSV_HEADER)
    last = 0
    while True:
        rows = list(qs.filter(seq__gt=last)[:CSV_BATCH])
        if not rows:
            return
        yield "".join(writer.writerow([
            t.seq, _csv_text(t.ghost), t.kind, "long" if t.side > 0 else "short", t.signal_time.isoformat(),
            t.entry_time.isoformat(), t.entry_price, t.exit_time.isoformat(), t.exit_price, t.qty, t.entry_fee,
            t.exit_fee, t.gross_pnl, t.net_pnl, repr(t.return_pct), t.reason, QUOTE,
        ]) for t in rows)
        last = rows[-1].seq


@require_GET
def run_trades_csv(request: HttpRequest, run_id: int) -> HttpResponseBase:
    run = _run_or_404(run_id)
    form = LabTradeFilterForm(request.GET or None, ghosts=_run_ghosts(run))
    if form.is_bound and not form.is_valid():
        return HttpResponse("invalid filter: " + "; ".join(form.error_lines()) + "\n", status=400,
                            content_type="text/plain; charset=utf-8")
    batches = _csv_batches(_trades_qs(run, form))
    content = _aiter_batches(batches) if isinstance(request, ASGIRequest) else batches
    response = StreamingHttpResponse(content, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="run-{run.pk}-trades.csv"'
    response["Cache-Control"] = "no-store"
    return response


LAB_FATE_WORDS = {
    "taken": "Traded: it scored best on its bar and the risk check accepted it; it filled at the next bar's open.",
    "direction_off": "Not traded: this side is switched off for the ghost in this run (its direction setting).",
}


def lab_fate_words(fate: str, detail: str) -> str:
    return LAB_FATE_WORDS.get(fate) or (fate_words(fate, detail) if fate in FATE_WORDS or fate == "blocked_risk"
                                        else fate.replace("_", " "))


def _distance_pct(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not a > 0:
        return None
    return abs(b - a) / a * 100


@require_GET
def run_signal(request: HttpRequest, run_id: int, signal_id: int) -> HttpResponse:
    run = _run_or_404(run_id)
    s = BacktestSignal.objects.filter(pk=signal_id, run_id=run.pk).first()
    if s is None:
        raise Http404(f"no signal {signal_id} in run {run_id}")
    rivals = list(BacktestSignal.objects.filter(run_id=run.pk, bar_time=s.bar_time).exclude(pk=s.pk)
                  .order_by("ghost", "id"))
    stop_pct, target_pct = _distance_pct(s.entry, s.stop), _distance_pct(s.entry, s.target)
    return render(request, "lab/signal.html", {
        "nav": "lab", "run": run, "s": s, "side": "long" if s.side > 0 else "short",
        "why": lab_fate_words(s.fate, s.detail),
        "rivals": [{"s": r, "side": "long" if r.side > 0 else "short", "why": lab_fate_words(r.fate, r.detail)}
                   for r in rivals],
        "trades": list(BacktestTrade.objects.filter(run_id=run.pk, signal_id=s.pk).order_by("seq")),
        "stop_pct": stop_pct, "target_pct": target_pct,
        "reward_risk": target_pct / stop_pct if stop_pct and target_pct is not None else None,
    })


# --- compare --------------------------------------------------------------------------------------------------


def _flatten(settings: dict[str, Any]) -> dict[str, str]:
    """Settings as "dotted.key" -> text; ghosts keyed by their name in the run (not their position)."""
    out: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k in sorted(value):
                walk(f"{prefix}.{k}" if prefix else str(k), value[k])
        else:
            out[prefix] = json.dumps(value) if not isinstance(value, str) else value

    rest = {k: v for k, v in settings.items() if k != "ghosts"}
    walk("", rest)
    for g in settings.get("ghosts", []):
        walk(f"ghosts.{g.get('name')}", {"kind": g.get("kind"), "direction": g.get("direction", "both"),
                                          "params": g.get("params") or {}})
    return out


def _delta_text(key: str, unit: str, delta: float) -> str:
    if key == "trades":
        return f"{delta:+.0f}"
    if unit == "%":
        return f"{delta:+.2f} pts"
    if unit:
        return f"{delta:+,.2f}"
    return f"{delta:+.2f}"


@require_GET
def compare_page(request: HttpRequest) -> HttpResponse:
    ids, error = parse_run_ids(request.GET.getlist("runs"))
    runs: list[BacktestRun] = []
    if not error:
        found = {r.pk: r for r in BacktestRun.objects.select_related("instrument__exchange").defer(None)
                 .filter(pk__in=ids)}
        missing = [i for i in ids if i not in found]
        if missing:
            error = "no run " + ", ".join(f"#{i}" for i in missing)
        else:
            runs = [found[i] for i in ids]
            not_done = [f"#{r.pk} ({r.status})" for r in runs if r.status != BacktestRun.Status.DONE]
            if not_done:
                error = "only finished runs can be compared: " + ", ".join(not_done)
    if error:
        return render(request, "lab/compare.html", {"nav": "lab", "error": error, "runs": []}, status=400)
    per_run = max(100, charts.MAX_POINTS // len(runs))
    curves = []
    for r in runs:
        t, e = series_unpack(r.series)
        td, ed = charts.minmax_decimate(t, e, per_run)
        curves.append({"label": f"#{r.pk} {r.name}"[:60], "t": td.tolist(), "equity": ed.tolist()})
    base = _figure_values(runs[0])
    rows = []
    for key, f in base.items():
        cells = []
        for i, r in enumerate(runs):
            g = _figure_values(r).get(key) or {}
            cell = {"text": g.get("display", "n/a"), "delta": "", "delta_css": ""}
            if i and g.get("value") is not None and f.get("value") is not None:
                d = g["value"] - f["value"]
                cell["delta"] = _delta_text(key, f.get("unit", ""), d)
                better = d > 0 if key not in ("max_drawdown", "fees") else d < 0
                cell["delta_css"] = "" if abs(d) < 1e-12 or key in ("trades", "trades_per_day", "exposure") \
                    else ("pos" if better else "neg")
            cells.append(cell)
        rows.append({"key": key, "label": f["label"], "formula": f.get("formula", ""), "cells": cells})
    flat = [_flatten(r.settings or {}) for r in runs]
    keys = sorted(set().union(*flat))
    setting_rows = [{"key": k, "values": [fl.get(k, "—") for fl in flat]} for k in keys
                    if len({fl.get(k, "—") for fl in flat}) > 1]
    return render(request, "lab/compare.html", {
        "nav": "lab", "runs": runs, "figure_rows": rows, "setting_rows": setting_rows,
        "same_fingerprint": len({r.fingerprint for r in runs}) == 1, "chart_data": {"runs": curves},
        "plotly_version": _plotly_version(),
    })


# --- success criteria and the paper desk ----------------------------------------------------------------------


def _criteria_initial() -> dict[str, Any]:
    row = success_criteria()
    return {k: getattr(row, k) for k in CriteriaForm.LABELS}


@require_http_methods(["GET", "POST"])
def criteria_page(request: HttpRequest) -> HttpResponse:
    """GET: the gates and the paper desk judged over ?start=&end= (default: the last 30 days of data time).
    POST (operators): save the gates with a reason (audited)."""
    status = 200
    errors: list[str] = []
    reason = ""
    if request.method == "POST":
        if not request_is_operator(request):
            raise PermissionDenied("only operators can edit the success criteria")
        form = CriteriaForm(request.POST)
        reason = (request.POST.get("reason") or "").strip()
        if form.is_valid():
            try:
                lab_criteria_update(actor=request.user, reason=form.cleaned_data["reason"], **form.gates())
            except LabError as e:
                errors = [m for msgs in e.errors.values() for m in msgs]
            else:
                messages.success(request, "Success criteria saved; new runs and the paper desk are judged by them.")
                return redirect(reverse("lab:criteria") + ("?" + request.GET.urlencode() if request.GET else ""))
        else:
            errors = form.error_lines()
        status = 400
    else:
        form = CriteriaForm(initial=_criteria_initial())
    today = desk_now().astimezone(UTC).date()
    period = PeriodForm(request.GET if "start" in request.GET or "end" in request.GET else None,
                        initial={"start": today - timedelta(days=30), "end": today + timedelta(days=1)})
    if period.is_bound and period.is_valid():
        start, end = period.cleaned_data["start"], period.cleaned_data["end"]
    elif not period.is_bound:
        start, end = today - timedelta(days=30), today + timedelta(days=1)
    else:
        start = end = None
        status = max(status, 400)
    paper = None
    if start and end:
        paper = paper_record(start=start, end=end)
        paper["gates"] = gate_rows(paper["gates"])
    return render(request, "lab/criteria.html", {
        "nav": "lab", "form": form, "gate_errors": errors, "reason": reason, "period": period, "paper": paper,
        "criteria_row": success_criteria(),
    }, status=status)
