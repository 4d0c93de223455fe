"""Risk page (limits, kill switch, today's loss against the daily limit), the signal detail page ("why did
this ghost's signal not trade?") and the ghosts page's performance figures and auto-disable rules.

Thin like the other views: parse the form, call one service, render. Roles are enforced here on the
server: a viewer's POST gets 403 before its input is read, whatever the page showed. A refused value
(the engine's config validation, through RiskError/GhostError) is shown next to the form with a 400,
and nothing is saved.
"""

import dataclasses
import math
import typing
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import ObjectDoesNotExist, PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from apps.common.parsing import ParseError, parse_int
from apps.dashboard.context_processors import request_is_operator
from apps.engine.performance import (
    PERIODS_PER_YEAR,
    AutoDisableRules,
    Performance,
    ScoreWeights,
    performance_score,
)
from apps.engine.risk import RiskLimits
from apps.engine.types import ConfigError
from apps.ghosts.models import Ghost
from apps.ghosts.selectors import GhostRow, ghost_rows
from apps.ghosts.services import GhostError, ghost_update_auto_disable
from apps.market.models import Instrument
from apps.revenue.selectors import performance_by_ghost
from apps.signals.models import Fate, Signal
from apps.trading.models import Position
from apps.trading.risk_selectors import kill_switch, risk_limits, risk_state
from apps.trading.risk_services import RiskError, kill_switch_reset, kill_switch_trip, risk_limits_set

# --- form fields with their units ----------------------------------------------------------------------


@dataclass(frozen=True)
class FieldSpec:
    """One editable engine config field: its type (from the dataclass), label, unit and help text."""

    name: str
    kind: str  # "int" | "float" | "bool"
    label: str
    unit: str
    help: str


# Words for the operator; the units are the engine's own (RiskLimits / AutoDisableRules docstrings), so a
# value typed here is exactly the value the engine reads. A field missing here fails test_every_field_has_help.
LIMIT_HELP: dict[str, tuple[str, str, str]] = {
    "risk_per_trade_pct": ("Risk per trade", "% of equity",
                           "lost if the stop is hit, before fees: size = equity × this % ÷ stop distance "
                           "× trend and confidence multipliers"),
    "max_notional_pct": ("Max position notional", "% of equity", "cap on one position's notional (price × quantity)"),
    "max_open_positions": ("Max open positions", "positions", "open at once over all ghosts and instruments"),
    "max_open_per_ghost": ("Max open per ghost", "positions", "open at once per ghost (the desk holds one)"),
    "max_trades_per_day": ("Max trades per day", "entries per UTC day", "new entries refused after this many"),
    "max_daily_loss_pct": ("Daily loss limit", "% of start-of-day equity",
                           "realised + unrealised P&L since 00:00 UTC; reaching it trips the kill switch"),
    "ghost_drawdown_stop_pct": ("Ghost drawdown stop", "% of start capital",
                                "a ghost whose own peak-to-now loss reaches this is disabled"),
    "max_total_notional_pct": ("Max total notional", "% of equity, 0 = no cap",
                               "open notional (quantity × last price, in the account currency) over every "
                               "instrument, the new entry included; above it the entry is refused"),
    "max_instrument_notional_pct": ("Max notional per instrument", "% of equity, 0 = no cap",
                                    "open notional on one instrument, the new entry included"),
    "flatten_on_kill": ("Flatten on kill", "yes/no",
                        "when the kill switch trips, also close every open position at the last price"),
}
RULE_HELP: dict[str, tuple[str, str, str]] = {
    "min_trades": ("Min trades", "closed trades", "nothing is judged before this many closed trades"),
    "win_rate_floor": ("Win-rate floor", "fraction (0.30 = 30 %)", "disabled below it"),
    "profit_factor_floor": ("Profit-factor floor", "ratio", "gross profit ÷ gross loss below it: disabled"),
    "max_drawdown": ("Drawdown ceiling", "fraction of peak equity (0.10 = 10 %)", "a deeper drawdown: disabled"),
    "loss_target_multiple": ("Loss × target", "× the target amount",
                             "a loss in the target's period larger than this multiple of the target: disabled "
                             "(0 turns the rule off; needs a target)"),
}


