"""Writes of the research lab (issue 10): validate a study's settings, create it, drive it (ask optuna for
trials), execute trials, pause / resume / cancel, sweep what a dead worker left behind, and apply a trial's
params to a ghost.

How a study runs (DESIGN §13; the plan in research_spec.md):

- ONE optuna study PER FOLD, searching that fold's TRAIN window only. Nothing of optuna is stored: the
  driver (`study_step`) rebuilds each fold's optuna study in memory from the finished Trial rows every time
  (`optuna.trial.create_trial` + `add_trial`, in trial-number order), asks the next batch and stores it as
  pending rows. So the study lives in the database: it survives a restart of every process, and any worker
  on any machine can take any trial.
- Determinism: a fold's trials are asked in batches of a FIXED size (`batch_size`, not the worker count); the
  next batch of a fold is asked only once every trial of its previous batch is finished; each batch's sampler
  is seeded by (study seed, fold, batch number). The asked params therefore depend only on the seed and the
  earlier trials' results, which depend only on their params: the same seed gives the same trials and the
  same best with 1 or N workers, in any order of completion (tests/research/test_determinism.py).
- A trial (`trial_execute`, task `trial_task`, acks_late): one parameter set run ONCE through the pure engine
  over the whole range (`apps.engine.trial.run_trial`), the study's bars loaded once per worker process and
  cached with the engine's per-study TrialContext; its fold's train window score (what selects), its test
  window score (shown, never used to select) and its daily returns over the range (for PBO and the stitched
  out-of-sample equity) are written in one conditional UPDATE.
- Claim tokens, as the lab's runs: the claim sets status running and `started_at` (the token) and counts the
  attempt; the result is written only while (status running, started_at = token), so a second delivery of the
  same trial (Celery re-delivers a task whose worker died: acks_late, reject_on_worker_lost, and the broker's
  visibility timeout) takes the trial over and a stale execution can never write. A trial is deterministic, so
  a re-run gives exactly the result the killed run would have given. After MAX_ATTEMPTS claims it is failed.
- When a trial completes its fold's batch, its worker runs the next step right after the commit (a queued
  step would wait behind every queued trial; if it fails it is queued as a task); the step that finds every
  fold's budget spent (and nothing in flight) computes the results (apps.research.results) and sets status
  done in ONE transaction.
- The sweeper (beat, `studies_sweep`) re-dispatches trials running past HFT_RESEARCH_STALE_S (a worker died
  and nobody re-delivered), pending trials of a study whose heartbeat is stale (a lost message), and the step.
- Pause keeps the trials already running (their results are stored) and starts no more; resume re-dispatches
  the pending ones. Cancel ends the study (pending trials never run). All three are audited.
- Progress `study.progress` goes to the `lab` group after commit: on every state change, and after trials at
  most every PUSH_EVERY_S over all workers (the study row's `pushed_at`, written under the row lock).

Scope: the searched ghosts' own params only; the rest of the run (other ghosts, fees, limits, sizing,
capital, switches) is fixed and validated by the lab's `lab_settings_validate`, so a study's trial is exactly a
lab run of those settings with the trial's params.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import re
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
from django.conf import settings as dj_settings
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Count, F, Max, Q
from django.utils import timezone

from apps.accounts.roles import is_operator
from apps.audit.services import audit_record
from apps.common.realtime import send_now, send_on_commit
from apps.engine import search_space as space_mod
from apps.engine.objectives import OBJECTIVES
from apps.engine.registry import DESK_KINDS, get_spec, warmup_minutes_for
from apps.engine.trial import TrialContext, run_trial
from apps.engine.types import ConfigError
from apps.engine.walkforward import Fold, make_folds
from apps.lab.selectors import data_range, run_bars
from apps.lab.services import LabError, backtest_inputs, fingerprint, lab_settings_validate, run_lot_rules
from apps.market.models import Instrument
from apps.research.events import LAB_GROUP, elapsed_s, progress_payload
from apps.research.models import Study, Trial
from apps.research.space import study_distributions as _distributions
from apps.research.space import study_ranges as _ranges
from hftweb.celery import app as celery_app

log = logging.getLogger(__name__)
optuna.logging.set_verbosity(optuna.logging.WARNING)

SAMPLERS = ("tpe", "grid", "random")
SCHEMES = ("anchored", "rolling")
DEFAULTS = {"objective": "sharpe", "min_trades": 5, "scheme": "rolling", "train_days": 30, "test_days": 10,
            "sampler": "tpe", "seed": 1, "batch_size": 8}
DEFAULT_BUDGET_TRIALS = 50  # per fold
MAX_TRIALS_PER_FOLD = 5000
MAX_MINUTES = 24 * 60
MAX_BATCH = 64
MAX_FOLDS = 100
MAX_GRID = 100_000
MAX_ATTEMPTS = 3  # claims of one trial before it is failed (a trial that kills its worker must not loop)
PUSH_EVERY_S = 0.25  # at most 4 progress pushes a second per study, over all workers
CONTEXTS_PER_PROCESS = 2  # studies whose loaded bars a worker process keeps (the newest)
RESEARCH_KEYS = ("target", "params", "fixed", "space", "objective", "min_trades", "scheme", "train_days", "test_days",
                 "step_days", "sampler", "seed", "budget_trials", "budget_minutes", "batch_size")


class ResearchError(LabError):
    """A refused research request; `errors` maps a field ("space", "train_days") to its messages."""


# --- settings ------------------------------------------------------------------------------------------------

def code_version() -> str:
    """What decides a study's results besides data and settings: the engine's source (apps/engine/*.py), the
    lab's and this module (settings, inputs), hashed; "engine-<12 hex>". Not cached (~1 ms): it is read when a
    study is created and when a worker process first loads the study, so a long-lived process whose files
    changed since it started (a dev server) does not stamp studies with a version it no longer has on disk."""
    from apps.lab import services as lab_services

    h = hashlib.sha256()
    engine = Path(get_spec.__code__.co_filename).resolve().parent
    for p in sorted([*engine.glob("*.py"), Path(lab_services.__file__).resolve(), Path(__file__).resolve(),
                     Path(__file__).resolve().parent / "results.py"]):
        h.update(p.name.encode() + b"\0" + p.read_bytes() + b"\0")
    return f"engine-{h.hexdigest()[:12]}"


def _int(value: Any, field: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or value != int(value):
        raise ConfigError(f"{field} must be a whole number, got {value!r}")
    if not lo <= int(value) <= hi:
        raise ConfigError(f"{field} must be between {lo:,} and {hi:,}, got {int(value):,}")
    return int(value)


def study_settings_validate(data: Mapping[str, Any]) -> dict[str, Any]:
    """The canonical settings of a study (what Study.settings stores, what the form and the command both
    produce), or ResearchError with messages per field.

    Keys: the lab's run settings (instrument_id, start, end, ghosts, start_capital, fee, limits, sizing,
    auto_disable, kill_switch: `lab_settings_validate`, same defaults) plus
    - target: a ghost kind (that ghost is searched; without `ghosts` the run holds it alone, with `params` as
      its fixed params) or "desk" (every ghost of the run is searched; without `ghosts`, the desk's kinds);
    - space: ranges [{name, low, high, step} | {name, choices}], for "desk" with `ghost` (or a name
      "ghost.field"); default: `search_space.default_space` of each searched ghost; validated against the
      config's bounds (`search_space.validate_space`);
    - objective (sharpe | sortino | profit_factor | net_pnl | calmar) and min_trades (per window);
    - scheme (anchored | rolling), train_days, test_days, step_days (default test_days): `make_folds`;
    - sampler (tpe | grid | random) and seed; budget_trials PER FOLD or budget_minutes (the whole study);
      batch_size (trials asked at once per fold: fixed, so the result does not depend on the workers).
    """
    if not isinstance(data, Mapping):
        raise ResearchError("settings must be an object")
    errors: dict[str, list[str]] = {}

    def err(field: str, msg: str) -> None:
        errors.setdefault(field, []).append(msg)

    target = data.get("target")
    desk = target == space_mod.DESK
    lab_in = {k: v for k, v in data.items() if k not in RESEARCH_KEYS}
    if target is None:
        err("target", "choose a ghost kind to search, or 'desk' to search every desk ghost at once")
    elif not desk:
        try:
            get_spec(target)
        except ConfigError as e:
            err("target", str(e))
            target = None
    fixed = data.get("fixed") or {}
    if not isinstance(fixed, Mapping) or any(not isinstance(v, Mapping) for v in fixed.values()):
        err("fixed", "fixed params must be an object {ghost kind: {param: value}}")
        fixed = {}
    if data.get("params") and not desk and target is not None:
        fixed = {**fixed, target: {**fixed.get(target, {}), **data["params"]}}
    if "ghosts" not in lab_in:
        kinds = list(DESK_KINDS) if desk else [target] if target is not None else []
        lab_in["ghosts"] = [{"kind": k, "params": dict(fixed.get(k) or {})} for k in kinds]
        unknown = sorted(set(fixed) - set(kinds))
        if unknown:
            err("fixed", f"fixed params for {', '.join(unknown)}, which the study does not run")
    elif fixed:
        err("fixed", "give the fixed params inside `ghosts` (or leave `ghosts` out)")
    lab: dict[str, Any] | None = None
    try:
        lab = lab_settings_validate(lab_in)
    except LabError as e:
        for k, msgs in e.errors.items():
            m = re.fullmatch(r"ghosts\[(\d+)\]\.params", k)
            if m and "ghosts" not in data and int(m.group(1)) < len(lab_in["ghosts"]):
                k = f"fixed.{lab_in['ghosts'][int(m.group(1))]['kind']}"  # the form's fixed-params box
            errors.setdefault(k, []).extend(msgs)

    space: list[dict[str, Any]] = []
    if target is not None and lab is not None:
        raw_space = data.get("space")
        try:
            ranges = space_mod.default_space(target) if raw_space is None else space_mod.validate_space(target,
                                                                                                        raw_space)
        except space_mod.SpaceError as e:
            ranges = []
            for k, msgs in e.errors.items():
                key = "space" if k == "space" else f"space[{k[7:-1]}]" if k.startswith("ranges[") else f"space.{k}"
                errors.setdefault(key, []).extend(msgs)
        first_of_kind: dict[str, str] = {}
        for g in lab["ghosts"]:
            first_of_kind.setdefault(g["kind"], g["name"])
        for r in ranges:
            kind, field = space_mod.split_name(target, r.name)
            if kind not in first_of_kind:
                err("target", f"no {kind} ghost among the run's ghosts to search {r.name}")
                continue
            space.append({**r.as_dict(), "ghost": first_of_kind[kind], "field": field})
        if not ranges and "space" not in errors and not any(k.startswith("space") for k in errors):
            err("space", "nothing to search: give at least one parameter range")

    objective = data.get("objective", DEFAULTS["objective"])
    if objective not in OBJECTIVES:
        err("objective", f"objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
    out: dict[str, Any] = {}
    for field, lo, hi in (("min_trades", 0, 100_000), ("seed", 0, 2**31 - 1), ("batch_size", 1, MAX_BATCH)):
        try:
            out[field] = _int(data.get(field, DEFAULTS[field]), field, lo, hi)
        except ConfigError as e:
            err(field, str(e))
    scheme = data.get("scheme", DEFAULTS["scheme"])
    days = {k: data.get(k, DEFAULTS.get(k)) for k in ("train_days", "test_days", "step_days")}
    folds: list[Fold] = []
    if lab is not None:
        try:
            folds = make_folds(lab["start"], lab["end"], scheme=scheme, **days)
        except ConfigError as e:
            msg = str(e)
            field = next((k for k in ("scheme", "step_days", "train_days", "test_days") if msg.startswith(k)),
                         "train_days")
            err(field, msg)
        if len(folds) > MAX_FOLDS:
            err("step_days", f"{len(folds)} folds; at most {MAX_FOLDS} (a longer step or test window)")
    sampler = data.get("sampler", DEFAULTS["sampler"])
    if sampler not in SAMPLERS:
        err("sampler", f"sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")

    trials_raw, minutes_raw = data.get("budget_trials"), data.get("budget_minutes")
    budget_trials = budget_minutes = None
    if trials_raw is not None and minutes_raw is not None:
        err("budget_trials", "give a budget in trials (per fold) or in minutes (whole study), not both")
    elif minutes_raw is not None:
        if isinstance(minutes_raw, bool) or not isinstance(minutes_raw, int | float) \
                or not math.isfinite(minutes_raw) or not 0 < minutes_raw <= MAX_MINUTES:
            err("budget_minutes", f"budget_minutes must be a number of minutes > 0 and <= {MAX_MINUTES}, "
                                  f"got {minutes_raw!r}")
        else:
            budget_minutes = float(minutes_raw)
    else:
        try:
            budget_trials = _int(DEFAULT_BUDGET_TRIALS if trials_raw is None else trials_raw, "budget_trials", 1,
                                 MAX_TRIALS_PER_FOLD)
        except ConfigError as e:
            err("budget_trials", str(e))

    grid_size = None
    if sampler == "grid" and space:
        try:
            grid_size = math.prod(len(v) for v in space_mod.grid(_ranges({"space": space})).values())
        except ConfigError as e:
            err("space", str(e))
        else:
            if grid_size > MAX_GRID:
                err("space", f"the grid holds {grid_size:,} points; at most {MAX_GRID:,} (coarser steps, fewer "
                             "parameters, or the TPE sampler)")

    if errors:
        raise ResearchError(errors)
    assert lab is not None
    if grid_size is not None and budget_trials is not None:
        budget_trials = min(budget_trials, grid_size)  # each fold visits every point at most once
    clean = {**lab, "target": target, "space": space, "objective": objective, **out,
             "scheme": scheme, "train_days": folds[0].train_days if scheme == "rolling" else int(days["train_days"]),
             "test_days": folds[0].test_days,
             "step_days": int(days["step_days"] if days["step_days"] is not None else folds[0].test_days),
             "sampler": sampler, "budget_trials": budget_trials, "budget_minutes": budget_minutes,
             "grid_size": grid_size}
    clean["warmup_minutes"] = _warmup_minutes(clean)
    return clean


def _warmup_minutes(s: Mapping[str, Any]) -> int:
    """History loaded before the start so every trial's ghosts are warm when trading starts (as the lab's
    `warmup_span`): the longest warm-up over the fixed ghosts and, for a searched ghost, over its params with
    each searched range at its low and at its high end (the warm-up grows with the lookbacks). A trial whose
    config needs more than that warms up on what is loaded (the same for every worker: still deterministic)."""
    best = 0
    for g in s["ghosts"]:
        variants = [dict(g["params"])]
        for r in (r for r in s["space"] if r["ghost"] == g["name"] and r["kind"] in ("int", "float")):
            for end in ("low", "high"):
                variants.append({**g["params"], r["field"]: r[end]})
        for p in variants:
            try:
                best = max(best, warmup_minutes_for(g["kind"], p))
            except ConfigError:
                continue  # an infeasible corner (e.g. take_profit >= threshold): no trial runs it
    return best


def _study_days(start: datetime, end: datetime) -> list[str]:
    """Every UTC day of [start, end): the index of each trial's daily returns."""
    first = pd.Timestamp(start).tz_convert("UTC").floor("D")
    last = (pd.Timestamp(end).tz_convert("UTC") - pd.Timedelta(microseconds=1)).floor("D")
    return [d.strftime("%Y-%m-%d") for d in pd.date_range(first, last, freq="D")]


def _require_operator(actor) -> None:
    """The services enforce the role too (a view or a command may forget): None is the system (commands)."""
    if actor is not None and not is_operator(actor):
        raise PermissionDenied("only operators can start, steer or apply studies")


def _default_name(s: Mapping[str, Any]) -> str:
    what = "desk" if s["target"] == "desk" else s["target"]
    return f"{what} {s['objective']} {s['scheme']} {s['train_days']}/{s['test_days']}d " \
           f"{s['start'][:10]}..{s['end'][:10]}"[:200]


# --- create / pause / resume / cancel ----------------------------------------------------------------------

# By task name: apps.research.tasks imports this module, so importing it back would make a circle (issue 13).
STEP_TASK, TRIAL_TASK = "apps.research.tasks.study_step_task", "apps.research.tasks.trial_task"


def _queue_step(study_id: int) -> None:
    # robust: a dead broker must not undo the committed change; the sweeper queues the step again
    transaction.on_commit(lambda: celery_app.send_task(STEP_TASK, args=(study_id,)), robust=True)


def _dispatch(trial_ids: Sequence[int]) -> None:
    ids = list(trial_ids)

    def send() -> None:
        for tid in ids:
            celery_app.send_task(TRIAL_TASK, args=(tid,))

    if ids:
        transaction.on_commit(send, robust=True)


def _push_on_commit(study_id: int) -> None:
    def push() -> None:
        study = Study.objects.filter(pk=study_id).first()
        if study is not None:
            send_now(LAB_GROUP, progress_payload(study))

    transaction.on_commit(push)


@transaction.atomic
def study_create(*, actor, settings: Mapping[str, Any], name: str = "", queue: bool = True) -> Study:
    """Validate and store a queued study (folds, days, fingerprint over the stored range), and queue its first
    step after commit (`queue=False`: the caller drives it, as `study_run_inline`). Audited."""
    _require_operator(actor)
    clean = study_settings_validate(settings)
    # locked, as lab_run_create: a study created while its instrument is being deleted waits, then is refused
    if Instrument.objects.select_for_update().filter(pk=clean["instrument_id"]).only("pk").first() is None:
        raise ResearchError({"instrument_id": [f"no instrument {clean['instrument_id']}"]})
    start, end = datetime.fromisoformat(clean["start"]), datetime.fromisoformat(clean["end"])
    folds = make_folds(start, end, scheme=clean["scheme"], train_days=clean["train_days"],
                       test_days=clean["test_days"], step_days=clean["step_days"])
    rng = data_range(instrument_id=clean["instrument_id"], start=start - timedelta(minutes=clean["warmup_minutes"]),
                     end=end)
    version = code_version()
    total = clean["budget_trials"] * len(folds) if clean["budget_trials"] else None
    study = Study.objects.create(
        name=(name or "").strip()[:200] or _default_name(clean),
        created_by=actor if getattr(actor, "is_authenticated", False) else None,
        instrument_id=clean["instrument_id"], start=start, end=end, settings=clean,
        folds=[f.as_dict() for f in folds], days=_study_days(start, end), code_version=version,
        fingerprint=fingerprint(settings=clean, version=version, first=rng.first, last=rng.last, count=rng.count),
        trials_total=total)
    audit_record(actor=actor, action="study.created", obj=study,
                 after={"name": study.name, "fingerprint": study.fingerprint, "folds": len(folds),
                        "trials_total": total, "budget_minutes": clean["budget_minutes"]})
    send_on_commit(LAB_GROUP, progress_payload(study))
    if queue:
        _queue_step(study.pk)
    return study


def _stop_clock(study: Study, now: datetime) -> None:
    study.active_s = elapsed_s(study, now)
    study.resumed_at = None


@transaction.atomic
def study_pause(*, study_id: int, actor) -> Study:
    """A queued or running study stops asking and dispatching trials; the ones already running finish and are
    kept. Pausing a paused or finished study changes nothing. Audited."""
    _require_operator(actor)
    study = Study.objects.select_for_update().get(pk=study_id)  # DoesNotExist -> 404 in views
    if study.status not in (Study.Status.QUEUED, Study.Status.RUNNING):
        return study
    before = {"status": study.status}
    _stop_clock(study, timezone.now())
    study.status = Study.Status.PAUSED
    study.save(update_fields=["status", "active_s", "resumed_at"])
    audit_record(actor=actor, action="study.paused", obj=study, before=before, after={"status": study.status})
    _push_on_commit(study.pk)
    return study


@transaction.atomic
def study_resume(*, study_id: int, actor) -> Study:
    """A paused study runs again: its pending trials are dispatched again and a step is queued. Audited."""
    _require_operator(actor)
    study = Study.objects.select_for_update().get(pk=study_id)
    if study.status != Study.Status.PAUSED:
        return study
    now = timezone.now()
    study.status, study.resumed_at, study.heartbeat_at = Study.Status.RUNNING, now, now
    if study.started_at is None:
        study.started_at = now
    study.save(update_fields=["status", "resumed_at", "heartbeat_at", "started_at"])
    audit_record(actor=actor, action="study.resumed", obj=study, before={"status": "paused"},
                 after={"status": study.status})
    _dispatch(Trial.objects.filter(study=study, status=Trial.Status.PENDING).values_list("pk", flat=True))
    _queue_step(study.pk)
    _push_on_commit(study.pk)
    return study


@transaction.atomic
def study_cancel(*, study_id: int, actor) -> Study:
    """End a queued, running or paused study as cancelled: nothing more is asked; its pending trials never run
    (a trial already running finishes and is kept). A finished study is left as it is. Audited."""
    _require_operator(actor)
    study = Study.objects.select_for_update().get(pk=study_id)
    if not study.is_active:
        return study
    before = {"status": study.status}
    now = timezone.now()
    _stop_clock(study, now)
    study.status, study.finished_at = Study.Status.CANCELLED, now
    study.save(update_fields=["status", "finished_at", "active_s", "resumed_at"])
    audit_record(actor=actor, action="study.cancelled", obj=study, before=before, after={"status": study.status})
    _push_on_commit(study.pk)
    return study


# --- the driver ----------------------------------------------------------------------------------------------

def _seed(*parts: Any) -> int:
    """A 32-bit sampler seed from (study seed, fold[, batch]): stable across processes and Python versions."""
    return int.from_bytes(hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:4], "little")


def _sampler(s: Mapping[str, Any], fold: int, batch: int) -> optuna.samplers.BaseSampler:
    kind, seed = s["sampler"], s["seed"]
    if kind == "grid":
        # seeded per fold only: GridSampler gives trial n the n-th point of one seeded shuffle of the grid,
        # so every batch of a fold continues the same order and no point is visited twice
        return optuna.samplers.GridSampler(space_mod.grid(_ranges(s)), seed=_seed(seed, fold))
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=_seed(seed, fold, batch))
    # multivariate + group: one joint density per group of params that appear together (Watanabe 2023's advice;
    # our params interact: take_profit below the threshold), and half the ask cost of independent densities;
    # constant_liar: a batch's trials are asked before any is told, the liar spreads them out
    return optuna.samplers.TPESampler(seed=_seed(seed, fold, batch), multivariate=True, group=True,
                                      constant_liar=True)


def fold_study(s: Mapping[str, Any], fold: int, batch: int, finished: Sequence[Trial]) -> optuna.Study:
    """A fold's optuna study rebuilt in memory from its finished trials (in trial-number order, so optuna's
    numbers are ours): done with a value -> COMPLETE with it; done without one (undefined, fewer than
    min_trades) and infeasible -> COMPLETE at -inf (the worst: the sampler learns to avoid them); failed (an
    error, not a property of the params) -> FAIL (ignored by the samplers)."""
    ranges = _ranges(s)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study = optuna.create_study(direction="maximize", sampler=_sampler(s, fold, batch))
        for t in sorted(finished, key=lambda t: t.number):
            dists = _distributions(tuple(ranges))
            if t.status == Trial.Status.FAILED:
                ft = optuna.trial.create_trial(params=t.params, distributions=dists, state=optuna.trial.TrialState.FAIL)
            else:
                value = t.value if t.status == Trial.Status.DONE and t.value is not None else -math.inf
                ft = optuna.trial.create_trial(params=t.params, distributions=dists, value=value)
            study.add_trial(ft)
    return study


def _ask(s: Mapping[str, Any], fold: int, batch: int, finished: Sequence[Trial], n: int) -> list[dict[str, Any]]:
    ranges = _ranges(s)
    study = fold_study(s, fold, batch, finished)
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for _ in range(n):
            params = space_mod.suggest(study.ask(), ranges)
            # 0.30000000000000004 (a float step's arithmetic) stored and run as 0.3: readable, and the same
            # value on every machine; optuna gets the rounded value back when the fold is rebuilt
            out.append({k: float(f"{v:.12g}") if isinstance(v, float) else v for k, v in params.items()})
    return out


def _fold_cap(s: Mapping[str, Any]) -> int:
    if s["budget_trials"]:
        return int(s["budget_trials"])
    return int(s["grid_size"] or MAX_TRIALS_PER_FOLD)


def study_step(*, study_id: int, dispatch: bool = True) -> list[int]:
    """The driver (module docstring): claim a queued study, then for every fold with no trial in flight and
    budget left, ask its next batch and store it as pending (dispatched after commit unless `dispatch` is
    False); when no fold has anything left to run, compute the results and finish. Idempotent and safe to
    run concurrently (the study row is locked): returns the ids of the trials it created."""
    now = timezone.now()
    finish = failed = None
    created: list[int] = []
    with transaction.atomic():
        study = Study.objects.select_for_update().get(pk=study_id)
        if study.status == Study.Status.QUEUED:
            study.status, study.started_at, study.resumed_at, study.heartbeat_at = Study.Status.RUNNING, now, now, now
            study.save(update_fields=["status", "started_at", "resumed_at", "heartbeat_at"])
            _push_on_commit(study.pk)
        if study.status != Study.Status.RUNNING:
            return []
        s = study.settings
        # one aggregate per fold first: only the folds that get a new batch load their trials (a big study holds
        # up to MAX_FOLDS x MAX_TRIALS_PER_FOLD rows; a step usually asks for one fold)
        stats = {row["fold"]: row for row in Trial.objects.filter(study=study).order_by().values("fold").annotate(
            n=Count("id"), open=Count("id", filter=Q(status__in=(Trial.Status.PENDING, Trial.Status.RUNNING))),
            last_batch=Max("batch"))}
        cap = _fold_cap(s)
        over_time = bool(s["budget_minutes"]) and elapsed_s(study, now) >= s["budget_minutes"] * 60
        new: list[Trial] = []
        in_flight = any(row["open"] for row in stats.values())
        for k in (f["index"] for f in study.folds):
            row = stats.get(k, {"n": 0, "open": 0, "last_batch": None})
            if row["open"]:
                continue
            if row["n"]:
                last = list(Trial.objects.filter(study=study, fold=k, batch=row["last_batch"]).only("status", "error"))
                if all(t.status == Trial.Status.FAILED for t in last):
                    failed = (f"every trial of fold {k + 1}'s batch {row['last_batch'] + 1} failed; the first: "
                              f"{last[0].error}")
                    break
            if over_time or row["n"] >= cap:
                continue
            trials = list(Trial.objects.filter(study=study, fold=k).only("fold", "number", "batch", "status", "params",
                                                                          "value").order_by("number"))
            batch = row["last_batch"] + 1 if row["n"] else 0
            n = min(int(s["batch_size"]), cap - len(trials))
            for i, params in enumerate(_ask(s, k, batch, trials, n)):
                new.append(Trial(study=study, fold=k, number=len(trials) + i, batch=batch, params=params))
        if failed:
            _stop_clock(study, now)
            study.status, study.error, study.finished_at = Study.Status.FAILED, failed[:4000], now
            study.save(update_fields=["status", "error", "finished_at", "active_s", "resumed_at"])
            _push_on_commit(study.pk)
            return []
        if new:
            Trial.objects.bulk_create(new)
            created = [t.pk for t in new]
            study.heartbeat_at = now
            study.save(update_fields=["heartbeat_at"])
            if dispatch:
                _dispatch(created)
        elif not in_flight:
            finish = study.pk
    if finish is not None:
        _study_finish(finish)
    return created


def _study_finish(study_id: int) -> None:
    """Compute the results (outside any lock: the trials are final) and store them with status done in one
    transaction, if the study is still running with nothing in flight; a failure ends the study as failed."""
    from apps.research.results import study_results

    study = Study.objects.get(pk=study_id)
    try:
        results, error = study_results(study), ""
    except Exception as exc:  # noqa: BLE001 - the study must end on its row, with the reason
        log.exception("study %s: results failed", study_id)
        results, error = None, f"computing the results failed: {type(exc).__name__}: {exc}"
    with transaction.atomic():
        study = Study.objects.select_for_update().get(pk=study_id)
        if study.status != Study.Status.RUNNING or Trial.objects.filter(
                study=study, status__in=(Trial.Status.PENDING, Trial.Status.RUNNING)).exists():
            return
        now = timezone.now()
        _stop_clock(study, now)
        study.results, study.error = results, error
        study.status = Study.Status.DONE if results is not None else Study.Status.FAILED
        study.finished_at = study.heartbeat_at = now
        study.save(update_fields=["results", "error", "status", "finished_at", "heartbeat_at", "active_s",
                                  "resumed_at"])
        _push_on_commit(study.pk)


def study_run_inline(*, study_id: int, on_trial: Callable[[Trial], None] | None = None) -> Study:
    """Drive a study to its end in this process (the command without workers, the tests): step, execute the
    batch, step ... Exactly the workers' path, one trial at a time."""
    while True:
        ids = study_step(study_id=study_id, dispatch=False)
        if not ids:
            study = Study.objects.get(pk=study_id)
            pending = list(Trial.objects.filter(study=study, status__in=(Trial.Status.PENDING, Trial.Status.RUNNING))
                           .values_list("pk", flat=True))
            if study.status != Study.Status.RUNNING or not pending:
                return study
            ids = pending  # left by a pause/resume or a dead worker: run them here
        for tid in ids:
            t = trial_execute(trial_id=tid, queue_next=False)
            if on_trial is not None and t is not None:
                on_trial(t)


# --- a trial -------------------------------------------------------------------------------------------------

RUNS_PER_CONTEXT = 1024  # finished runs a worker keeps per study (a few KB each): a repeated param set is free


@dataclasses.dataclass
class _Loaded:
    fingerprint: str
    ctx: Any  # apps.engine.trial.TrialContext
    folds: list[Fold]
    settings: dict[str, Any]  # the study's, never changed after create: read once per process
    days: list[str]
    # param set -> its run: a trial runs the WHOLE range whatever its fold, so the same params asked again
    # (samplers repeat points of a stepped space; another fold asks them too) give the same run
    runs: OrderedDict[str, Any] = dataclasses.field(default_factory=OrderedDict)

    def run(self, params: Mapping[str, Any]) -> Any:
        key = json.dumps(params, sort_keys=True)
        hit = self.runs.get(key)
        if hit is not None:
            self.runs.move_to_end(key)
            return hit
        result = run_trial(self.ctx, params)
        self.runs[key] = result
        while len(self.runs) > RUNS_PER_CONTEXT:
            self.runs.popitem(last=False)
        return result


_CONTEXTS: OrderedDict[int, _Loaded] = OrderedDict()


def _context(study_id: int, fingerprint_: str) -> _Loaded:
    """This process's TrialContext of the study: the bars loaded ONCE (one query) and what does not depend on
    the searched params precomputed by the engine, with the study's settings, kept for the newest
    CONTEXTS_PER_PROCESS studies. The bars must be the ones the study was created on (the fingerprint over the
    data range and the settings, with the code version stamped at create, as the lab's runs): a study never
    mixes trials run on different data. A worker whose engine code differs from the study's stamp (a deploy
    while it ran) is logged, not refused: refusing would fail every study running across a deploy."""
    hit = _CONTEXTS.get(study_id)
    if hit is not None and hit.fingerprint == fingerprint_:
        _CONTEXTS.move_to_end(study_id)
        return hit
    study = Study.objects.select_related("instrument__exchange").get(pk=study_id)
    s = study.settings
    bars = run_bars(instrument_id=study.instrument_id, start=study.start - timedelta(minutes=s["warmup_minutes"]),
                    end=study.end)
    if len(bars) == 0:
        raise ResearchError("no stored bars in the study's range any more")
    fp = fingerprint(settings=s, version=study.code_version, first=bars.index[0].to_pydatetime(),
                     last=bars.index[-1].to_pydatetime(), count=len(bars))
    if fp != study.fingerprint:
        raise ResearchError("the stored bars changed since the study was created (fingerprint "
                            f"{fp[:12]} != {study.fingerprint[:12]}): its trials would not be comparable; start a "
                            "new study")
    if (mine := code_version()) != study.code_version:
        log.warning("study %s was created with %s; this worker runs %s", study_id, study.code_version, mine)
    # the instrument's lot rules, as the lab's runs and the paper desk apply them (issue 11)
    setups, cfg = backtest_inputs(s, exchange=study.instrument.exchange.code, lots=run_lot_rules(study.instrument))
    if bars.index[0] < pd.Timestamp(study.start):
        cfg = dataclasses.replace(cfg, trade_from=pd.Timestamp(study.start))
    searched = {r["ghost"] for r in s["space"]}
    ctx = TrialContext(bars, setups, cfg, searched=[g.ghost_id for g in setups if g.name in searched])
    loaded = _Loaded(fingerprint=study.fingerprint, ctx=ctx, folds=[Fold.from_dict(f) for f in study.folds],
                     settings=s, days=list(study.days))
    _CONTEXTS[study_id] = loaded
    while len(_CONTEXTS) > CONTEXTS_PER_PROCESS:
        _CONTEXTS.popitem(last=False)
    return loaded


def trial_params(s: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """A trial's params per searched ghost name: {ghost name: {field: value}}."""
    out: dict[str, dict[str, Any]] = {}
    by_key = {r["name"]: r for r in s["space"]}
    for key, value in params.items():
        r = by_key[key]
        out.setdefault(r["ghost"], {})[r["field"]] = value
    return out


_DAY_NS = 86_400_000_000_000


def daily_returns(daily_equity: pd.Series, days: Sequence[str]) -> list[float | None]:
    """The run's daily returns aligned to the study's days: the return between consecutive points of
    `TrialRun.daily_equity` (trading start, each UTC midnight, last close) belongs to the UTC day it starts in
    (two in one day, the partial first or last day, compound); None for a day the run has no point for (after
    the last stored bar) or a non-finite return."""
    n = len(days)
    if len(daily_equity) < 2 or n == 0:
        return [None] * n
    v = daily_equity.to_numpy(np.float64)
    t = pd.DatetimeIndex(daily_equity.index).as_unit("ns").asi8
    first = int(pd.Timestamp(days[0], tz="UTC").value) // _DAY_NS
    pos = t[:-1] // _DAY_NS - first
    ok = (pos >= 0) & (pos < n)
    growth = np.ones(n)
    np.multiply.at(growth, pos[ok], v[1:][ok] / v[:-1][ok])
    seen = np.zeros(n, dtype=bool)
    seen[pos[ok]] = True
    r = growth - 1.0
    return [float(x) if k and math.isfinite(x) else None for x, k in zip(r.tolist(), seen.tolist(), strict=True)]


def _trial_write(trial: Trial, token: datetime | None, fields: dict[str, Any], *, queue_next: bool) -> bool:
    """Store a trial's outcome if this execution still owns it (status running, started_at = token); count it,
    beat the study's heartbeat and push the progress (throttled over all workers by the study row's pushed_at),
    in one transaction. When the trial completes its fold's batch, the next step runs right after the commit in
    this process (`queue_next`; a queued step task would wait behind every trial already queued, and the fold's
    next batch with it); if that step fails, it is queued as a task instead."""
    now = timezone.now()
    with transaction.atomic():
        # the study row locked first: serialises the finishes of a study (its JSON columns are not read)
        study = Study.objects.select_for_update().only("status", "pushed_at").get(pk=trial.study_id)
        n = Trial.objects.filter(pk=trial.pk, status=Trial.Status.RUNNING, started_at=token).update(
            finished_at=now, **fields)
        if not n:
            return False
        batch_open = Trial.objects.filter(study_id=study.pk, fold=trial.fold, status__in=(
            Trial.Status.PENDING, Trial.Status.RUNNING)).exists()
        update = {"trials_done": F("trials_done") + 1, "heartbeat_at": now}
        if not batch_open or study.pushed_at is None or (now - study.pushed_at).total_seconds() >= PUSH_EVERY_S:
            update["pushed_at"] = now
            _push_on_commit(study.pk)
        Study.objects.filter(pk=study.pk).update(**update)
    if not batch_open and queue_next and study.status == Study.Status.RUNNING:
        try:
            study_step(study_id=study.pk)
        except Exception:  # noqa: BLE001 - the trial is stored; the step gets another chance as a task
            log.exception("study %s: step after trial %s failed; queued", study.pk, trial.pk)
            _queue_step(study.pk)
    return True


def trial_execute(*, trial_id: int, queue_next: bool = True) -> Trial | None:
    """Run one trial (module docstring). Idempotent: only a pending or running trial of a RUNNING study is
    claimed (a running one is taken over: its worker died and the task was delivered again); anything else
    returns the row as it is. A trial claimed MAX_ATTEMPTS times already is failed instead of run again."""
    now = timezone.now()
    claimed = Trial.objects.filter(
        pk=trial_id, status__in=(Trial.Status.PENDING, Trial.Status.RUNNING), attempts__lt=MAX_ATTEMPTS,
        study__status=Study.Status.RUNNING).update(status=Trial.Status.RUNNING, started_at=now,
                                                   attempts=F("attempts") + 1)
    trial = (Trial.objects.filter(pk=trial_id).only("study_id", "fold", "number", "params", "status", "attempts",
                                                   "started_at")
             .annotate(study_fingerprint=F("study__fingerprint"), study_status=F("study__status")).first())
    if trial is None:
        return None
    if not claimed:
        if trial.status in (Trial.Status.PENDING, Trial.Status.RUNNING) and trial.attempts >= MAX_ATTEMPTS \
                and trial.study_status == Study.Status.RUNNING:
            if trial.status == Trial.Status.PENDING:  # never claimed by a running execution: claim to fail it
                Trial.objects.filter(pk=trial.pk, status=Trial.Status.PENDING).update(status=Trial.Status.RUNNING,
                                                                                     started_at=now)
                trial.started_at = now
            _trial_write(trial, trial.started_at, {
                "status": Trial.Status.FAILED,
                "error": f"gave up after {trial.attempts} attempts: the worker running it died each time"},
                queue_next=queue_next)
            trial.refresh_from_db()
        return trial
    try:
        loaded = _context(trial.study_id, trial.study_fingerprint)
        s = loaded.settings
        fold = loaded.folds[trial.fold]
        run = loaded.run(trial.params)
        if run.infeasible:
            fields = {"status": Trial.Status.INFEASIBLE, "error": str(run.infeasible)[:4000]}
        else:
            ((train, test),) = run.scores([fold], objective=s["objective"], min_trades=s["min_trades"])
            fields = {"status": Trial.Status.DONE, "train": train.as_dict(), "test": test.as_dict(),
                      "value": train.value, "test_value": test.value, "n_trades": int(run.n_trades),
                      "daily": daily_returns(run.daily_equity, loaded.days), "error": ""}
    except Exception as exc:  # noqa: BLE001 - every failure ends on the row, with its reason
        from celery.exceptions import SoftTimeLimitExceeded

        if isinstance(exc, SoftTimeLimitExceeded):
            msg = "stopped by the trial task's time limit"
        else:
            log.exception("trial %s of study %s failed", trial.pk, trial.study_id)
            msg = f"{type(exc).__name__}: {exc}"
        fields = {"status": Trial.Status.FAILED, "error": msg[:4000]}
    if _trial_write(trial, now, fields, queue_next=queue_next):
        for k, v in fields.items():
            setattr(trial, k, v)
    else:
        trial.refresh_from_db()
    return trial


# --- sweeper -------------------------------------------------------------------------------------------------

def studies_sweep(*, stale_s: float | None = None) -> list[int]:
    """What a dead worker or a lost message left behind (beat, every 30 s), for studies still running:
    - trials running since more than `stale_s` (HFT_RESEARCH_STALE_S, default 120 s; a trial takes seconds)
      are dispatched again (the next claim takes them over; after MAX_ATTEMPTS they fail);
    - a study whose heartbeat (last trial written or step taken) is older than `stale_s` gets its pending
      trials dispatched again and a step queued (a lost step or trial message);
    - a queued study older than `stale_s` gets its first step queued again.
    Returns the ids of the studies it touched."""
    stale_s = float(getattr(dj_settings, "HFT_RESEARCH_STALE_S", 120) if stale_s is None else stale_s)
    now = timezone.now()
    cutoff = now - timedelta(seconds=stale_s)
    touched: set[int] = set()
    with transaction.atomic():
        for sid in Study.objects.filter(status=Study.Status.QUEUED, created_at__lt=cutoff).values_list("pk", flat=True):
            _queue_step(sid)
            touched.add(sid)
        running = Study.objects.filter(status=Study.Status.RUNNING)
        stuck = list(Trial.objects.filter(study__in=running, status=Trial.Status.RUNNING, started_at__lt=cutoff)
                     .values_list("pk", "study_id"))
        _dispatch([pk for pk, _ in stuck])
        touched.update(sid for _, sid in stuck)
        quiet = list(running.filter(Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True))
                     .values_list("pk", flat=True))
        if quiet:
            _dispatch(Trial.objects.filter(study_id__in=quiet, status=Trial.Status.PENDING)
                      .values_list("pk", flat=True))
            for sid in quiet:
                _queue_step(sid)
            Study.objects.filter(pk__in=quiet).update(heartbeat_at=now)  # the next sweep waits stale_s again
            touched.update(quiet)
    if touched:
        log.warning("research sweep: studies %s had stalled trials or steps; dispatched again", sorted(touched))
    return sorted(touched)


# --- apply ---------------------------------------------------------------------------------------------------

@transaction.atomic
def study_apply(*, study_id: int, trial_id: int, ghost_id: int, actor, reason: str):
    """Put a done trial's params onto a ghost of that kind (operators only; a reason is required): the ghost
    gets the config the trial ran with (the study's fixed params of that ghost + the trial's searched values),
    through `ghost_update_params` (the engine's validation, audited, pushed), with `params_source` {study_id,
    trial_id, fold, at, by}; a second audit row `study.applied` ties it to the study and the trial."""
    from apps.ghosts.models import Ghost
    from apps.ghosts.services import GhostError, ghost_update_params

    if actor is None or not is_operator(actor):
        raise PermissionDenied("only operators can apply a study's parameters to a ghost")
    reason = (reason or "").strip()
    if not reason:
        raise ResearchError({"reason": ["a reason is required"]})
    if len(reason) > 500:
        raise ResearchError({"reason": ["reason is too long (max 500 characters)"]})
    study = Study.objects.get(pk=study_id)
    trial = Trial.objects.filter(pk=trial_id, study=study).first()
    if trial is None:
        raise ResearchError({"trial": [f"no trial {trial_id} in study {study_id}"]})
    if trial.status != Trial.Status.DONE:
        raise ResearchError({"trial": [f"trial {trial.number} of fold {trial.fold + 1} is {trial.status}; only a "
                                       "done trial can be applied"]})
    ghost = Ghost.objects.filter(pk=ghost_id).first()
    if ghost is None:
        raise ResearchError({"ghost": [f"no ghost {ghost_id}"]})
    s = study.settings
    per_ghost = trial_params(s, trial.params)
    run_ghost = next((g for g in s["ghosts"] if g["kind"] == ghost.kind and g["name"] in per_ghost), None)
    if run_ghost is None:
        kinds = sorted({g["kind"] for g in s["ghosts"] if g["name"] in per_ghost})
        raise ResearchError({"ghost": [f"{ghost.name} is a {ghost.kind}; this study searched {', '.join(kinds)}"]})
    params = {**run_ghost["params"], **per_ghost[run_ghost["name"]]}
    now = timezone.now()
    source = {"study_id": study.pk, "trial_id": trial.pk, "fold": trial.fold, "number": trial.number,
              "at": now.isoformat(), "by": getattr(actor, "username", "")}
    try:
        ghost = ghost_update_params(ghost_id=ghost.pk, params=params, actor=actor, source=source,
                                    reason=f"{reason} (study {study.pk}, trial {trial.pk})")
    except GhostError as e:
        raise ResearchError({"ghost": [str(e)]}) from None
    audit_record(actor=actor, action="study.applied", obj=study, reason=reason,
                 after={"study_id": study.pk, "trial_id": trial.pk, "fold": trial.fold, "number": trial.number,
                        "ghost_id": ghost.pk, "ghost": ghost.name, "params": params})
    return ghost

