"""Forms of the research pages: raw POST strings -> the settings dict `apps.research.services.study_settings_validate`
takes, with clear messages. As in the lab, the domain rules (bounds of each parameter, folds that fit the range,
stored bars, the engine's config ranges) are checked ONCE, by the service the `optimize` command calls too; the
forms read the syntax, build the dict and put the service's messages next to the fields they are about.

The study form reuses the lab's new-run form (`apps.lab.forms.LabRunForm`) for what a study shares with a
run: instrument, range, capital, sizing, fees, the toggles and the risk limits, so the two pages parse those
the same way. On top of it: the target (one ghost kind, or the whole desk), the search space per parameter
(`sp_<kind>__<param>__on|low|high|step|choices`, defaulting from `apps.engine.search_space.default_space`),
the fixed parameters of the searched ghosts, the objective, the walk-forward scheme, the sampler, the budget.
"""

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from django import forms

from apps.common.parsing import ParseError, parse_json
from apps.engine.registry import DESK_KINDS, GHOSTS
from apps.lab.forms import LabRunForm, params_text

DESK = "desk"
OBJECTIVE_LABELS = {
    "sharpe": "Sharpe ratio (daily, ×√365)",
    "sortino": "Sortino ratio (daily, ×√365)",
    "profit_factor": "profit factor",
    "net_pnl": "net P&L",
    "calmar": "Calmar ratio",
}
SCHEME_LABELS = [("rolling", "rolling: train on the last N days"), ("anchored", "anchored: train from the start")]
SAMPLER_LABELS = [("tpe", "Bayesian (TPE)"), ("random", "random"), ("grid", "grid")]
BUDGET_MODES = [("trials", "trials per fold"), ("minutes", "minutes of worker time")]
MAX_BUDGET_TRIALS = 5000  # per fold: beyond this a study outlives its data (and the trials table its page)
MAX_BUDGET_MINUTES = 24 * 60


def target_choices() -> list[tuple[str, str]]:
    return [(DESK, "the whole desk (every desk ghost at once)")] + [
        (k, f"{k} · {spec.title}") for k, spec in GHOSTS.items()]


def target_kinds(target: str) -> list[str]:
    """The ghost kinds whose parameters a target searches."""
    return list(DESK_KINDS) if target == DESK else [target] if target in GHOSTS else []


def _range_dict(r: Any) -> dict[str, Any]:
    """A search_space.ParamRange (or its dict) as a plain dict."""
    if isinstance(r, Mapping):
        return dict(r)
    return {k: getattr(r, k, None) for k in ("name", "kind", "low", "high", "step", "choices")}


def _text(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.10g}"
    return str(v)


def space_defaults(kind: str) -> list[dict[str, Any]]:
    """The default search space of a kind with the validated bounds of each field, for the table:
    [{"name", "kind", "low", "high", "step", "choices", "bound", "default"}]."""
    from apps.engine import search_space

    bounds = search_space.param_bounds(kind)
    defaults = GHOSTS[kind].config_cls().to_params()
    rows = []
    for r in search_space.default_space(kind):
        d = _range_dict(r)
        d["bound"] = bound_text(bounds.get(d["name"]))
        d["default"] = defaults.get(d["name"])
        rows.append(d)
    return rows


def bound_text(b: Any) -> str:
    """A validated bound as the page shows it: check_range's own wording, "> 0 and < 50 (percent)"."""
    if b is None:
        return ""
    return b.text() if hasattr(b, "text") else str(b)