def _specs(cls: type, help_: dict[str, tuple[str, str, str]]) -> list[FieldSpec]:
    hints = typing.get_type_hints(cls)
    kinds = {int: "int", float: "float", bool: "bool"}
    return [
        FieldSpec(f.name, kinds[hints[f.name]], *help_.get(f.name, (f.name, "", "")))
        for f in dataclasses.fields(cls)
    ]


LIMIT_SPECS = _specs(RiskLimits, LIMIT_HELP)
RULE_SPECS = _specs(AutoDisableRules, RULE_HELP)


def _show(value: Any) -> str:
    """A config value in an input box: 1.0 -> "1", 0.3 -> "0.3" (repr round-trips floats exactly)."""
    if isinstance(value, bool):
        return "1" if value else ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _parse(post: Any, specs: list[FieldSpec]) -> tuple[dict[str, Any], list[str]]:
    """Raw POST strings -> typed params for the engine's from_params, plus a message per unreadable field.

    Only the syntax is checked here; the ranges are the engine's (its ConfigError text is shown as is).
    A missing checkbox is False, as browsers send nothing for an unticked box.
    """
    params: dict[str, Any] = {}
    errors: list[str] = []
    for s in specs:
        raw = (post.get(s.name) or "").strip()
        if s.kind == "bool":
            params[s.name] = raw.lower() in ("1", "on", "true", "yes")
            continue
        if not raw:
            errors.append(f"{s.label}: enter a value ({s.unit})")
            continue
        if s.kind == "int":
            # parse_int: ASCII digits, at most 15 of them. int() took 400 nines, then math.isfinite overflowed
            # converting it to float (a 500); it also reads "١٢" as 12.
            try:
                value: float = parse_int(raw)
            except ParseError as e:
                errors.append(f"{s.label}: {e} ({s.unit})")
                continue
        else:
            try:
                value = float(raw)  # never overflows: 1e999 and 400 nines are inf, refused just below
            except ValueError:
                errors.append(f"{s.label}: {raw[:40]!r} is not a number ({s.unit})")
                continue
        if not math.isfinite(value):
            errors.append(f"{s.label}: must be a finite number ({s.unit})")
            continue
        params[s.name] = value
    return params, errors


def _reason(post: Any) -> str:
    return (post.get("reason") or "").strip()


# Django's form CharFields refuse NUL (ProhibitNullCharactersValidator); these hand-read reasons must too:
# SQLite stores one, PostgreSQL refuses the row (a 500 in production). Found by tests/hardening's fuzzing.
NUL_REASON = "Reason: null characters are not allowed"


def _reason_error(reason: str) -> str | None:
    if not reason:
        return "Reason: a reason is required: it is written to the audit log"
    return NUL_REASON if "\x00" in reason else None


# --- risk page ------------------------------------------------------------------------------------------


