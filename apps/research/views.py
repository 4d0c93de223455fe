"""The research pages: studies list + new-study form, a study's live progress and results, its trials, one
trial, and the operator actions (pause, resume, cancel, apply a trial to a ghost).

Thin like the lab's views: parse input with apps.research.forms, call one service (apps.research.services) or
selector (apps.research.selectors), render. Roles are enforced here on the server: a viewer's POST (start,
pause, resume, cancel, apply) gets 403 before its input is read and changes nothing, whatever the page showed.
Only out-of-sample figures are headlines; in-sample scores appear only beside their out-of-sample twin.
Charts are built on the server (apps.research.charts): the stitched equity is min/max decimated as the lab's.
"""

import json
import math
from datetime import UTC, datetime
from typing import Any

from django.conf import settings as dj_settings
from django.contrib import messages
from django.core.exceptions import ObjectDoesNotExist, PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from apps.common.parsing import ParseError, parse_id, parse_int
from apps.dashboard.context_processors import request_is_operator
from apps.dashboard.views import _plotly_version, _wants_json
from apps.engine.objectives import OBJECTIVE_FORMULAS
from apps.engine.registry import GHOSTS
from apps.lab import charts as lab_charts
from apps.lab.forms import SIZING_MODES
from apps.lab.selectors import instruments_with_data
from apps.lab.views import _fee_defaults, _initial
from apps.research import charts, selectors
from apps.research.events import progress_payload
from apps.research.forms import (
    DESK,
    OBJECTIVE_LABELS,
    ApplyForm,
    StudyForm,
    TrialFilterForm,
    params_text,
    space_initial,
)
from apps.research.models import Study, Trial

STUDIES_PAGE = 25  # studies per page of the list (keyset on id)
TRIALS_PAGE = 200  # trials per page of the trials table (keyset on fold, number)
BEST_PER_FOLD = 5  # the study page's table: each fold's best trials by train objective
QUOTE = dj_settings.HFT_QUOTE_CURRENCY
DEGRADATION_FORMULA = ("degradation = out-of-sample − in-sample objective of the fold's chosen trial (negative: "
                       "the choice did worse on the days it had not seen)")


def _services():
    # imported late: the services module imports the engine's optuna glue, which the list page never needs
    from apps.research import services

    return services


def _error_cls() -> type[Exception]:
    return _services().ResearchError


def _errors_of(e: Exception) -> dict[str, list[str]]:
    errs = getattr(e, "errors", None)
    return dict(errs) if isinstance(errs, dict) and errs else {"__all__": [str(e)]}


def _study_or_404(study_id: int) -> Study:
    study = selectors.study_get(study_id=study_id)
    if study is None:
        raise Http404(f"no study {study_id}")
    return study


def _day(value: Any) -> str:
    """An ISO time or datetime as the UTC day the tables show."""
    if not value:
        return ""
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d")
    return str(value)[:10]


def _span(a: str, b: str) -> str:
    """A window of UTC days, end exclusive, compactly: "2025-05-20 → 06-19" within a year."""
    return f"{a} → {b[5:]}" if a[:4] == b[:4] and a and b else f"{a} → {b}"


def _score(v: Any, places: int = 3) -> str:
    return f"{v:,.{places}f}" if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) else "—"


def _progress_pct(study: Study) -> float:
    if study.status == Study.Status.DONE:
        return 100.0
    return study.trials_done / study.trials_total * 100 if study.trials_total else 0.0


def _target_label(settings: dict[str, Any]) -> str:
    t = settings.get("target", "")
    return "the whole desk" if t == DESK else (t or "—")


def _objective_label(settings: dict[str, Any]) -> str:
    o = settings.get("objective", "")
    return OBJECTIVE_LABELS.get(o, o)


# --- studies list and the new-study form --------------------------------------------------------------------------


def _form_initial(data: list[dict[str, Any]]) -> dict[str, Any]:
    """The lab form's defaults (first instrument with candles over its stored range, the desk's limits and
    capital) + the study's: the spike fader, every default search-space row ticked, fixed params from the desk's
    ghost of each kind, Sharpe with 5 trades, rolling 30/10 days, TPE seed 42, 50 trials per fold."""
    init = _initial(data)
    form = StudyForm(initial={})
    init.update(space_initial(form.spaces))
    for kind in GHOSTS:
        raw = init.get(f"g_{kind}_params") or "{}"
        init[f"fixed_{kind}"] = raw if raw != "{}" else params_text(None)
    train, test = _default_lengths(init.get("start"), init.get("end"))
    init.update(target="spike_fader" if "spike_fader" in GHOSTS else next(iter(GHOSTS)), objective="sharpe",
                min_trades=5, scheme="rolling", train_days=train, test_days=test, sampler="tpe", seed=42,
                budget_mode="trials", budget_trials=50)
    return init