class StudyForm(forms.Form):
    """The new-study form (see the module doc). `self.lab` is the lab form bound to the same data."""

    name = forms.CharField(max_length=200, required=False, strip=True)
    target = forms.ChoiceField(choices=(), error_messages={"required": "choose a ghost or the whole desk",
                                                            "invalid_choice": "no such ghost kind: %(value)s"})
    objective = forms.ChoiceField(choices=list(OBJECTIVE_LABELS.items()), initial="sharpe", error_messages={
        "invalid_choice": "objective must be one of " + ", ".join(OBJECTIVE_LABELS)})
    min_trades = forms.IntegerField(min_value=0, max_value=100_000, initial=5, error_messages={
        "required": "enter the minimum number of trades in a window (0 = no minimum)",
        "invalid": "minimum trades: enter a whole number", "min_value": "minimum trades must be >= 0"})
    scheme = forms.ChoiceField(choices=SCHEME_LABELS, initial="rolling", error_messages={
        "invalid_choice": "scheme must be rolling or anchored"})
    train_days = forms.IntegerField(min_value=1, max_value=3650, error_messages={
        "required": "enter the train window in days (N)", "invalid": "train days: enter a whole number of days",
        "min_value": "train days must be at least 1"})
    test_days = forms.IntegerField(min_value=1, max_value=3650, error_messages={
        "required": "enter the test window in days (M)", "invalid": "test days: enter a whole number of days",
        "min_value": "test days must be at least 1"})
    step_days = forms.IntegerField(min_value=1, max_value=3650, required=False, error_messages={
        "invalid": "step days: enter a whole number of days (blank = the test days)",
        "min_value": "step days must be at least 1"})
    sampler = forms.ChoiceField(choices=SAMPLER_LABELS, initial="tpe", error_messages={
        "invalid_choice": "sampler must be tpe, random or grid"})
    seed = forms.IntegerField(min_value=0, max_value=2**31 - 1, initial=42, error_messages={
        "required": "enter a seed (any whole number: the same seed gives the same trials)",
        "invalid": "seed: enter a whole number", "min_value": "seed must be >= 0"})
    budget_mode = forms.ChoiceField(choices=BUDGET_MODES, initial="trials", error_messages={
        "invalid_choice": "budget must be in trials or minutes"})
    budget_trials = forms.IntegerField(min_value=1, max_value=MAX_BUDGET_TRIALS, required=False, error_messages={
        "invalid": "trials per fold: enter a whole number", "min_value": "trials per fold must be at least 1",
        "max_value": f"trials per fold: at most {MAX_BUDGET_TRIALS:,}"})
    budget_minutes = forms.FloatField(min_value=0.1, max_value=MAX_BUDGET_MINUTES, required=False, error_messages={
        "invalid": "minutes: enter a number", "min_value": "minutes must be at least 0.1",
        "max_value": f"minutes: at most {MAX_BUDGET_MINUTES:,}"})

    def __init__(self, data: Mapping[str, Any] | None = None, *, initial: dict[str, Any] | None = None) -> None:
        super().__init__(data, initial=initial)
        self.fields["target"].choices = target_choices()
        self.lab = LabRunForm(data, initial=initial)
        self.spaces: dict[str, list[dict[str, Any]]] = {}
        for kind in GHOSTS:
            self.fields[f"fixed_{kind}"] = forms.CharField(required=False, strip=True)
            try:
                rows = space_defaults(kind)
            except Exception as e:  # noqa: BLE001 - a kind the search space cannot describe is shown, not fatal
                rows = []
                self.spaces_error = f"{kind}: {e}"
            self.spaces[kind] = rows
            for r in rows:
                p = f"sp_{kind}__{r['name']}__"
                self.fields[p + "on"] = forms.BooleanField(required=False)
                for part in ("low", "high", "step", "choices"):
                    self.fields[p + part] = forms.CharField(required=False, strip=True, max_length=400)

    # --- syntax -------------------------------------------------------------------------------------------------

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if not self.lab.is_valid():
            for field, errors in self.lab.errors.items():
                if field.startswith("g_"):
                    continue  # the lab's ghost rows are not on this form
                for e in errors:
                    self.add_error(None, e)
        mode = data.get("budget_mode")
        if mode == "trials" and data.get("budget_trials") is None and "budget_trials" not in self.errors:
            self.add_error("budget_trials", "enter the number of trials per fold")
        if mode == "minutes" and data.get("budget_minutes") is None and "budget_minutes" not in self.errors:
            self.add_error("budget_minutes", "enter the budget in minutes")
        target = data.get("target")
        kinds = target_kinds(target or "")
        space: list[dict[str, Any]] = []
        self.space_prefix: dict[str, str] = {}  # posted parameter name -> its row's field prefix (for errors)
        for kind in kinds:
            raw = (data.get(f"fixed_{kind}") or "").strip()
            try:
                fixed = parse_json(raw) if raw else {}
            except ParseError as e:
                self.add_error(f"fixed_{kind}", f"{kind} fixed parameters: {e}")
                fixed = {}
            if not isinstance(fixed, dict):
                self.add_error(f"fixed_{kind}",
                               f'{kind} fixed parameters must be a JSON object, e.g. {{"window_minutes": 15}}')
                fixed = {}
            data[f"fixed_{kind}"] = fixed
            for r in self.spaces.get(kind, []):
                p = f"sp_{kind}__{r['name']}__"
                if not data.get(p + "on"):
                    continue
                name = f"{kind}.{r['name']}" if target == DESK else r["name"]
                self.space_prefix[name] = p
                space.append(self._row(name, r, data, p))
        if kinds and not space and not self.errors:
            self.add_error(None, "tick at least one parameter to search")
        data["space"] = space
        return data

    def _row(self, name: str, r: Mapping[str, Any], data: Mapping[str, Any], p: str) -> dict[str, Any]:
        """One ticked row as `search_space.validate_space` reads it ({name, kind, low, high, step} or {name,
        kind, choices}); numbers parsed here, ranges judged by the engine (through the service)."""
        label = name
        out: dict[str, Any] = {"name": name, "kind": r.get("kind", "float")}
        if out["kind"] == "bool":
            return out
        if out["kind"] == "choice":
            raw = data.get(p + "choices") or ""
            out["choices"] = [_parse_choice(c) for c in raw.split(",") if c.strip()]
            if not out["choices"]:
                self.add_error(p + "choices", f"{label}: list the choices, separated by commas")
            return out
        for part in ("low", "high", "step"):
            raw = (data.get(p + part) or "").strip()
            if not raw:
                if part != "step":
                    self.add_error(p + part, f"{label}: enter the {part} end of the range")
                if part == "step":
                    out[part] = None
                continue
            try:
                v = float(raw.replace(",", ""))
            except ValueError:
                self.add_error(p + part, f"{label}: {part} {raw[:30]!r} is not a number")
                continue
            if not math.isfinite(v):
                self.add_error(p + part, f"{label}: {part} must be a finite number")
                continue
            out[part] = int(v) if out["kind"] == "int" and v == int(v) else v
        return out

    # --- what the service takes -------------------------------------------------------------------------------

    def settings_data(self) -> dict[str, Any]:
        """The settings dict `study_settings_validate` reads (after is_valid())."""
        d = self.cleaned_data
        lab = self.lab.settings_data()
        lab.pop("ghosts", None)
        kinds = target_kinds(d["target"])
        out: dict[str, Any] = {
            **lab,
            "target": d["target"],
            "space": d["space"],
            "fixed": {k: d.get(f"fixed_{k}") or {} for k in kinds},
            "objective": d["objective"],
            "min_trades": d["min_trades"],
            "scheme": d["scheme"],
            "train_days": d["train_days"],
            "test_days": d["test_days"],
            "step_days": d.get("step_days"),
            "sampler": d["sampler"],
            "seed": d["seed"],
        }
        if d["budget_mode"] == "minutes":
            out["budget_minutes"] = d["budget_minutes"]
        else:
            out["budget_trials"] = d["budget_trials"]
        return out

    def apply_service_errors(self, errors: Mapping[str, Sequence[str]]) -> None:
        """The service's messages ({field: [messages]}) next to the fields they are about; the rest on top.

        Keys: a setting ("objective", "train_days" ...), a lab setting ("start", "fee" ...), a searched
        parameter ("space.<name>", "space[<i>]" or the bare name, as `search_space.SpaceError` keys them) or a
        fixed-params key ("fixed.<kind>")."""
        lab_fields = {"instrument_id", "start", "end", "start_capital", "fee", "limits", "sizing", "auto_disable",
                      "kill_switch"}
        mine = set(self.fields)
        prefixes = getattr(self, "space_prefix", {})
        posted = list(prefixes)
        for key, msgs in errors.items():
            field = None
            bare = key.split(".", 1)[1] if key.startswith(("space.", "fixed.")) else key
            if key in lab_fields:
                self.lab.apply_lab_error({key: list(msgs)})  # marks the shared field (aria-invalid)
                field = None  # and the message goes in the list on top
            elif key in mine and not key.startswith("sp_"):
                field = key
            elif key.startswith("fixed.") and f"fixed_{bare}" in mine:
                field = f"fixed_{bare}"
            elif bare in prefixes:
                field = prefixes[bare] + ("low" if prefixes[bare] + "low" in mine else "on")
            elif key.startswith(("space[", "ranges[")) and key.split("[", 1)[1].split("]")[0].isdigit():
                i = int(key.split("[", 1)[1].split("]")[0])
                if i < len(posted):
                    field = prefixes[posted[i]] + ("low" if prefixes[posted[i]] + "low" in mine else "on")
            for m in msgs:
                self.add_error(field, m if key == "__all__" or m.startswith(bare) else f"{bare}: {m}")

    def error_lines(self) -> list[str]:
        lines = [str(e) for errors in self.errors.values() for e in errors]
        return list(dict.fromkeys(lines))

    # --- the template's rows --------------------------------------------------------------------------------

    def space_groups(self) -> list[dict[str, Any]]:
        """Per ghost kind: its search-space rows with their bound fields, for the table."""
        groups = []
        for kind, rows in self.spaces.items():
            out = []
            for r in rows:
                p = f"sp_{kind}__{r['name']}__"
                errors = [e for part in ("on", "low", "high", "step", "choices") for e in self[p + part].errors]
                out.append({**r, "on": self[p + "on"], "low_f": self[p + "low"], "high_f": self[p + "high"],
                            "step_f": self[p + "step"], "choices_f": self[p + "choices"], "errors": errors,
                            "prefix": p, "default_text": _text(r.get("default"))})
            groups.append({"kind": kind, "title": GHOSTS[kind].title, "desk": kind in DESK_KINDS, "rows": out,
                           "fixed": self[f"fixed_{kind}"]})
        return groups