def _risk_context(*, posted: dict[str, str] | None = None,
                  limit_errors: list[str] | None = None, ks_error: str = "") -> dict[str, Any]:
    limits = risk_limits()
    state = risk_state()
    current = limits.to_params()
    fields = []
    for s in LIMIT_SPECS:
        value = posted.get(s.name, "") if posted is not None else _show(current[s.name])
        fields.append({"spec": s, "value": value, "current": current[s.name]})
    today = state.equity - state.day_start_equity
    limit_amount = state.day_start_equity * limits.max_daily_loss_pct / 100 if state.day_start_equity > 0 else None
    used = (max(0.0, -today) / limit_amount * 100) if limit_amount else None
    # open notional per instrument (account currency), beside the caps it counts against
    labels = {i.pk: f"{i.symbol} on {i.exchange.code}" for i in
              Instrument.objects.filter(pk__in=state.open_notional_by_instrument).select_related("exchange")}
    notional_rows = [{"label": labels.get(k, str(k)), "notional": v,
                      "pct": v / state.equity * 100 if state.equity > 0 else None}
                     for k, v in sorted(state.open_notional_by_instrument.items(), key=lambda kv: -kv[1])]
    return {
        "notional_rows": notional_rows,
        "notional_pct": state.open_notional / state.equity * 100 if state.equity > 0 else None,
        "nav": "risk",
        "fields": fields,
        "limits": limits,
        "limit_errors": limit_errors or [],
        "ks": kill_switch(),
        "ks_error": ks_error,
        "state": state,
        "today_pnl": today,
        "loss_limit_amount": limit_amount,
        "loss_used_pct": used,
    }


@require_http_methods(["GET", "POST"])
def risk_page(request: HttpRequest) -> HttpResponse:
    """GET: limits, kill switch, today's loss. POST (operators): save the limits with a reason."""
    if request.method == "GET":
        return render(request, "dashboard/risk.html", _risk_context())
    if not request_is_operator(request):  # before reading the input: a viewer learns nothing
        raise PermissionDenied("only operators can edit risk limits")
    posted = {s.name: (request.POST.get(s.name) or "").strip() for s in LIMIT_SPECS}
    params, errors = _parse(request.POST, LIMIT_SPECS)
    reason = _reason(request.POST)
    if why := _reason_error(reason):
        errors.append(why)
    if not errors:
        try:
            risk_limits_set(params=params, actor=request.user, reason=reason)
        except RiskError as e:
            errors.append(str(e))
        else:
            messages.success(request, "Risk limits saved; the next decision uses them.")
            return redirect("dashboard:risk")
    return render(request, "dashboard/risk.html",
                  _risk_context(posted=posted, limit_errors=errors) | {"limit_reason": reason}, status=400)


@require_POST
def kill_switch_trip_view(request: HttpRequest) -> HttpResponse:
    if not request_is_operator(request):
        raise PermissionDenied("only operators can trip the kill switch")
    reason = _reason(request.POST)
    if "\x00" in reason:
        return render(request, "dashboard/risk.html", _risk_context(ks_error=NUL_REASON), status=400)
    flatten = (request.POST.get("flatten") or "").lower() in ("1", "on", "true", "yes")
    if kill_switch().tripped:
        messages.info(request, "The kill switch was already tripped.")
        return redirect("dashboard:risk")
    try:
        kill_switch_trip(actor=request.user, reason=reason, flatten=flatten)
    except RiskError as e:
        return render(request, "dashboard/risk.html", _risk_context(ks_error=str(e)), status=400)
    messages.success(request, "Kill switch TRIPPED: no new entries"
                     + (", open positions are being closed at the last price." if flatten else "."))
    return redirect("dashboard:risk")


@require_POST
def kill_switch_reset_view(request: HttpRequest) -> HttpResponse:
    if not request_is_operator(request):
        raise PermissionDenied("only operators can reset the kill switch")
    reason = _reason(request.POST)
    if "\x00" in reason:
        return render(request, "dashboard/risk.html", _risk_context(ks_error=NUL_REASON), status=400)
    if not kill_switch().tripped:
        messages.info(request, "The kill switch is not tripped; nothing to reset.")
        return redirect("dashboard:risk")
    try:
        kill_switch_reset(actor=request.user, reason=reason)
    except RiskError as e:
        return render(request, "dashboard/risk.html", _risk_context(ks_error=str(e)), status=400)
    messages.success(request, "Kill switch reset: new entries are allowed again.")
    return redirect("dashboard:risk")


# --- signal detail ----------------------------------------------------------------------------------------

