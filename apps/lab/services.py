"""Writes of the research lab: validate a run's settings, create/queue it, execute it, cancel, re-queue,
sweep runs whose worker died, and edit the success criteria.

Life of a run (status): queued -> running -> done | failed | cancelled; failed/cancelled (and a queued run
whose message was lost) can be re-queued. Safety rules:

- `lab_run_execute` CLAIMS a queued run with one conditional UPDATE (status queued -> running, started_at =
  now); `started_at` is the claim's token: every later write of that execution is conditional on
  (status running, started_at = token), so a second delivery, a swept run or a re-queued copy can never be
  overwritten by a stale worker, and a stale worker notices (RunLost) and stops.
- Every result is written in ONE transaction that also sets status done: a worker killed mid-run leaves the
  run "running" with no result rows; the sweeper (beat, `lab_runs_sweep`) then marks it failed ("worker
  lost") once its heartbeat is older than HFT_LAB_STALE_S (60 s), and `lab_run_requeue` runs it again.
- The task is not acks_late (a run is minutes of CPU, and a poison run must not loop): a lost worker means a
  failed run that a person re-queues, never a silent second execution.
- Progress: the engine's `progress` callback updates the row (heartbeat, bars done) at most every 0.5 s,
  checks the cancel flag there (the flag is a DB column: no second system to keep in sync) and raises
  RunCancelled, and pushes `lab.progress` to the `lab` group at most every 0.25 s plus every state change.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd
from django.conf import settings as dj_settings
from django.db import transaction
from django.utils import timezone

from apps.audit.services import audit_record
from apps.common.realtime import send_now, send_on_commit
from apps.engine import backtest as bt
from apps.engine.criteria import Gates, gates_from_report
from apps.engine.fills import FillModel, fill_model_for
from apps.engine.lots import LotRules, num
from apps.engine.registry import config_from_params, get_spec, warmup_minutes_for
from apps.engine.report import report_build, trade_return_pct
from apps.engine.risk import RiskLimits
from apps.engine.types import ConfigError
from apps.lab.events import LAB_GROUP, progress_payload
from apps.lab.models import BacktestRun, BacktestSignal, BacktestTrade, SuccessCriteria
from apps.lab.selectors import criteria_gates, data_range, run_bars, success_criteria
from apps.lab.series import series_pack
from apps.market.models import Instrument
from apps.trading.lot_rules import lot_rules
from hftweb.celery import app as celery_app

log = logging.getLogger(__name__)

DIRECTIONS = bt.DIRECTIONS
MAX_GHOSTS = 20
MAX_BARS = 3_000_000  # ~5.7 years of 1m in one run: ~0.5 GB of engine arrays, the most a 2-core worker should hold
HEARTBEAT_EVERY_S = 0.5  # DB heartbeat + cancel check
PUSH_EVERY_S = 0.25  # browser progress: at most 4 a second
INSERT_BATCH = 1000  # rows per bulk INSERT: 17 fields x 1000 stays under SQLite's 32,766 bound variables


class LabError(ValueError):
    """A refused lab request; `errors` maps a field ("start", "ghosts[1].params") to its messages."""

    def __init__(self, errors: Mapping[str, list[str]] | str):
        self.errors = {"__all__": [errors]} if isinstance(errors, str) else {k: list(v) for k, v in errors.items()}
        super().__init__("; ".join(f"{k}: {m}" if k != "__all__" else m
                                   for k, msgs in self.errors.items() for m in msgs))


class RunCancelled(Exception):
    """Raised from the progress callback when an operator asked to cancel the run."""


class RunLost(Exception):
    """The run is no longer this execution's (swept, re-queued or finished by someone else)."""


# --- settings ----------------------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def code_version() -> str:
    """What decides a run's results besides data and settings: the engine's source (apps/engine/*.py) and
    this module, hashed (a deploy without git still gets a version); "engine-<12 hex>"."""
    h = hashlib.sha256()
    engine = Path(bt.__file__).resolve().parent
    for p in sorted([*engine.glob("*.py"), Path(__file__).resolve()]):
        h.update(p.name.encode() + b"\0" + p.read_bytes() + b"\0")
    return f"engine-{h.hexdigest()[:12]}"


