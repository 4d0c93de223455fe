"""Forms of the lab pages: raw POST/GET strings -> typed values with clear messages. The domain rules (a range
without stored bars, end <= start, an empty ghost selection, the engine's config ranges) are checked ONCE, by
`apps.lab.services.lab_settings_validate`, which the `backtest` command calls too; these forms only read the
syntax and build the settings dict it takes, then show its messages next to the fields.

`ghost_readiness` says, BEFORE a run, which ghosts will be idle for lack of an input and why, from what is
stored for the instrument and range (`apps.lab.selectors.data_coverage`).
"""

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from django import forms
from django.utils import timezone

from apps.common.parsing import ParseError, parse_id, parse_json
from apps.dashboard.views_risk import LIMIT_SPECS
from apps.engine.registry import GHOSTS, inputs_for, warmup_minutes_for
from apps.engine.types import ConfigError
from apps.market.models import Instrument

DATETIME_FORMATS = ["%Y-%m-%d", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M"]
DIRECTIONS = [("both", "long and short"), ("long", "long only"), ("short", "short only")]
SIZING_MODES = [
    ("risk", "risk-based (the desk's: risk % of equity ÷ stop distance)"),
    ("stake", "fixed stake per trade (quote currency)"),
    ("equity_pct", "% of current equity per trade (notional)"),
]


def _utc(value: datetime | None) -> datetime | None:
    # The page says UTC: the typed wall time is UTC whatever the server's TIME_ZONE (as the History page).
    if value is None:
        return None
    naive = timezone.make_naive(value) if timezone.is_aware(value) else value
    return naive.replace(tzinfo=UTC)


def _decimal(raw: str, label: str, unit: str) -> Decimal:
    try:
        d = Decimal(raw.strip().replace(",", ""))
    except (InvalidOperation, ValueError):
        raise forms.ValidationError(f"{label}: {raw[:40]!r} is not a number ({unit})") from None
    if not d.is_finite():
        raise forms.ValidationError(f"{label}: must be a finite number ({unit})")
    return d


def _float(raw: str, label: str, unit: str) -> float:
    return float(_decimal(raw, label, unit))


class LabRunForm(forms.Form):
    """The new-run form. Ghost rows and risk-limit fields are built from the engine's registry and RiskLimits,
    so a new ghost kind or limit shows up here without touching the form.

    Per ghost kind K: `g_K_on` (use it), `g_K_name`, `g_K_params` (JSON object of overrides; `{}` = the
    defaults), `g_K_direction`. Per limit L: `limit_L`. Fee fields left blank take the instrument's exchange
    FillModel (the service fills them in), so the defaults follow the instrument.
    """

    name = forms.CharField(max_length=200, required=False, strip=True)
    instrument = forms.ModelChoiceField(
        queryset=Instrument.objects.select_related("exchange").order_by("id"),
        error_messages={"required": "choose an instrument", "invalid_choice": "no such instrument"},
    )
    start = forms.DateTimeField(input_formats=DATETIME_FORMATS, error_messages={
        "required": "enter the first day, e.g. 2025-05-20 (UTC)", "invalid": "start: enter a date as YYYY-MM-DD (UTC)"})
    end = forms.DateTimeField(input_formats=DATETIME_FORMATS, error_messages={
        "required": "enter the end day (exclusive), e.g. 2025-08-18 (UTC)",
        "invalid": "end: enter a date as YYYY-MM-DD (UTC)"})
    start_capital = forms.CharField(max_length=32, error_messages={"required": "enter the start capital, e.g. 10000"})
    taker_fee = forms.CharField(max_length=32, required=False)
    maker_fee = forms.CharField(max_length=32, required=False)
    slippage_bps = forms.CharField(max_length=32, required=False)
    sizing_mode = forms.ChoiceField(choices=SIZING_MODES, initial="risk", error_messages={
        "invalid_choice": "sizing must be one of " + ", ".join(k for k, _ in SIZING_MODES)})
    stake = forms.CharField(max_length=32, required=False)
    equity_pct = forms.CharField(max_length=32, required=False)
    auto_disable = forms.BooleanField(required=False)
    kill_switch = forms.BooleanField(required=False)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.kinds = list(GHOSTS)
        for kind in self.kinds:
            self.fields[f"g_{kind}_on"] = forms.BooleanField(required=False)
            self.fields[f"g_{kind}_name"] = forms.CharField(max_length=64, required=False, strip=True)
            self.fields[f"g_{kind}_params"] = forms.CharField(required=False, strip=True)
            self.fields[f"g_{kind}_direction"] = forms.ChoiceField(
                choices=DIRECTIONS, required=False,
                error_messages={"invalid_choice": f"{kind}: direction must be both, long or short"})
        for s in LIMIT_SPECS:
            self.fields[f"limit_{s.name}"] = (forms.BooleanField(required=False) if s.kind == "bool"
                                              else forms.CharField(max_length=32, required=False))

    # --- syntax -----------------------------------------------------------------------------------------

    def clean_start(self) -> datetime | None:
        return _utc(self.cleaned_data.get("start"))

    def clean_end(self) -> datetime | None:
        return _utc(self.cleaned_data.get("end"))

    def clean_start_capital(self) -> Decimal:
        return _decimal(self.cleaned_data["start_capital"], "Start capital", "quote currency")

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        for kind in self.kinds:
            raw = (data.get(f"g_{kind}_params") or "").strip()
            if not data.get(f"g_{kind}_on"):
                continue
            try:
                # parse_json: json.loads let 2,000 nested "[" (RecursionError) and a 4,301-digit integer through
                params = parse_json(raw) if raw else {}
            except ParseError as e:
                self.add_error(f"g_{kind}_params", f"{kind} parameters: {e}")
                continue
            if not isinstance(params, dict):
                self.add_error(f"g_{kind}_params",
                               f'{kind} parameters must be a JSON object, e.g. {{"move_pct": 1.5}}; {{}} = defaults')
                continue
            data[f"g_{kind}_params"] = params
        for name, label, unit in (("taker_fee", "Taker fee", "fraction of notional, 0.001 = 0.1 %"),
                                  ("maker_fee", "Maker fee", "fraction of notional"),
                                  ("slippage_bps", "Slippage", "basis points"),
                                  ("stake", "Stake", "quote currency per trade"),
                                  ("equity_pct", "Equity %", "% of equity per trade")):
            raw = (data.get(name) or "").strip()
            if raw:
                try:
                    data[name] = _float(raw, label, unit)
                except forms.ValidationError as e:
                    self.add_error(name, e)
            else:
                data[name] = None
        limits: dict[str, Any] = {}
        for s in LIMIT_SPECS:
            key = f"limit_{s.name}"
            if s.kind == "bool":
                limits[s.name] = bool(data.get(key))
                continue
            raw = (data.get(key) or "").strip()
            if not raw:
                self.add_error(key, f"{s.label}: enter a value ({s.unit})")
                continue
            try:
                value: float = int(raw) if s.kind == "int" else float(raw)
            except ValueError:
                self.add_error(key, f"{s.label}: {raw[:40]!r} is not a "
                                    f"{'whole number' if s.kind == 'int' else 'number'} ({s.unit})")
                continue
            if not math.isfinite(value):
                self.add_error(key, f"{s.label}: must be a finite number ({s.unit})")
                continue
            limits[s.name] = value
        data["limits"] = limits
        return data

    # --- what the service takes ---------------------------------------------------------------------------

    def selected_kinds(self) -> list[str]:
        return [k for k in self.kinds if self.cleaned_data.get(f"g_{k}_on")]

    def settings_data(self) -> dict[str, Any]:
        """The settings dict `lab_settings_validate` reads (call after is_valid())."""
        d = self.cleaned_data
        fee = {k: d[k] for k in ("taker_fee", "maker_fee", "slippage_bps") if d.get(k) is not None}
        sizing: dict[str, Any] = {"mode": d["sizing_mode"]}
        if d.get("stake") is not None:
            sizing["stake"] = d["stake"]
        if d.get("equity_pct") is not None:
            sizing["equity_pct"] = d["equity_pct"]
        out: dict[str, Any] = {
            "instrument_id": d["instrument"].pk,
            "start": d["start"].isoformat(),
            "end": d["end"].isoformat(),
            "ghosts": [
                {"kind": k, "name": d.get(f"g_{k}_name") or k, "params": d.get(f"g_{k}_params") or {},
                 "direction": d.get(f"g_{k}_direction") or "both"}
                for k in self.selected_kinds()
            ],
            "start_capital": str(d["start_capital"]),
            "limits": d["limits"],
            "sizing": sizing,
            "auto_disable": bool(d.get("auto_disable")),
            "kill_switch": bool(d.get("kill_switch")),
        }
        if fee:
            out["fee"] = fee
        return out

    def apply_lab_error(self, errors: dict[str, list[str]]) -> None:
        """Put the service's messages (`LabError.errors`: "start", "ghosts[1].params" ...) next to the fields
        they are about; the rest go on top of the form."""
        kinds = self.selected_kinds()
        simple = {"instrument_id": "instrument", "start": "start", "end": "end", "start_capital": "start_capital",
                  "sizing": "sizing_mode"}
        for key, messages in errors.items():
            field = simple.get(key)
            if key.startswith("ghosts[") and "]." in key:
                i, _, part = key[len("ghosts["):].partition("].")
                if i.isdigit() and int(i) < len(kinds):
                    kind = kinds[int(i)]
                    field = f"g_{kind}_{'params' if part not in ('direction', 'name') else part}"
                    messages = [m if m.startswith(kind) else f"{kind}: {m}" for m in messages]
            for m in messages:
                if field is None and key not in ("__all__", "ghosts"):
                    m = f"{key}: {m}"
                self.add_error(field, m)

    def error_lines(self) -> list[str]:
        return [str(e) for errors in self.errors.values() for e in errors]

    def ghost_rows(self) -> list[dict[str, Any]]:
        """One row per registered kind for the template: its bound field values and errors."""
        rows = []
        for kind in self.kinds:
            spec = GHOSTS[kind]
            rows.append({
                "kind": kind,
                "title": spec.title,
                "desk": getattr(spec, "desk", True),
                "on": self[f"g_{kind}_on"],
                "name": self[f"g_{kind}_name"],
                "params": self[f"g_{kind}_params"],
                "direction": self[f"g_{kind}_direction"],
                "warmup_minutes": warmup_minutes_for(kind),
            })
        return rows

    def limit_rows(self) -> list[dict[str, Any]]:
        return [{"spec": s, "field": self[f"limit_{s.name}"]} for s in LIMIT_SPECS]


def params_text(params: dict[str, Any] | None) -> str:
    """Ghost params as the textarea shows them: `{}` for the defaults, else indented with sorted keys."""
    return json.dumps(params or {}, indent=1, sort_keys=True) if params else "{}"


# --- which ghosts will be idle, and why, said before the run ------------------------------------------------

# How the lab names each input a ghost may need (which kinds need which: the engine registry's GhostSpec.inputs).
INPUT_WORDS = {
    "taker": "taker buy/sell volume (klines with a taker split, or trades)",
    "whale": "whale volumes (built from trade prints; kline-only history has no trade sizes)",
    "liq": "liquidation volumes (a forceOrder recording imported for this instrument)",
}


def required_inputs(kind: str, params: dict[str, Any] | None = None) -> list[str]:
    """The coverage keys `kind` needs with `params` (with the defaults' when the params are bad: the form says so)."""
    try:
        return list(inputs_for(kind, params or {}))
    except ConfigError:
        return list(inputs_for(kind))


@dataclass(frozen=True)
class Readiness:
    kind: str
    state: str  # "ready" | "partial" | "idle"
    notes: tuple[str, ...]


def _days(minutes: float) -> str:
    return f"{minutes / 1440:.1f} days" if minutes >= 1440 else f"{minutes / 60:.1f} h" if minutes >= 120 \
        else f"{minutes:.0f} min"


def ghost_readiness(kind: str, params: dict[str, Any] | None, coverage: dict[str, Any]) -> Readiness:
    """Whether `kind` (with `params`) can trade on the stored data `coverage` describes, in words.

    idle: no bar in the range has an input it needs, or the range is shorter than its warm-up; partial: some
    bars lack an input (the ghost is idle on those), or the warm-up eats part of the range; ready otherwise.
    """
    bars = int(coverage.get("candles") or 0)
    notes: list[str] = []
    state = "ready"
    if bars == 0:
        return Readiness(kind, "idle", ("no candles stored in this range",))
    for key in required_inputs(kind, params):
        have = int(coverage.get(key) or 0)
        if have == 0:
            state = "idle"
            notes.append(f"idle: no {INPUT_WORDS[key]} in this range")
        elif have < bars:
            state = "partial" if state == "ready" else state
            notes.append(f"{INPUT_WORDS[key].split(' (')[0]} in {have:,} of {bars:,} bars ({have / bars:.0%}); "
                         "idle on the others")
    try:
        warm = warmup_minutes_for(kind, params or {})
    except ConfigError:
        warm = warmup_minutes_for(kind)  # bad params: the form shows that error; say the default warm-up
    # a run warms its ghosts on the stored history before its start (apps.lab.services.warmup_span): only the
    # part of the warm-up that history does not cover is spent inside the range
    before = min(warm, int(coverage.get("before_minutes") or 0))
    inside = warm - before
    if inside >= bars:
        state = "idle"
        notes.append(f"idle: needs {_days(warm)} of history before its first signal; the range has {_days(bars)}"
                     + (f" and {_days(before)} are stored before it" if before else ""))
    elif inside > 60:
        if state == "ready":
            state = "partial"
        notes.append(f"no signal in the first {_days(inside)} of the range (warm-up"
                     + (f"; {_days(before)} of the {_days(warm)} stored before the start)" if before else ")"))
    elif warm > 60:
        notes.append(f"warms up on {_days(before)} of stored history before the start")
    return Readiness(kind, state, tuple(notes))


def trend_gate_note(kinds: list[str], coverage: dict[str, Any]) -> str:
    """The trend filter in the set gates EVERY ghost, and blocks every side while it warms up."""
    if "trend_filter" not in kinds:
        return "No trend_filter in the set: no trend gate (every side is allowed)."
    warm = warmup_minutes_for("trend_filter")
    inside = warm - min(warm, int(coverage.get("before_minutes") or 0))
    if inside <= 0:
        return ("trend_filter in the set: its gate applies to every ghost; it warms up on the history stored "
                "before the start, so it gates from the first bar.")
    return (f"trend_filter in the set: its gate applies to every ghost and blocks every side while it warms up, "
            f"so nothing trades in the first {_days(inside)} of the range (no stored history before the start "
            f"covers its {_days(warm)} warm-up).")


# --- the other pages' small forms ----------------------------------------------------------------------------

REASONS = [("stop", "stop"), ("target", "target"), ("time", "time"), ("end_of_data", "end of data"),
           ("kill_switch", "kill switch")]


class LabTradeFilterForm(forms.Form):
    """GET filters of a run's trades table and its CSV. Every field optional; a bad value is an error shown on
    the page (never a 500, never ignored)."""

    ghost = forms.CharField(max_length=64, required=False, strip=True)
    side = forms.ChoiceField(choices=[("", "both sides"), ("long", "long"), ("short", "short")], required=False,
                             error_messages={"invalid_choice": "side must be long or short"})
    reason = forms.ChoiceField(choices=[("", "any exit"), *REASONS], required=False,
                               error_messages={"invalid_choice": "exit reason must be one of "
                                               + ", ".join(k for k, _ in REASONS)})

    def __init__(self, *args: Any, ghosts: list[str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ghost_names = ghosts or []

    def clean_ghost(self) -> str:
        g = self.cleaned_data["ghost"]
        if g and g not in self.ghost_names:
            raise forms.ValidationError(f"no ghost {g[:64]!r} in this run")
        return g

    def selector_kwargs(self) -> dict[str, Any]:
        d = self.cleaned_data
        return {"ghost": d.get("ghost") or None,
                "side": {"long": 1, "short": -1}.get(d.get("side") or ""),
                "reason": d.get("reason") or None}

    def error_lines(self) -> list[str]:
        return [str(e) for errors in self.errors.values() for e in errors]


def parse_run_ids(values: list[str]) -> tuple[list[int], str]:
    """`?runs=1,2,3` or `?runs=1&runs=2` -> (ids in the given order, without repeats; error text or "")."""
    ids: list[int] = []
    for v in values:
        for part in v.split(","):
            part = part.strip()
            if not part:
                continue
            run_id = parse_id(part)  # not isdigit(): "²" passed it and failed int()
            if run_id is None:
                return [], f"runs: {part[:20]!r} is not a run number"
            if run_id not in ids:
                ids.append(run_id)
    if not 2 <= len(ids) <= 4:
        return ids, f"choose 2 to 4 runs to compare (got {len(ids)})"
    return ids, ""


class CriteriaForm(forms.Form):
    """The success criteria's gates (operators), with the reason written to the audit log. Units are the
    model's: percent where it says %, quote currency for the daily profit and its capital basis."""

    win_rate_min_pct = forms.FloatField(min_value=0, max_value=100)
    sharpe_min = forms.FloatField(min_value=-10, max_value=20)
    max_drawdown_max_pct = forms.FloatField(min_value=0, max_value=100)
    profitable_streak_days = forms.IntegerField(min_value=0, max_value=3650)
    daily_loss_max_pct = forms.FloatField(min_value=0, max_value=100)
    daily_profit_min = forms.DecimalField(min_value=0, max_digits=20, decimal_places=2)
    capital_basis = forms.DecimalField(min_value=Decimal("0.01"), max_digits=20, decimal_places=2)
    reason = forms.CharField(max_length=500, strip=True,
                             error_messages={"required": "a reason is required: it is written to the audit log"})

    LABELS: dict[str, tuple[str, str, str]] = {
        "win_rate_min_pct": ("Win rate above", "%", "phase 1: winning trades ÷ closed trades × 100 must exceed this"),
        "sharpe_min": ("Sharpe above", "ratio", "phase 1: daily-return Sharpe (√365 annualised) must exceed this"),
        "max_drawdown_max_pct": ("Max drawdown below", "%", "phase 1: the deepest fall from a peak, % of that peak"),
        "profitable_streak_days": ("Profitable streak", "days", "phase 1: this many consecutive days with net P&L > 0"),
        "daily_loss_max_pct": ("No daily loss above", "% of start-of-day equity",
                               "phase 2: no UTC day may lose more than this"),
        "daily_profit_min": ("Daily profit above", "quote currency", "phase 2: mean daily net P&L, per capital basis"),
        "capital_basis": ("… per capital of", "quote currency", "phase 2: the profit target is scaled to this capital"),
    }

    def gate_rows(self) -> list[dict[str, Any]]:
        return [{"name": n, "field": self[n], "label": lab, "unit": unit, "help": h}
                for n, (lab, unit, h) in self.LABELS.items()]

    def gates(self) -> dict[str, Any]:
        return {k: v for k, v in self.cleaned_data.items() if k != "reason"}

    def error_lines(self) -> list[str]:
        return [f"{self.LABELS.get(f, (f,))[0]}: {e}" if f != "__all__" else str(e)
                for f, errors in self.errors.items() for e in errors]


class PeriodForm(forms.Form):
    """A UTC period [start, end) for judging the paper desk against the criteria."""

    start = forms.DateField(error_messages={"invalid": "from: enter a date as YYYY-MM-DD"})
    end = forms.DateField(error_messages={"invalid": "to: enter a date as YYYY-MM-DD"})

    def clean(self) -> dict[str, Any]:
        d = super().clean()
        if d.get("start") and d.get("end") and d["end"] <= d["start"]:
            raise forms.ValidationError("the period's end must be after its start (end is exclusive)")
        return d