# The manager's fates (apps.engine.manager docstring) in plain words; fate_detail adds the numbers.
FATE_WORDS: dict[str, str] = {
    Fate.PENDING: "Not decided yet: the signal manager decides when the bar's evaluation finishes "
                  "(a taken signal also waits here until its entry is filled).",
    Fate.TAKEN: "Traded: it scored best on its bar and the risk check accepted it.",
    Fate.OUTSCORED: "Not traded: another ghost's draft on the same instrument and bar scored higher, "
                    "and only one draft per bar trades.",
    Fate.BLOCKED_TREND: "Not traded: the trend filter refused this side (no longs in a down-trend, no shorts "
                        "in an up-trend, nothing in extreme volatility).",
    Fate.BLOCKED_RISK: "Not traded: a risk limit refused the entry.",
    Fate.POSITION_OPEN: "Not traded: the ghost already held a position; a new signal does not add to it or "
                        "reverse it.",
    Fate.GHOST_DISABLED: "Not traded: the ghost was disabled when its bar was decided.",
    Fate.STALE: "Not traded: the draft was decided too long after its bar closed (a late worker or a backlog).",
    Fate.CONFLICT: "Not traded: two strong drafts disagreed on the side with scores too close to tell apart, "
                   "so neither traded.",
}
# blocked_risk details start with the limit's name (apps.engine.risk.risk_check): "max_open_positions: ..."
RISK_LIMIT_WORDS: dict[str, str] = {
    "kill_switch": "the kill switch was tripped",
    "max_open_positions": "too many positions were open overall",
    "max_open_per_ghost": "the ghost already had its maximum of open positions",
    "max_trades_per_day": "the day's maximum number of trades was reached",
    "max_daily_loss": "today's loss had reached the daily loss limit",
    "size": "the position size came out zero (equity, stop distance or multipliers)",
    "max_total_notional": "the open notional over every instrument would pass its cap",
    "max_instrument_notional": "the open notional on this instrument would pass its cap",
    "currency": "the instrument is quoted in a currency the desk does not convert into the account's",
    "lot": "the quantity is below the exchange's minimum for the instrument",
}


def fate_words(fate: str, detail: str) -> str:
    """A fate and its detail in one plain sentence for the page (the raw detail is shown beside it)."""
    text = FATE_WORDS.get(fate, fate.replace("_", " "))
    if fate == Fate.BLOCKED_RISK:
        limit = detail.partition(":")[0].strip()
        if limit in RISK_LIMIT_WORDS:
            text = f"Not traded: the risk check refused it because {RISK_LIMIT_WORDS[limit]}."
    return text


def _distance_pct(a: Any, b: Any) -> float | None:
    a, b = float(a), float(b)
    return abs(b - a) / a * 100 if a > 0 else None


@require_GET
def signal_detail(request: HttpRequest, signal_id: int) -> HttpResponse:
    s = Signal.objects.select_related("ghost", "instrument__exchange").filter(pk=signal_id).first()
    if s is None:
        raise Http404(f"no signal {signal_id}")
    rivals = list(
        Signal.objects.filter(instrument_id=s.instrument_id, bar_time=s.bar_time)
        .exclude(pk=s.pk).select_related("ghost").order_by("ghost__name", "id")
    )
    position = Position.objects.filter(signal_id=s.pk).first()
    stop_pct, target_pct = _distance_pct(s.entry, s.stop), _distance_pct(s.entry, s.target)
    return render(request, "dashboard/signal_detail.html", {
        "nav": "overview",
        "s": s,
        "why": fate_words(s.fate, s.fate_detail),
        "rivals": [{"s": r, "why": fate_words(r.fate, r.fate_detail)} for r in rivals],
        "position": position,
        "stop_pct": stop_pct,
        "target_pct": target_pct,
        "reward_risk": target_pct / stop_pct if stop_pct and target_pct is not None else None,
    })


# --- ghosts page: performance and auto-disable rules -----------------------------------------------------