def _parse_time(value: Any) -> datetime:
    """A UTC datetime from a datetime, a date (midnight UTC) or ISO-8601 text; naive means UTC."""
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, date):
        dt = datetime(value.year, value.month, value.day)
    elif isinstance(value, str) and value.strip():
        try:
            dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"not a date/time: {value!r} (use e.g. 2025-05-20 or 2025-05-20T12:00)") from None
    else:
        raise ValueError("required (a date or date/time, UTC)")
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def _number(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise ConfigError(f"{field} must be a number, got {value!r}")
    f = float(value)
    if not math.isfinite(f):
        raise ConfigError(f"{field} must be a finite number, got {value!r}")
    return f


def _validate_sizing(raw: Any) -> dict[str, Any]:
    """The engine's Sizing (its own messages) as a dict."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError("sizing must be an object with mode, stake, equity_pct")
    allowed = [f.name for f in dataclasses.fields(bt.Sizing)]
    unknown = sorted(set(raw) - set(allowed))
    if unknown:
        raise ConfigError(f"unknown sizing field(s): {', '.join(unknown)}; allowed: {', '.join(allowed)}")
    kw = {k: (v if k == "mode" else _number(v, f"sizing.{k}")) for k, v in raw.items()}
    return dataclasses.asdict(bt.Sizing(**kw))


def _validate_ghosts(raw: Any, errors: dict[str, list[str]]) -> list[dict[str, Any]]:
    if not isinstance(raw, list | tuple) or not raw:
        errors.setdefault("ghosts", []).append("choose at least one ghost")
        return []
    if len(raw) > MAX_GHOSTS:
        errors.setdefault("ghosts", []).append(f"at most {MAX_GHOSTS} ghosts per run, got {len(raw)}")
        return []
    out, names = [], set()
    for i, g in enumerate(raw):
        key = f"ghosts[{i}]"
        if not isinstance(g, Mapping):
            errors.setdefault(key, []).append("each ghost must be an object with kind, params, direction")
            continue
        unknown = sorted(set(g) - {"kind", "name", "params", "direction"})
        if unknown:
            errors.setdefault(key, []).append(f"unknown field(s) {', '.join(unknown)}")
        kind = g.get("kind")
        try:
            get_spec(kind)
        except ConfigError as e:
            errors.setdefault(f"{key}.kind", []).append(str(e))
            continue
        try:
            params = config_from_params(kind, g.get("params") or {}).to_params()  # the Ghosts page's messages
        except ConfigError as e:
            errors.setdefault(f"{key}.params", []).append(str(e))
            params = None
        direction = g.get("direction", "both") or "both"
        if direction not in DIRECTIONS:
            errors.setdefault(f"{key}.direction", []).append(
                f"direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
        name = g.get("name") or kind
        if not isinstance(name, str) or len(name) > 64:
            errors.setdefault(f"{key}.name", []).append("name must be text of at most 64 characters")
            continue
        base, n = name.strip() or kind, 2
        name = base
        while name in names:  # two ghosts of one kind get "kind", "kind 2"
            name, n = f"{base} {n}", n + 1
        names.add(name)
        if params is not None:
            out.append({"kind": kind, "name": name, "params": params, "direction": direction})
    return out


def lab_settings_validate(data: Mapping[str, Any]) -> dict[str, Any]:
    """The canonical settings of a run (what BacktestRun.settings stores, what the form and the command
    both produce), or LabError with messages per field. Defaults: fee = the instrument's exchange FillModel,
    limits = the desk's current risk limits, capital = HFT_START_CAPITAL, sizing = risk, both toggles on."""
    from apps.trading.risk_selectors import risk_limits

    if not isinstance(data, Mapping):
        raise LabError("settings must be an object")
    errors: dict[str, list[str]] = {}

    def err(field: str, msg: str) -> None:
        errors.setdefault(field, []).append(msg)

    known = {"instrument_id", "start", "end", "ghosts", "start_capital", "fee", "limits", "sizing", "auto_disable",
             "kill_switch"}
    for k in sorted(set(data) - known):
        err(k, f"unknown setting {k!r}")
    inst = None
    iid = data.get("instrument_id")
    if type(iid) is not int:
        err("instrument_id", "choose an instrument")
    else:
        inst = Instrument.objects.select_related("exchange").filter(pk=iid).first()
        if inst is None:
            err("instrument_id", f"no instrument {iid}")
    start = end = None
    for field in ("start", "end"):
        try:
            value = _parse_time(data.get(field))
        except ValueError as e:
            err(field, str(e))
            continue
        if field == "start":
            start = value
        else:
            end = value
    if start and end and end <= start:
        err("end", "end must be after start (end is exclusive)")
    elif inst and start and end:
        rng = data_range(instrument_id=inst.pk, start=start, end=end)
        if rng.count == 0:
            whole = data_range(instrument_id=inst.pk, start=datetime(1970, 1, 1, tzinfo=UTC),
                               end=datetime(9999, 1, 1, tzinfo=UTC))
            stored = (f"stored: {whole.first:%Y-%m-%d %H:%M} to {whole.last:%Y-%m-%d %H:%M} UTC ({whole.count:,} bars)"
                      if whole.count else "nothing is stored for it; import or download history first")
            err("start", f"no stored 1m candles of {inst} from {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC; "
                         f"{stored}")
        elif rng.count > MAX_BARS:
            err("end", f"the range holds {rng.count:,} bars; at most {MAX_BARS:,} per run")

    ghosts = _validate_ghosts(data.get("ghosts"), errors)

    capital = data.get("start_capital", dj_settings.HFT_START_CAPITAL)
    try:
        cap = Decimal(str(capital)) if not isinstance(capital, bool) else None
        if cap is None or not cap.is_finite() or not 0 < cap <= Decimal("1e12"):
            raise InvalidOperation
    except (InvalidOperation, ValueError):
        err("start_capital", f"start capital must be a number > 0 (quote currency), got {capital!r}")
        cap = None

    fee = None
    raw_fee = data.get("fee") or {}
    if not isinstance(raw_fee, Mapping):
        err("fee", "fee must be an object with taker_fee, maker_fee, slippage_bps")
    else:
        base = dataclasses.asdict(fill_model_for(inst.exchange.code if inst else None))
        unknown = sorted(set(raw_fee) - set(base))
        if unknown:
            err("fee", f"unknown fee field(s) {', '.join(unknown)}; allowed: {', '.join(base)}")
        else:
            try:
                kw = {k: _number(v, f"fill_model.{k}") for k, v in raw_fee.items()}
                fee = dataclasses.asdict(FillModel(**{**base, **kw}))
            except ConfigError as e:
                err("fee", str(e))

    limits = None
    raw_limits = data.get("limits") or {}
    if not isinstance(raw_limits, Mapping):
        err("limits", "limits must be an object of risk limit fields")
    else:
        try:
            limits = RiskLimits.from_params({**risk_limits().to_params(), **raw_limits}).to_params()
        except ConfigError as e:
            err("limits", str(e))

    sizing = None
    try:
        sizing = _validate_sizing(data.get("sizing"))
    except ConfigError as e:
        err("sizing", str(e))

    toggles = {}
    for flag in ("auto_disable", "kill_switch"):
        v = data.get(flag, True)
        if not isinstance(v, bool):
            err(flag, f"{flag} must be true or false, got {v!r}")
        toggles[flag] = bool(v)

    if errors:
        raise LabError(errors)
    return {
        "instrument_id": inst.pk, "start": start.isoformat(), "end": end.isoformat(), "ghosts": ghosts,
        "start_capital": str(cap), "fee": fee, "limits": limits, "sizing": sizing, **toggles,
    }


def fingerprint(*, settings: Mapping[str, Any], version: str, first: datetime | None, last: datetime | None,
                count: int) -> str:
    """sha256 hex of the code version, the data range actually used (first/last bar open time, bar count) and
    the canonical settings (sorted-key JSON): two runs with one fingerprint computed the same thing."""
    blob = json.dumps({"code": version, "data": {"first": first.isoformat() if first else None,
                                                 "last": last.isoformat() if last else None, "count": count},
                       "settings": settings}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def backtest_inputs(settings: Mapping[str, Any], *, exchange: str | None = None, lots: LotRules | None = None
                    ) -> tuple[list[bt.GhostSetup], bt.BacktestConfig]:
    """The engine's GhostSetups and BacktestConfig for validated settings (ghost ids 1.. in the given order,
    so a tie in the manager keeps the earlier ghost). `lots`: the instrument's lot rules (`run_lot_rules`),
    so the backtest rounds and refuses orders as the paper executor does."""
    setups = [bt.GhostSetup(ghost_id=i, name=g["name"], kind=g["kind"], direction=g.get("direction", "both"),
                            config=config_from_params(g["kind"], g["params"]))
              for i, g in enumerate(settings["ghosts"], start=1)]
    cfg = bt.BacktestConfig(
        start_capital=Decimal(settings["start_capital"]), exchange=exchange or "binance",
        fill_model=FillModel(**settings["fee"]), limits=RiskLimits.from_params(settings["limits"]),
        sizing=bt.Sizing(**settings["sizing"]), auto_disable=bool(settings["auto_disable"]),
        kill_switch=bool(settings["kill_switch"]), lots=lots)
    return setups, cfg


def run_lot_rules(instrument: Instrument) -> LotRules | None:
    """The lot rules a backtest of `instrument` applies: the instrument's stored ccxt facts, read by the same
    function the paper executor reads them with (`apps.trading.lot_rules.lot_rules`); None when no rule is
    known (the instrument was never looked up), so such a run is exactly what it was before lot rules."""
    rules = lot_rules(instrument)
    known = (rules.amount_step, rules.price_tick, rules.min_amount, rules.min_notional)
    return rules if any(v is not None for v in known) or rules.contract else None


def lot_rules_params(rules: LotRules | None) -> dict[str, Any] | None:
    """The rules as JSON values (the run's fingerprint and its report's notes), None without rules."""
    if rules is None:
        return None
    return {f.name: (str(v) if isinstance(v, Decimal) else v)
            for f in dataclasses.fields(rules) if (v := getattr(rules, f.name)) is not None}


_MINUTE = timedelta(minutes=1)


def warmup_span(settings: Mapping[str, Any]) -> timedelta:
    """History a run loads before its start, so its ghosts (and the trend gate, the trend ghost's config)
    are warm when trading starts, as on the desk, which warms itself: the longest warm-up of its ghosts
    (`registry.warmup_minutes_for` with their params). Bars that are not stored are simply not there."""
    return _MINUTE * max(warmup_minutes_for(g["kind"], g["params"]) for g in settings["ghosts"])


def _default_name(settings: Mapping[str, Any]) -> str:
    kinds = ", ".join(g["name"] for g in settings["ghosts"][:3]) + (" …" if len(settings["ghosts"]) > 3 else "")
    return f"{kinds} {settings['start'][:10]}..{settings['end'][:10]}"[:200]


# --- create, cancel, re-queue ---------------------------------------------------------------------------------

def _queue(run_id: int) -> None:
    # By task name: apps.lab.tasks imports this module, so importing it back would make a circle (issue 13).
    # robust: a dead broker must not undo the committed request; the run stays queued and can be re-queued
    transaction.on_commit(lambda: celery_app.send_task("apps.lab.tasks.lab_run_task", args=(run_id,)), robust=True)


@transaction.atomic
def lab_run_create(*, actor, settings: Mapping[str, Any], name: str = "", source: str = "lab",
                   compare_of: Mapping[str, Any] | None = None, queue: bool = True) -> BacktestRun:
    """Validate, store a queued run (with its fingerprint over the stored range) and queue its task after
    commit (`queue=False`: the caller runs `lab_run_execute` itself, as the command does). Audited."""
    clean = lab_settings_validate(settings)
    # locked: a run created while its instrument is being deleted waits for the delete, then is refused
    if Instrument.objects.select_for_update().filter(pk=clean["instrument_id"]).only("pk").first() is None:
        raise LabError({"instrument_id": [f"no instrument {clean['instrument_id']}"]})
    start, end = datetime.fromisoformat(clean["start"]), datetime.fromisoformat(clean["end"])
    rng = data_range(instrument_id=clean["instrument_id"], start=start - warmup_span(clean), end=end)
    version = code_version()
    run = BacktestRun.objects.create(
        name=(name or "").strip()[:200] or _default_name(clean),
        created_by=actor if getattr(actor, "is_authenticated", False) else None,
        instrument_id=clean["instrument_id"], start=start, end=end, settings=clean, code_version=version,
        fingerprint=fingerprint(settings=clean, version=version, first=rng.first, last=rng.last, count=rng.count),
        bars_total=rng.count, source=source, compare_of=dict(compare_of) if compare_of else None,
    )
    audit_record(actor=actor, action="lab_run.created", obj=run,
                 after={"name": run.name, "fingerprint": run.fingerprint, "source": source})
    send_on_commit(LAB_GROUP, progress_payload(run))
    if queue:
        _queue(run.pk)
    return run


@transaction.atomic
def lab_run_cancel(*, run_id: int, actor) -> BacktestRun:
    """A queued run is cancelled at once; a running one gets the flag, which its progress callback reads
    within ~0.5 s and then ends the run as cancelled. A finished run is left as it is (idempotent)."""
    run = BacktestRun.objects.select_for_update().get(pk=run_id)  # DoesNotExist -> 404 in views
    if not run.is_active or (run.cancel_requested and run.status == BacktestRun.Status.RUNNING):
        return run
    before = {"status": run.status}
    if run.status == BacktestRun.Status.QUEUED:
        run.status, run.finished_at = BacktestRun.Status.CANCELLED, timezone.now()
        run.cancel_requested = True
        run.save(update_fields=["status", "finished_at", "cancel_requested"])
    else:
        run.cancel_requested = True
        run.save(update_fields=["cancel_requested"])
    audit_record(actor=actor, action="lab_run.cancel", obj=run, before=before,
                 after={"status": run.status, "cancel_requested": True})
    send_on_commit(LAB_GROUP, progress_payload(run))
    return run


@transaction.atomic
def lab_run_requeue(*, run_id: int, actor) -> BacktestRun:
    """Queue a failed, cancelled or stuck-queued run again from the start (its result rows, if any, are
    dropped; a failed run has none by construction). Audited."""
    run = BacktestRun.objects.select_for_update().get(pk=run_id)
    if run.status not in (BacktestRun.Status.FAILED, BacktestRun.Status.CANCELLED, BacktestRun.Status.QUEUED):
        raise LabError(f"run {run.pk} is {run.status}; only a failed, cancelled or queued run can be queued again")
    before = {"status": run.status, "error": run.error}
    BacktestTrade.objects.filter(run=run).delete()
    BacktestSignal.objects.filter(run=run).delete()
    run.status, run.stage, run.error, run.cancel_requested = BacktestRun.Status.QUEUED, "", "", False
    run.bars_done, run.started_at, run.finished_at, run.heartbeat_at = 0, None, None, None
    run.summary = run.ghost_figures = run.criteria = run.series = None
    run.daily = []
    run.save(update_fields=["status", "stage", "error", "cancel_requested", "bars_done", "started_at", "finished_at",
                            "heartbeat_at", "summary", "ghost_figures", "criteria", "series", "daily"])
    audit_record(actor=actor, action="lab_run.requeued", obj=run, before=before, after={"status": run.status})
    send_on_commit(LAB_GROUP, progress_payload(run))
    _queue(run.pk)
    return run


def lab_runs_sweep(*, stale_s: float | None = None) -> list[int]:
    """Mark failed ("worker lost") every running run whose heartbeat is older than `stale_s` (default
    HFT_LAB_STALE_S, 60 s: two orders of magnitude above the 0.5 s heartbeat). Beat calls it every 30 s."""
    stale_s = float(getattr(dj_settings, "HFT_LAB_STALE_S", 60) if stale_s is None else stale_s)
    now = timezone.now()
    cutoff = now - timedelta(seconds=stale_s)
    swept = []
    stale = BacktestRun.objects.filter(status=BacktestRun.Status.RUNNING, heartbeat_at__lt=cutoff)
    for run in stale.only("pk", "heartbeat_at", "stage", "started_at"):
        with transaction.atomic():
            error = (f"worker lost: no heartbeat since {run.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC while {run.stage} "
                     f"(more than {stale_s:g} s); queue it again to rerun")
            n = BacktestRun.objects.filter(pk=run.pk, status=BacktestRun.Status.RUNNING, started_at=run.started_at,
                                           heartbeat_at__lt=cutoff).update(status=BacktestRun.Status.FAILED,
                                                                           error=error, finished_at=now)
            if n:
                swept.append(run.pk)
                row = BacktestRun.objects.get(pk=run.pk)
                send_on_commit(LAB_GROUP, progress_payload(row))
    if swept:
        log.warning("lab runs %s marked failed: worker lost", swept)
    return swept


@transaction.atomic
def lab_criteria_update(*, actor, reason: str, **gates: Any) -> SuccessCriteria:
    """Change some gates (validated by `criteria.Gates`; a refused value saves nothing), audited with the
    reason and the gates before and after."""
    reason = (reason or "").strip()
    if not reason:
        raise LabError({"reason": ["a reason is required"]})
    if len(reason) > 500:
        raise LabError({"reason": ["reason is too long (max 500 characters)"]})
    row = success_criteria()
    row = SuccessCriteria.objects.select_for_update().get(pk=row.pk)
    before = criteria_gates(row).to_params()
    try:
        after = Gates.from_params({**before, **gates}).to_params()
    except ConfigError as e:
        raise LabError({"gates": [str(e)]}) from None
    if after == before:
        return row
    for k, v in after.items():
        setattr(row, k, Decimal(str(v)) if k in ("daily_profit_min", "capital_basis") else v)
    row.updated_by = actor if getattr(actor, "is_authenticated", False) else None
    row.save()
    audit_record(actor=actor, action="lab_criteria.changed", obj=row, reason=reason, before=before, after=after)
    return row


# --- execute -------------------------------------------------------------------------------------------------

class _Tracker:
    """Heartbeat, cancel check and progress pushes of one execution (see the module docstring)."""

    def __init__(self, run: BacktestRun):
        self.run = run
        self.token = run.started_at
        self.last_beat = 0.0
        self.last_push = 0.0
        self.walk_t0: float | None = None

    def _rate(self) -> tuple[float | None, float | None]:
        if self.walk_t0 is None or self.run.bars_done <= 0:
            return None, None
        rate = self.run.bars_done / max(time.monotonic() - self.walk_t0, 1e-6)
        return rate, max(self.run.bars_total - self.run.bars_done, 0) / rate

    def checkpoint(self, fields: tuple[str, ...] = ()) -> None:
        """Write the heartbeat (+ fields) if the run is still this execution's; raise RunCancelled when an
        operator asked to cancel, RunLost when the run is no longer ours."""
        with transaction.atomic():
            state = (BacktestRun.objects.select_for_update()
                     .filter(pk=self.run.pk, status=BacktestRun.Status.RUNNING, started_at=self.token)
                     .values_list("cancel_requested", flat=True).first())
            if state is None:
                raise RunLost(f"run {self.run.pk} is no longer running under this worker")
            if state:
                raise RunCancelled()
            self.run.heartbeat_at = timezone.now()
            self.run.save(update_fields=["heartbeat_at", "bars_done", "bars_total", *fields])
        self.last_beat = time.monotonic()

    def push(self) -> None:
        rate, eta = self._rate()
        send_now(LAB_GROUP, progress_payload(self.run, bars_per_s=rate, eta_s=eta))
        self.last_push = time.monotonic()

    def stage(self, stage: str) -> None:
        self.run.stage = stage
        if stage == BacktestRun.STAGE_WALKING:
            self.walk_t0 = time.monotonic()
        self.checkpoint(("stage",))
        self.push()

    def progress(self, stage: str, done: int, total: int) -> None:
        """The engine's progress callback: ("walk", bar index, bars) during the walk."""
        if stage == "walk":
            self.run.bars_done = int(done)
        now = time.monotonic()
        if now - self.last_beat >= HEARTBEAT_EVERY_S:
            self.checkpoint()
        if now - self.last_push >= PUSH_EVERY_S:
            self.push()


def _finish(run: BacktestRun, token: datetime | None, status: str, error: str = "") -> None:
    """Set a terminal status if the run is still this execution's."""
    now = timezone.now()
    n = BacktestRun.objects.filter(pk=run.pk, status=BacktestRun.Status.RUNNING, started_at=token).update(
        status=status, error=error[:4000], finished_at=now, heartbeat_at=now)
    if n:
        run.status, run.error, run.finished_at = status, error[:4000], now
        send_now(LAB_GROUP, progress_payload(run))


def _signal_rows(run: BacktestRun, result: bt.BacktestResult, drafts: Mapping[int, pd.DataFrame],
                 kinds: Mapping[int, str]) -> list[BacktestSignal]:
    fates = result.fates
    out: list[BacktestSignal] = []
    if len(fates) == 0:
        return out
    for gid, sub in fates.groupby("ghost_id", sort=True):
        d = drafts[int(gid)]
        pos = d.index.get_indexer(pd.DatetimeIndex(sub["bar_time"]))
        conf, entry = d["confidence"].to_numpy()[pos], d["entry"].to_numpy()[pos]
        stop, target = d["stop"].to_numpy()[pos], d["target"].to_numpy()[pos]
        reason = d["reason"].to_numpy(dtype=object)[pos]
        for k, row in enumerate(sub.itertuples(index=False)):
            out.append(BacktestSignal(
                run=run, bar_time=row.bar_time.to_pydatetime(), ghost=row.ghost, kind=kinds[int(gid)],
                side=int(row.side), fate=row.fate, detail=row.detail, score=_f(row.score), confidence=_f(conf[k]),
                entry=_f(entry[k]), stop=_f(stop[k]), target=_f(target[k]), reason=str(reason[k])))
    out.sort(key=lambda s: (s.bar_time, s.ghost))
    return out


def _f(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _trade_rows(run: BacktestRun, result: bt.BacktestResult, kinds: Mapping[int, str],
                signal_ids: Mapping[tuple[str, datetime], int]) -> list[BacktestTrade]:
    rows = []
    for seq, t in enumerate(result.trades, start=1):
        st = t.signal_time.to_pydatetime()
        rows.append(BacktestTrade(
            run=run, seq=seq, ghost=t.ghost, kind=kinds[t.ghost_id], side=t.side, signal_time=st,
            entry_time=t.entry_time.to_pydatetime(), entry_price=t.entry_price, exit_time=t.exit_time.to_pydatetime(),
            exit_price=t.exit_price, qty=t.qty, entry_fee=t.entry_fee, exit_fee=t.exit_fee, gross_pnl=t.gross_pnl,
            net_pnl=t.net_pnl, return_pct=_f(trade_return_pct(t)) or 0.0, reason=t.reason,
            signal_id=signal_ids.get((t.ghost, st))))
    return rows


def lab_run_execute(*, run_id: int, on_stage: Callable[[str], None] | None = None) -> BacktestRun:
    """Run a queued run to done / failed / cancelled (see the module docstring). Safe to call twice: only
    the call that claims the queued run does anything; the others return the row as it is."""
    now = timezone.now()
    claimed = BacktestRun.objects.filter(pk=run_id, status=BacktestRun.Status.QUEUED, cancel_requested=False).update(
        status=BacktestRun.Status.RUNNING, started_at=now, heartbeat_at=now, stage=BacktestRun.STAGE_LOADING,
        bars_done=0, error="")
    run = BacktestRun.objects.select_related("instrument__exchange").get(pk=run_id)
    if not claimed:
        return run
    tracker = _Tracker(run)
    token = run.started_at
    try:
        _execute(run, tracker, on_stage)
    except RunCancelled:
        _finish(run, token, BacktestRun.Status.CANCELLED, "cancelled by an operator")
    except RunLost as e:
        log.warning("%s", e)
    except Exception as exc:  # noqa: BLE001 - every failure ends on the row, with its reason
        from celery.exceptions import SoftTimeLimitExceeded

        if isinstance(exc, SoftTimeLimitExceeded):
            msg = "stopped by the task's time limit"
        else:
            log.exception("lab run %s failed", run_id)
            msg = f"{type(exc).__name__}: {exc}"
        _finish(run, token, BacktestRun.Status.FAILED, msg)
    run.refresh_from_db(fields=["status", "stage", "error", "finished_at", "bars_done"])
    return run


def _lots_note(rules: LotRules | None, result: bt.BacktestResult) -> str:
    """What the run did with the instrument's lot rules, for the report's notes."""
    if rules is None:
        return ("no lot rules known for this instrument (its exchange's markets were never loaded): quantities and "
                "prices are not rounded to a step or tick, and no minimum is enforced")
    said = [f"{name} {num(v)}" for name, v in (("price tick", rules.price_tick), ("amount step", rules.amount_step),
                                                ("min quantity", rules.min_amount),
                                                ("min notional", rules.min_notional)) if v is not None]
    refused = 0 if len(result.fates) == 0 else int(result.fates["detail"].astype(str).str.startswith("lot: ").sum())
    return (f"lot rules of {rules.label} applied as on the paper desk ({', '.join(said) or 'contract size only'}"
            f"{'; amounts in contracts of ' + num(rules.contract_size) if rules.contract else ''}): "
            f"{refused} entr{'y' if refused == 1 else 'ies'} refused below a minimum")


def _execute(run: BacktestRun, tracker: _Tracker, on_stage: Callable[[str], None] | None) -> None:
    def stage(name: str) -> None:
        tracker.stage(name)
        if on_stage is not None:
            on_stage(name)

    s = run.settings
    stage(BacktestRun.STAGE_LOADING)
    bars = run_bars(instrument_id=run.instrument_id, start=run.start - warmup_span(s), end=run.end)
    warm = int((bars.index < pd.Timestamp(run.start)).sum())
    if warm == len(bars):
        raise LabError("no stored bars in the run's range any more")
    run.bars_total = len(bars)
    lots = run_lot_rules(run.instrument)
    setups, cfg = backtest_inputs(s, exchange=run.instrument.exchange.code, lots=lots)
    if warm:
        cfg = dataclasses.replace(cfg, trade_from=pd.Timestamp(run.start))
    first, last = bars.index[0].to_pydatetime(), bars.index[-1].to_pydatetime()
    # The rules are read at execution (a markets refresh may change them): they count in the fingerprint, which
    # stays what it was for an instrument without known rules.
    run.fingerprint = fingerprint(settings=s if lots is None else {**s, "lots": lot_rules_params(lots)},
                                  version=run.code_version or code_version(), first=first, last=last, count=len(bars))

    stage(BacktestRun.STAGE_EVALUATING)
    # evaluated here rather than inside run_backtest: the signal rows need each draft's levels and reason
    drafts = bt.evaluate_ghosts(bars, setups, tracker.progress)  # a cancel is seen between two ghosts

    stage(BacktestRun.STAGE_WALKING)
    result = bt.run_backtest(bars, setups, cfg, drafts=drafts, progress=tracker.progress)
    run.bars_done = len(bars)

    stage(BacktestRun.STAGE_STORING)
    report = report_build(result, quote=run.instrument.quote)
    report.summary["warmup_bars"] = warm
    report.summary["notes"].insert(0, (
        f"the ghosts warmed up on {warm:,} stored bars before the start (they need {warmup_span(s) // _MINUTE:,} "
        "minutes); nothing traded before it" if warm else
        "no stored bars before the start: the ghosts warm up inside the range (the trend gate needs ~8.4 days, "
        "and blocks every entry until then)"))
    report.summary["notes"].append(_lots_note(lots, result))
    gates = criteria_gates()
    crit = gates_from_report(gates, report.summary, report.daily)
    kinds = {g.ghost_id: g.kind for g in setups}
    signals = _signal_rows(run, result, drafts, kinds)
    with transaction.atomic():
        tracker.checkpoint(("fingerprint",))  # still ours and not cancelled: lock the row for the commit
        BacktestSignal.objects.bulk_create(signals, batch_size=INSERT_BATCH)
        signal_ids = {(s.ghost, s.bar_time): s.pk for s in signals if s.fate == "taken"}  # pks: RETURNING
        trades = _trade_rows(run, result, kinds, signal_ids)
        BacktestTrade.objects.bulk_create(trades, batch_size=INSERT_BATCH)
        run.summary, run.ghost_figures, run.criteria = report.summary, report.ghost_figures, crit
        run.daily = report.daily
        run.series = series_pack(report.times_ms, report.equity)
        run.status, run.stage, run.finished_at = BacktestRun.Status.DONE, "", timezone.now()
        run.heartbeat_at = run.finished_at
        # the last write of the transaction: status done commits with every result row or not at all
        run.save(update_fields=["summary", "ghost_figures", "criteria", "daily", "series", "status", "stage",
                                "finished_at", "heartbeat_at", "bars_done", "bars_total", "fingerprint"])
        send_on_commit(LAB_GROUP, progress_payload(run))