def _parse_choice(raw: str) -> Any:
    raw = raw.strip()
    try:
        return parse_json(raw)
    except ParseError:
        return raw


def space_initial(kind_rows: Mapping[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """The form's initial values of every search-space row: ticked, the default range."""
    init: dict[str, Any] = {}
    for kind, rows in kind_rows.items():
        for r in rows:
            p = f"sp_{kind}__{r['name']}__"
            init[p + "on"] = True
            init[p + "low"] = _text(r.get("low"))
            init[p + "high"] = _text(r.get("high"))
            init[p + "step"] = _text(r.get("step"))
            init[p + "choices"] = ", ".join(json.dumps(c) for c in (r.get("choices") or []))
    return init


class ApplyForm(forms.Form):
    """Apply a trial's parameters to a ghost (operators): which trial, which ghost, and why."""

    trial = forms.IntegerField(error_messages={"required": "choose a trial", "invalid": "choose a trial"})
    ghost = forms.IntegerField(error_messages={"required": "choose a ghost", "invalid": "choose a ghost"})
    reason = forms.CharField(max_length=500, strip=True, error_messages={
        "required": "a reason is required: it is written to the audit log with the study and the trial"})

    def error_lines(self) -> list[str]:
        return [str(e) for errors in self.errors.values() for e in errors]


class TrialFilterForm(forms.Form):
    """GET filter of the trials page: a fold (1-based in the page, 0-based in the model) and a status."""

    fold = forms.IntegerField(required=False, min_value=0, error_messages={
        "invalid": "fold: enter a fold number", "min_value": "fold: enter a fold number"})
    status = forms.ChoiceField(required=False, choices=[("", "any status"), ("done", "done"),
                                                        ("infeasible", "infeasible"), ("failed", "failed"),
                                                        ("pending", "pending"), ("running", "running")],
                               error_messages={"invalid_choice": "status must be done, infeasible, failed, pending "
                                                                 "or running"})

    def error_lines(self) -> list[str]:
        return [str(e) for errors in self.errors.values() for e in errors]


__all__ = ["DESK", "ApplyForm", "StudyForm", "TrialFilterForm", "params_text", "space_initial", "target_kinds"]