SCORE_WEIGHTS = ScoreWeights()  # the weights the signal manager scores with (its default)
FREQ = "1D"  # what ghost_performance and the manager use: daily returns, 365 per year
PERIOD_WORD = {"1h": "hourly", "1D": "daily", "1W": "weekly"}


@dataclass(frozen=True)
class Figure:
    """One performance figure as shown: text ("n/a" when undefined), the formula, the sample and why n/a."""

    key: str
    label: str
    text: str
    formula: str
    sample: str
    na_why: str = ""


def _pct(x: float, places: int = 1) -> str:
    return f"{x * 100:.{places}f}%".replace("-", "−")


def performance_figures(p: Performance, *, target_set: bool, w: ScoreWeights = SCORE_WEIGHTS) -> list[Figure]:
    """The engine's figures with their formulas (apps.engine.performance docstring) and samples."""
    trades = f"{p.trades} closed trade{'s' if p.trades != 1 else ''}"
    periods = f"{p.periods} {PERIOD_WORD[FREQ]} period{'s' if p.periods != 1 else ''}"
    ppy = PERIODS_PER_YEAR[FREQ]
    no_trades = "no closed trades yet"
    few_periods = f"fewer than 2 {PERIOD_WORD[FREQ]} periods ({p.periods})"

    def ratio(x: float, why_nan: str, inf_text: str) -> tuple[str, str]:
        if math.isnan(x):
            return "n/a", why_nan
        if math.isinf(x):
            return inf_text, ""
        return f"{x:.2f}", ""

    wr_text, wr_why = ("n/a", no_trades) if math.isnan(p.win_rate) else (_pct(p.win_rate), "")
    pf_text, pf_why = ratio(p.profit_factor, no_trades if p.trades == 0 else "no profit and no loss",
                            "∞ (no losing trade)")
    sh_text, sh_why = ratio(p.sharpe, few_periods if p.periods < 2 else "returns did not vary", "∞")
    so_text, so_why = ratio(p.sortino, few_periods if p.periods < 2 else "no losing period and no gain",
                            "∞ (no losing period)")
    dd_text, dd_why = ("n/a", no_trades) if p.trades == 0 else (_pct(p.max_drawdown, 2), "")
    if math.isnan(p.target_progress):
        tp_text, tp_why = "n/a", "no target set" if not target_set else "target is zero"
    else:
        tp_text, tp_why = _pct(p.target_progress), ""
    score = performance_score(p, w)
    score_text = f"{score:.2f}" + (f" (neutral: fewer than {w.min_trades} trades)" if p.trades < w.min_trades else "")
    return [
        Figure("win_rate", "Win rate", wr_text,
               "win rate = winning trades ÷ closed trades; a win is net P&L (after fees) > 0",
               f"{p.wins} of {trades}", wr_why),
        Figure("profit_factor", "Profit factor", pf_text,
               "profit factor = gross profit ÷ gross loss = Σ winning net P&L ÷ |Σ losing net P&L|",
               f"{trades}: +{p.gross_profit:.2f} / −{p.gross_loss:.2f} {settings.HFT_QUOTE_CURRENCY}"
               if p.trades else trades, pf_why),
        Figure("sharpe", "Sharpe", sh_text,
               f"Sharpe = mean(r) ÷ std(r, ddof=1) × √{ppy}; r = {PERIOD_WORD[FREQ]} simple returns of the "
               "equity curve sampled at fixed times, risk-free rate 0", periods, sh_why),
        Figure("sortino", "Sortino", so_text,
               f"Sortino = mean(r) ÷ downside deviation × √{ppy}; downside deviation = √mean(min(r, 0)²) over all "
               f"{PERIOD_WORD[FREQ]} periods (target return 0)", periods, so_why),
        Figure("max_drawdown", "Max drawdown", dd_text,
               "max drawdown = max over t of (peak_t − equity_t) ÷ peak_t; equity = start capital + cumulative "
               "net P&L at each close", trades, dd_why),
        Figure("target_progress", "Target progress", tp_text,
               "target progress = P&L in the target's period (realised + unrealised, net of fees) ÷ target amount",
               "this target period", tp_why),
        Figure("score", "Score", score_text,
               f"score (0..1) = {w.w_win_rate:g} × win rate + {w.w_profit_factor:g} × min(PF ÷ {w.pf_full:g}, 1) + "
               f"{w.w_sharpe:g} × clip(Sharpe ÷ {w.sharpe_full:g}, 0, 1) + {w.w_drawdown:g} × (1 − min(DD ÷ "
               f"{w.dd_zero:g}, 1)) + {w.w_target:g} × clip(progress, 0, 1); undefined parts count 0.5; "
               f"fewer than {w.min_trades} trades: 0.5", f"{trades}, {periods}"),
    ]