def _default_lengths(start: Any, end: Any) -> tuple[int, int]:
    """Train/test days for the default range: 30/10 (six folds over 90 days) when at least three such folds
    fit, else 40 % of the days to train and the rest in three test windows, so the form opens with folds."""
    try:
        days = (datetime.fromisoformat(str(end)[:10]) - datetime.fromisoformat(str(start)[:10])).days
    except ValueError:
        return 30, 10
    if days >= 30 + 3 * 10:
        return 30, 10
    train = max(1, round(days * 0.4))
    return train, max(1, (days - train) // 3)


def _fold_note(form: StudyForm) -> str:
    """How many folds the typed range and lengths make (the service checks again): said before the start."""
    from apps.engine.types import ConfigError
    from apps.engine.walkforward import make_folds

    lab = form.lab
    try:
        start, end = lab["start"].value(), lab["end"].value()
        n, m = int(form["train_days"].value()), int(form["test_days"].value())
        s = form["step_days"].value()
        folds = make_folds(str(start)[:10], str(end)[:10], scheme=str(form["scheme"].value() or "rolling"),
                           train_days=n, test_days=m, step_days=int(s) if s not in (None, "") else None)
    except (TypeError, ValueError, ConfigError) as e:
        return str(e) if isinstance(e, ConfigError) else ""
    first, last = folds[0], folds[-1]
    return (f"{len(folds)} fold(s): the first trains {first.train_start:%Y-%m-%d} → {first.train_end:%Y-%m-%d} and "
            f"tests to {first.test_end:%Y-%m-%d}; the last tests {last.test_start:%Y-%m-%d} → "
            f"{last.test_end:%Y-%m-%d} (UTC days, end exclusive).")


def _list_rows(before: int | None) -> tuple[list[Study], int | None]:
    rows = selectors.studies_page(before=before, limit=STUDIES_PAGE + 1)
    more = len(rows) > STUDIES_PAGE
    rows = rows[:STUDIES_PAGE]
    for s in rows:
        st = s.settings or {}
        s.target = st.get("target", "")
        s.objective = st.get("objective", "")
        s.progress_pct = _progress_pct(s)
        oos = ((s.results or {}).get("oos") or {}) if isinstance(s.results, dict) else {}
        figs = {f.get("key"): f.get("value") for f in oos.get("figures", [])} if isinstance(oos, dict) else {}
        s.oos_return = figs.get("return_pct")
        s.oos_sharpe = figs.get("sharpe")
    return rows, (rows[-1].pk if more and rows else None)


def _render_studies(request: HttpRequest, form: StudyForm, *, status: int = 200) -> HttpResponse:
    before = request.GET.get("before")
    before_id = parse_id(before)
    studies, next_before = _list_rows(before_id)
    data = instruments_with_data()
    selected = str(form.lab["instrument"].value() or "")
    options = [{**d, "selected": str(d["id"]) == selected} for d in data]
    inst = next((d["instrument"] for d in data if str(d["id"]) == selected), None)
    return render(request, "research/studies.html", {
        "nav": "studies",
        "form": form,
        "studies": studies,
        "before": before_id,
        "next_before": next_before,
        "instrument_options": options,
        "has_candles": any(d["candles"] for d in data),
        "space_groups": form.space_groups(),
        "limit_rows": form.lab.limit_rows(),
        "sizing_modes": SIZING_MODES,
        "fee_default": _fee_defaults(inst),
        "objective_formulas": OBJECTIVE_FORMULAS,
        "fold_note": _fold_note(form),
    }, status=status)


@require_http_methods(["GET", "POST"])
def studies_page(request: HttpRequest) -> HttpResponse:
    """GET: the studies (keyset paged) and, for operators, the new-study form. POST (operators): validate
    through the service and queue the study, then show its page."""
    if request.method == "POST":
        if not request_is_operator(request):  # before reading the input: a viewer learns nothing, starts nothing
            raise PermissionDenied("only operators can start studies")
        form = StudyForm(request.POST)
        if form.is_valid():
            try:
                study = _services().study_create(actor=request.user, settings=form.settings_data(),
                                                 name=form.cleaned_data.get("name") or "")
            except _error_cls() as e:
                form.apply_service_errors(_errors_of(e))
            else:
                messages.success(request, f"Study #{study.pk} queued: {study.name or 'unnamed'}.")
                return redirect("research:study", study_id=study.pk)
        return _render_studies(request, form, status=400)
    return _render_studies(request, StudyForm(initial=_form_initial(instruments_with_data())))


@require_GET
def folds_json(request: HttpRequest) -> JsonResponse:
    """The folds the typed range and lengths make, in words (the form asks as they change)."""
    form = StudyForm(request.GET)
    return JsonResponse({"note": _fold_note(form)}, headers={"Cache-Control": "no-store"})


# --- one study ------------------------------------------------------------------------------------------------


def _fold_progress_rows(study: Study, progress: dict[str, Any]) -> list[dict[str, Any]]:
    per_fold = (study.settings or {}).get("budget_trials")
    by_index = {f["index"]: f for f in progress.get("folds", [])}
    rows = []
    for f in study.folds or []:
        p = by_index.get(f["index"], {})
        done = p.get("done", 0)
        rows.append({
            "index": f["index"], "train_start": _day(f.get("train_start")), "train_end": _day(f.get("train_end")),
            "test_start": _day(f.get("test_start")), "test_end": _day(f.get("test_end")), "done": done,
            "train": _span(_day(f.get("train_start")), _day(f.get("train_end"))),
            "test": _span(_day(f.get("test_start")), _day(f.get("test_end"))),
            "total": per_fold, "pct": done / per_fold * 100 if per_fold else 0.0,
            "best_train": _score(p.get("best_train")) if p.get("best_train") is not None else None,
            "best_test": _score(p.get("best_test")) if p.get("best_test") is not None else None,
        })
    return rows


def _settings_rows(study: Study) -> list[tuple[str, str]]:
    s = study.settings or {}
    sz = s.get("sizing") or {}
    mode = sz.get("mode", "risk")
    sizing = {"risk": "risk-based (the desk's)", "stake": f"fixed stake {sz.get('stake')} {QUOTE}",
              "equity_pct": f"{sz.get('equity_pct')} % of equity"}.get(mode, mode)
    fee = s.get("fee") or {}
    step = s.get("step_days") or s.get("test_days")
    budget = (f"{s['budget_trials']} trials per fold" if s.get("budget_trials")
              else f"{s.get('budget_minutes')} minutes" if s.get("budget_minutes") else "—")
    space = ", ".join(_space_text(r) for r in s.get("space") or [])
    return [
        ("Target", _target_label(s)),
        ("Search space", space or "—"),
        ("Objective", f"{_objective_label(s)}, at least {s.get('min_trades', 0)} trades per window"),
        ("Walk-forward", f"{s.get('scheme', '—')}: train {s.get('train_days')} d, test {s.get('test_days')} d, "
                         f"step {step} d · {len(study.folds or [])} folds"),
        ("Sampler", f"{s.get('sampler', '—')} · seed {s.get('seed')} · {budget}"
                    + (f" · batches of {s['batch_size']}" if s.get("batch_size") else "")),
        ("Start capital", f"{s.get('start_capital', '—')} {QUOTE}"),
        ("Sizing", sizing),
        ("Fees", f"taker {fee.get('taker_fee')} · maker {fee.get('maker_fee')} · "
                 f"slippage {fee.get('slippage_bps')} bps"),
        ("Auto-disable / kill switch", f"{'on' if s.get('auto_disable', True) else 'off'} / "
                                       f"{'on' if s.get('kill_switch', True) else 'off'}"),
        ("Created", f"{study.created_at:%Y-%m-%d %H:%M} UTC"
                    + (f" by {study.created_by.get_username()}" if study.created_by else "")),
        ("Finished", f"{study.finished_at:%Y-%m-%d %H:%M:%S} UTC" if study.finished_at else "—"),
    ]


def _space_text(r: dict[str, Any]) -> str:
    name = r.get("name", "?")
    if r.get("kind") == "bool":
        return f"{name} on/off"
    if r.get("kind") == "choice":
        return f"{name} in {r.get('choices')}"
    step = f" step {r['step']:g}" if isinstance(r.get("step"), int | float) and r.get("step") else ""
    return f"{name} {r.get('low')}…{r.get('high')}{step}"


def _budget_text(study: Study) -> str:
    s = study.settings or {}
    if s.get("budget_minutes"):
        return f"budget {s['budget_minutes']} min of running time (pauses not counted)"
    return ""


def _trial_rows(trials: list[Trial], chosen_ids: set[int]) -> list[Trial]:
    """Trials with what the table shows: params compactly, train/test objective with the reason when undefined."""
    for t in trials:
        t.chosen = t.pk in chosen_ids
        t.params_shown = [(k, _param_text(v)) for k, v in sorted((t.params or {}).items())]
        train, test = t.train or {}, t.test or {}
        t.train_text = _score(t.value)
        t.train_why = train.get("reason") or t.error or ""
        t.test_text = _score(t.test_value)
        t.test_why = test.get("reason") or ""
        t.test_css = "" if t.test_value is None else "pos" if t.test_value > 0 else "neg" if t.test_value < 0 else ""
        t.train_trades = train.get("trades")
        t.test_trades = test.get("trades")
    return trials


def _param_text(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return json.dumps(v) if not isinstance(v, str) else v


@require_GET
def study_detail(request: HttpRequest, study_id: int) -> HttpResponse:
    return _render_study(request, _study_or_404(study_id))


def _render_study(request: HttpRequest, study: Study, *, apply_form: ApplyForm | None = None,
                  status: int = 200) -> HttpResponse:
    progress = dict(progress_payload(study))
    best = [f for f in progress.get("folds", []) if f.get("best_train") is not None]
    top = max(best, key=lambda f: f["best_train"]) if best else None
    s = study.settings or {}
    ctx: dict[str, Any] = {
        "nav": "studies", "study": study, "target_label": _target_label(s), "objective_label": _objective_label(s),
        "progress": {"pct": _progress_pct(study), "done": study.trials_done, "total": study.trials_total,
                     "best": f"{_score(top['best_train'])} (fold {top['index'] + 1})" if top else None},
        "fold_rows": _fold_progress_rows(study, progress), "budget_text": _budget_text(study),
        "settings_rows": _settings_rows(study), "settings_json": json.dumps(s, indent=1, sort_keys=True),
        "plotly_version": _plotly_version(), "chart_data": None, "results": None,
        "degradation_formula": DEGRADATION_FORMULA,
    }
    results = study.results if study.status == Study.Status.DONE and isinstance(study.results, dict) else None
    chosen_ids: set[int] = set()
    if results is not None:
        view = results_view(study, results)
        chosen_ids = view["chosen_ids"]
        ctx.update(results=view, equity=view["equity"], importance=view["importance"],
                   parcoords=view["parcoords_meta"],
                   chart_data={"equity": view["equity"], "importance": view["importance"],
                               "parcoords": view["parcoords"], "logits": view["logits"]})
    best_trials = selectors.study_best_trials(study_id=study.pk, per_fold=BEST_PER_FOLD)
    ctx["best_trials"] = _trial_rows(best_trials, chosen_ids)
    if request_is_operator(request) and study.status == Study.Status.DONE:
        ctx["apply"] = _apply_context(study, best_trials, apply_form or ApplyForm(), chosen_ids,
                                      str(apply_form["trial"].value() or "") if apply_form is not None
                                      else request.GET.get("trial", ""))
    return render(request, "research/study.html", ctx, status=status)


def _apply_context(study: Study, best: list[Trial], form: ApplyForm, chosen_ids: set[int],
                   selected: str) -> dict[str, Any] | None:
    """The apply card: the study's ghost kind, the ghosts of that kind, the trials offered (each fold's chosen
    first, then each fold's best), the one pre-selected (?trial=, else the last fold's chosen)."""
    # the kinds the study searched: a desk study's trial can go onto a ghost of any of them (that ghost gets
    # its own kind's share of the trial's params; the service picks it)
    kinds = sorted({g["kind"] for g in (study.settings or {}).get("ghosts") or []
                    if any(r.get("ghost") == g.get("name") for r in (study.settings or {}).get("space") or [])})
    if not kinds:
        return None
    trials = sorted(best, key=lambda t: (t.pk not in chosen_ids, t.fold, -(t.value or 0.0)))
    offered = []
    for t in trials:
        tag = "chosen, " if t.pk in chosen_ids else ""
        offered.append({"pk": t.pk, "label": f"fold {t.fold + 1} #{t.number} ({tag}train {_score(t.value)}, "
                                             f"test {_score(t.test_value)})"})
    if not selected and trials:
        chosen = sorted((t for t in trials if t.pk in chosen_ids), key=lambda t: t.fold)
        selected = str((chosen[-1] if chosen else trials[0]).pk)
    selected_id = parse_id(selected)
    if selected_id is not None and selected_id not in {o["pk"] for o in offered}:
        extra = selectors.trial_get(study_id=study.pk, trial_id=selected_id)
        if extra is not None and extra.status == Trial.Status.DONE:
            offered.insert(0, {"pk": extra.pk, "label": f"fold {extra.fold + 1} #{extra.number} (train "
                                                        f"{_score(extra.value)}, test {_score(extra.test_value)})"})
    ghosts = list(selectors.ghosts_of_kinds(kinds=kinds))
    return {"form": form, "kind": ", ".join(kinds), "trials": offered, "selected": selected, "ghosts": ghosts,
            "ghost_selected": str(form["ghost"].value() or "")}


@require_GET
def study_progress(request: HttpRequest, study_id: int) -> JsonResponse:
    """The study's state as a study.progress event (the study page polls it while the study is active)."""
    study = _study_or_404(study_id)
    return JsonResponse(dict(progress_payload(study)), headers={"Cache-Control": "no-store"})


def _action(request: HttpRequest, study_id: int, verb: str) -> HttpResponse:
    """pause / resume / cancel (operators): the service decides what the current state allows."""
    as_json = _wants_json(request)
    if not request_is_operator(request):
        if as_json:
            return JsonResponse({"ok": False, "error": f"only operators can {verb} studies"}, status=403)
        raise PermissionDenied(f"only operators can {verb} studies")
    fn = getattr(_services(), f"study_{verb}")
    try:
        study = fn(study_id=study_id, actor=request.user)
    except ObjectDoesNotExist:
        raise Http404(f"no study {study_id}") from None
    except _error_cls() as e:
        msg = "; ".join(m for msgs in _errors_of(e).values() for m in msgs)
        if as_json:
            return JsonResponse({"ok": False, "error": msg}, status=409)
        messages.error(request, f"Study #{study_id}: {msg}")
        return redirect("research:study", study_id=study_id)
    if as_json:
        return JsonResponse({"ok": True, "study_id": study.pk, "status": study.status,
                             "progress": dict(progress_payload(study))})
    messages.info(request, f"Study #{study.pk}: {study.status}.")
    return redirect("research:study", study_id=study.pk)


@require_POST
def study_pause(request: HttpRequest, study_id: int) -> HttpResponse:
    return _action(request, study_id, "pause")


@require_POST
def study_resume(request: HttpRequest, study_id: int) -> HttpResponse:
    return _action(request, study_id, "resume")


@require_POST
def study_cancel(request: HttpRequest, study_id: int) -> HttpResponse:
    return _action(request, study_id, "cancel")


@require_POST
def study_apply(request: HttpRequest, study_id: int) -> HttpResponse:
    """Apply a trial's params to a ghost (operators, reason required; audited with the study and trial)."""
    if not request_is_operator(request):
        raise PermissionDenied("only operators can apply a study's parameters")
    study = _study_or_404(study_id)
    form = ApplyForm(request.POST)
    if form.is_valid():
        d = form.cleaned_data
        try:
            ghost = _services().study_apply(study_id=study.pk, trial_id=d["trial"], ghost_id=d["ghost"],
                                            actor=request.user, reason=d["reason"])
        except ObjectDoesNotExist as e:
            form.add_error(None, f"not found: {e}")
        except _error_cls() as e:
            for field, msgs in _errors_of(e).items():
                for m in msgs:
                    form.add_error(field if field in form.fields else None, m)
        else:
            messages.success(request, f"Trial {d['trial']}'s parameters applied to {ghost.name}; the Ghosts page "
                                      "shows where they came from.")
            return redirect(reverse("dashboard:ghosts") + f"#ghost-{ghost.pk}")
    return _render_study(request, study, apply_form=form, status=400)


# --- trials -----------------------------------------------------------------------------------------------------


@require_GET
def study_trials(request: HttpRequest, study_id: int) -> HttpResponse:
    """Every trial of the study, fold by fold (keyset on fold, number), filtered by fold and status."""
    study = _study_or_404(study_id)
    params = request.GET.copy()
    after = params.pop("after", [""])[0]
    form = TrialFilterForm(params or None)
    status = 200
    rows: list[Trial] = []
    next_after = None
    if form.is_bound and not form.is_valid():
        status = 400
    else:
        d = form.cleaned_data if form.is_bound else {}
        fold = d.get("fold")
        fold = fold - 1 if fold else None  # the page counts folds from 1
        key = None
        if after and after.count(":") == 1:
            try:  # "fold:number", both counted from 0; anything else (a typed "²", a sign) is ignored
                a, b = (parse_int(p, max_digits=9) for p in after.split(":"))
                key = (a, b) if a >= 0 and b >= 0 and after.isascii() and "+" not in after else None
            except ParseError:
                key = None
        rows = selectors.study_trials_page(study_id=study.pk, fold=fold, status=d.get("status") or None,
                                           after=key, limit=TRIALS_PAGE + 1)
        if len(rows) > TRIALS_PAGE:
            rows = rows[:TRIALS_PAGE]
            next_after = f"{rows[-1].fold}:{rows[-1].number}"
    chosen = {f.get("trial_id") for f in ((study.results or {}).get("folds") or []) if isinstance(f, dict)}
    s = study.settings or {}
    return render(request, "research/trials.html", {
        "nav": "studies", "study": study, "form": form, "rows": _trial_rows(rows, chosen), "next_after": next_after,
        "after": after, "objective_label": _objective_label(s), "folds": range(1, len(study.folds or []) + 1),
        "apply": request_is_operator(request) and study.status == Study.Status.DONE,
    }, status=status)


@require_GET
def trial_detail(request: HttpRequest, study_id: int, trial_id: int) -> HttpResponse:
    """One trial: its params (searched and fixed), its train and test window figures side by side."""
    study = _study_or_404(study_id)
    trial = selectors.trial_get(study_id=study.pk, trial_id=trial_id)
    if trial is None:
        raise Http404(f"no trial {trial_id} in study {study_id}")
    s = study.settings or {}
    fold = next((f for f in study.folds or [] if f["index"] == trial.fold), {})
    figures = []
    for key, label, unit in (("value", "objective", ""), ("trades", "trades", ""), ("net_pnl", "net P&L", QUOTE),
                             ("return_pct", "return", "%"), ("sharpe", "Sharpe", ""), ("sortino", "Sortino", ""),
                             ("profit_factor", "profit factor", ""), ("max_drawdown_pct", "max drawdown", "%"),
                             ("calmar", "Calmar", ""), ("days", "days", "")):
        a, b = (trial.train or {}).get(key), (trial.test or {}).get(key)
        places = 0 if key in ("trades", "days") else 2 if unit else 3
        figures.append({"key": key, "label": label, "unit": unit, "train": _score(a, places),
                        "test": _score(b, places)})
    chosen = any(f.get("trial_id") == trial.pk for f in ((study.results or {}).get("folds") or [])
                 if isinstance(f, dict))
    searched = _services().trial_params(s, trial.params or {})
    ran_with = {g["name"]: {**(g.get("params") or {}), **searched[g["name"]]}
                for g in s.get("ghosts") or [] if g.get("name") in searched}
    return render(request, "research/trial.html", {
        "nav": "studies", "study": study, "trial": trial, "figures": figures, "chosen": chosen,
        "objective_label": _objective_label(s),
        "fold": {k: _day(fold.get(k)) for k in ("train_start", "train_end", "test_start", "test_end")},
        "params_json": json.dumps(trial.params, indent=1, sort_keys=True),
        "ran_with_json": json.dumps(ran_with, indent=1, sort_keys=True),
        "apply_url": reverse("research:study", args=[study.pk]) + f"?trial={trial.pk}#apply",
        "can_apply": request_is_operator(request) and study.status == Study.Status.DONE
        and trial.status == Trial.Status.DONE,
    })


# --- the results, as the page shows them ------------------------------------------------------------------------


DSR_FORMULA = (
    "Deflated Sharpe ratio (Bailey & López de Prado 2014) = PSR(SR0) = Φ((SR − SR0) × √(T − 1) ÷ √(1 − γ3·SR + "
    "(γ4 − 1)/4·SR²)), the probability that the true Sharpe beats SR0, the Sharpe the best of N trials reaches by "
    "luck: SR0 = √V × ((1 − γ) Φ⁻¹(1 − 1/N) + γ Φ⁻¹(1 − 1/(N·e))). SR = the stitched out-of-sample daily Sharpe "
    "(mean ÷ std of daily returns, per day, not ×√365); T = its days; γ3, γ4 = skewness and kurtosis of those "
    "returns; N = trials with a defined Sharpe over the same days, V = the variance of their Sharpes; "
    "γ = 0.5772 (Euler–Mascheroni); Φ = the standard normal CDF.")
PBO_FORMULA = (
    "Probability of backtest overfitting by CSCV (Bailey, Borwein, López de Prado & Zhu): the T×N matrix of every "
    "done trial's daily returns over the whole range is cut into S equal blocks; for each of the C(S, S/2) ways to "
    "pick half the blocks as in-sample, the trial with the best in-sample Sharpe is ranked among all N trials on "
    "the other half: ω = rank ÷ (N + 1), λ = ln(ω ÷ (1 − ω)). PBO = the share of splits with λ ≤ 0, i.e. where "
    "the in-sample winner lands in the bottom half out of sample.")


def _fmt_figure(f: dict[str, Any]) -> dict[str, Any]:
    """One stored out-of-sample figure ({"key","label","value","unit","formula","sample"}) for a card."""
    v, unit, key = f.get("value"), f.get("unit") or "", f.get("key")
    css = ""
    if v is None:
        text = "n/a"
    elif key in ("trades", "days"):
        text = f"{int(v):,}"
    elif unit == "quote":
        text, unit = f"{v:+,.2f}", QUOTE
    elif unit == "%":
        text, unit = (f"{v:+,.2f} %" if key == "return_pct" else f"{v:,.2f} %"), ""
    else:
        text = f"{v:,.2f}"
    if key in ("net_pnl", "return_pct") and isinstance(v, int | float):
        css = "pos" if v > 0 else "neg" if v < 0 else ""
    return {**f, "text": text, "unit": unit if unit not in ("%",) else "", "css": css,
            "note": f.get("sample", "")}


def _dsr_view(d: dict[str, Any] | None) -> dict[str, Any]:
    d = d or {}
    p, n = d.get("probability"), d.get("n_trials") or 0
    out = {"formula": DSR_FORMULA, "text": "n/a", "level": "", "verdict": "", "detail": d.get("reason", "")}
    if p is None:
        out["verdict"] = "not computed: " + (d.get("reason") or "too few observations")
        return out
    out["text"] = f"{p:.3f}"
    if p >= 0.95:
        out["level"], out["verdict"] = "ok", (f"the out-of-sample Sharpe beats what the best of {n:,} trials reaches "
                                              "by luck, at 95 % confidence")
    elif p >= 0.5:
        out["level"], out["verdict"] = "warn", (f"not significant: {1 - p:.0%} chance the edge is the luck of "
                                                f"{n:,} trials")
    else:
        out["level"], out["verdict"] = "bad", (f"the out-of-sample Sharpe is below what the best of {n:,} trials "
                                               "reaches by luck alone: no evidence of an edge")
    sr, sr0, t = d.get("sr"), d.get("sr0"), d.get("n_obs")
    if sr is not None and sr0 is not None:
        out["detail"] = (f"SR {sr:.4f}/day (×√365 = {sr * math.sqrt(365):.2f}) against SR0 {sr0:.4f}/day "
                         f"(×√365 = {sr0 * math.sqrt(365):.2f}); T = {t} days, N = {n:,} trials, skew "
                         f"{_score(d.get('skew'), 2)}, kurtosis {_score(d.get('kurtosis'), 2)}")
    return out


def _pbo_view(d: dict[str, Any] | None) -> dict[str, Any]:
    d = d or {}
    v = d.get("value")
    out = {"formula": PBO_FORMULA, "text": "n/a", "level": "", "verdict": "", "detail": ""}
    if v is None:
        out["verdict"] = "not computed: " + (d.get("reason") or "the study does not allow it")
        return out
    out["text"] = f"{v:.0%}"
    if v <= 0.2:
        out["level"], out["verdict"] = "ok", "the in-sample winner usually stays in the top half out of sample"
    elif v <= 0.5:
        out["level"], out["verdict"] = "warn", "the in-sample winner often falls to the bottom half out of sample"
    else:
        out["level"], out["verdict"] = "bad", ("overfit: the in-sample winner more often than not ranks in the "
                                               "bottom half out of sample")
    loss = d.get("prob_oos_loss")
    out["detail"] = (f"S = {d.get('n_splits')} blocks of {d.get('n_obs')} days, {d.get('n_combinations', 0):,} splits, "
                     f"N = {d.get('n_configs', 0):,} trials"
                     + (f"; median logit {d['logit_median']:.2f}" if d.get("logit_median") is not None else "")
                     + (f"; the in-sample winner lost money out of sample in {loss:.0%} of the splits"
                        if loss is not None else ""))
    return out


def _fold_rows_done(study: Study, folds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for f in folds:
        deg = f.get("degradation")
        test = f.get("test") or {}
        oos = f.get("oos_value")
        rows.append({
            "index": f["index"], "train_start": _day(f.get("train_start")), "train_end": _day(f.get("train_end")),
            "test_start": _day(f.get("test_start")), "test_end": _day(f.get("test_end")),
            "train": _span(_day(f.get("train_start")), _day(f.get("train_end"))),
            "test": _span(_day(f.get("test_start")), _day(f.get("test_end"))),
            "trial_id": f.get("trial_id"), "number": f.get("number"), "none_why": f.get("reason", ""),
            "is_text": _score(f.get("is_value")), "oos_text": _score(oos),
            "oos_css": "" if oos is None else "pos" if oos > 0 else "neg" if oos < 0 else "",
            "deg_text": "—" if deg is None else f"{deg:+,.3f}", "deg_css": "" if deg is None else
            "neg" if deg < 0 else "pos", "worse": deg is not None and deg < 0,
            "dsr_text": _score((f.get("dsr") or {}).get("probability")),
            "dsr_why": (f.get("dsr") or {}).get("reason") or "",
            "test_trades": test.get("trades") if f.get("trial_id") else None,
            "test_net": test.get("net_pnl") if f.get("trial_id") else None,
        })
    return rows


def _stability_view(rows: list[dict[str, Any]], space: list[dict[str, Any]]) -> list[dict[str, Any]]:
    ranges = {r.get("name"): r for r in space}
    out = []
    for row in rows:
        r = ranges.get(row["name"], {})
        spread = row.get("spread_pct")
        if r.get("kind") in ("bool", "choice"):
            range_text = ", ".join(map(str, r.get("choices") or []))
            spread_text = f"{row.get('distinct', 0)} distinct"
        else:
            range_text = f"{_param_text(r.get('low'))} … {_param_text(r.get('high'))}" if r else ""
            spread_text = "—" if spread is None else f"{spread:.0f} %"
        out.append({**row, "shown": ["—" if v is None else _param_text(v) for v in row.get("values", [])],
                    "range_text": range_text, "spread_text": spread_text,
                    "css": "warn-text" if spread is not None and spread >= 50 else ""})
    return out


def _ms(day: str) -> int:
    return int(datetime.fromisoformat(day[:10]).replace(tzinfo=UTC).timestamp() * 1000)


def results_view(study: Study, results: dict[str, Any]) -> dict[str, Any]:
    """The stored results (apps.research.results.study_results) in the shapes the template and research.js
    draw: headline out-of-sample cards, DSR and PBO with their formulas, the per-fold table, stability, and the
    chart payloads (stitched equity, importance, parcoords) built by apps.research.charts."""
    s = study.settings or {}
    oos = results.get("oos") or {}
    folds = results.get("folds") or []
    days, rets, fold_of = oos.get("days") or [], oos.get("returns") or [], oos.get("fold") or []
    segments = []
    for f in folds:
        mine = [(d, r) for d, r, k in zip(days, rets, fold_of, strict=False) if k == f["index"]]
        segments.append(charts.OosSegment(
            fold=f["index"], start_ms=_ms(str(f["test_start"])), end_ms=_ms(str(f["test_end"])),
            t_ms=[_ms(d) for d, _ in mine], returns=[math.nan if r is None else r for _, r in mine]))
    equity = charts.stitched_equity(segments, float(oos.get("start_capital") or s.get("start_capital") or 0))
    space = s.get("space") or []
    plot = charts.parcoords(selectors.study_trials_for_plot(study_id=study.pk), space,
                            objective=s.get("objective", ""), folds=len(folds))
    importance = charts.importance_bars([f.get("importance") for f in folds])
    fold_rows = _fold_rows_done(study, folds)
    degs = [f.get("degradation") for f in folds if f.get("degradation") is not None]
    worse = sum(1 for d in degs if d < 0)
    summary = (f"Out-of-sample below in-sample in {worse} of {len(degs)} folds; mean degradation "
               f"{sum(degs) / len(degs):+,.3f}" + (" (per day: net P&L windows differ in length)"
                                                   if s.get("objective") == "net_pnl" else "")
               + ".") if degs else ""
    t = results.get("trials") or {}
    n_folds = len(folds)
    return {
        "headline": [_fmt_figure(f) for f in oos.get("figures") or []],
        "oos_note": (f"the stitched test windows of {n_folds} fold(s), each traded with the parameters its fold "
                     f"chose on its train window only; {t.get('done', 0):,} of {t.get('total', 0):,} trials "
                     f"done ({t.get('infeasible', 0):,} infeasible, {t.get('failed', 0):,} failed, "
                     f"{t.get('undefined', 0):,} without a score)"),
        "notes": results.get("notes") or [],
        "dsr": _dsr_view(results.get("dsr")),
        "pbo": _pbo_view(results.get("pbo")),
        "folds": fold_rows,
        "degradation_summary": summary,
        "stability": _stability_view(results.get("stability") or [], space),
        "equity": equity,
        "importance": importance,
        "parcoords": plot,
        # the CSCV logits' distribution: the mass at or below 0 is the PBO (lab's histogram shape)
        "logits": lab_charts.histogram_bars((results.get("pbo") or {}).get("logit_hist")),
        "parcoords_meta": {k: plot[k] for k in ("n", "of", "left_out", "sampled")},
        "chosen_ids": {f["trial_id"] for f in folds if f.get("trial_id")},
    }