def _rule_fields(ghost: Ghost, posted: dict[str, str] | None = None) -> list[dict[str, Any]]:
    try:
        current = AutoDisableRules.from_params(ghost.auto_disable).to_params()
    except ConfigError:
        current = AutoDisableRules().to_params()
    return [{"spec": s, "value": posted.get(s.name, "") if posted is not None else _show(current[s.name])}
            for s in RULE_SPECS]


def ghosts_context(*, rules_errors: dict[int, list[str]] | None = None,
                   rules_posted: dict[int, dict[str, str]] | None = None) -> dict[str, Any]:
    """rows (apps.ghosts.selectors.ghost_rows) plus each ghost's performance figures and auto-disable rules,
    keyed by ghost id for the template's get_item. A fixed number of queries whatever the ghost count."""
    rows: list[GhostRow] = ghost_rows()
    ids = [r.ghost.pk for r in rows]
    # The rows hold each ghost's period P&L already (one read of the day rows, not two).
    perf = performance_by_ghost(ids, period_pnl={r.ghost.pk: float(r.progress.pnl) for r in rows})
    posted = rules_posted or {}
    return {
        "rows": rows,
        "ghost_perf": {r.ghost.pk: performance_figures(perf[r.ghost.pk], target_set=r.progress.amount is not None)
                       for r in rows},
        "ghost_rules": {r.ghost.pk: _rule_fields(r.ghost, posted.get(r.ghost.pk)) for r in rows},
        "rules_errors": rules_errors or {},
    }


@require_POST
def ghost_auto_disable(request: HttpRequest, ghost_id: int) -> HttpResponse:
    """Edit one ghost's auto-disable rules (operators only), with a reason written to the audit log."""
    if not request_is_operator(request):
        raise PermissionDenied("only operators can edit auto-disable rules")
    if not Ghost.objects.filter(pk=ghost_id).exists():
        raise Http404(f"no ghost {ghost_id}")
    params, errors = _parse(request.POST, RULE_SPECS)
    reason = _reason(request.POST)
    if why := _reason_error(reason):
        errors.append(why)
    if not errors:
        try:
            ghost = ghost_update_auto_disable(ghost_id=ghost_id, params=params, actor=request.user, reason=reason)
        except ObjectDoesNotExist:
            raise Http404(f"no ghost {ghost_id}") from None
        except GhostError as e:
            errors.append(str(e))
        else:
            messages.success(request, f"{ghost.name}: auto-disable rules saved; the next review uses them.")
            return redirect(reverse("dashboard:ghosts") + f"#ghost-{ghost.pk}", permanent=False)
    posted = {s.name: (request.POST.get(s.name) or "").strip() for s in RULE_SPECS}
    ctx = ghosts_context(rules_errors={ghost_id: errors}, rules_posted={ghost_id: posted})
    return render(request, "dashboard/ghosts.html",
                  {"nav": "ghosts", "toggle_errors": {}, "params_errors": {}, **ctx}, status=400)
