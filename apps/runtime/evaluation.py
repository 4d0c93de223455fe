"""Evaluate every enabled ghost of an instrument on one closed bar: the live wiring of the pure engine.

The same `evaluate` functions run in backtests over a whole series; here they run on the trailing
window and the last bar is taken (the engine tests assert both give identical drafts).
"""

import logging
import traceback
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import numpy as np
import pandas as pd
from django.core.cache import cache
from django.db import transaction

from apps.engine.batch import evaluate_all
from apps.engine.manager import TrendGate
from apps.engine.registry import GHOSTS, config_from_params
from apps.engine.types import Draft
from apps.ghosts.models import Ghost
from apps.ghosts.selectors import enabled_ghosts_for, warmup_minutes_needed
from apps.ghosts.services import ghost_record_evaluation
from apps.market.prices import positions_changed, price_get
from apps.market.selectors import candle_bars
from apps.runtime.manager import bar_decide
from apps.signals.models import Fate, Signal
from apps.signals.services import signal_record, signal_set_fate
from apps.trading.execution import signal_execute

log = logging.getLogger(__name__)
# A price older than this (in data time) is not a fill price for a market order on the next bar.
MAX_PRICE_AGE_MS = 5 * 60_000
SUMMARY_EVERY_S = 10
PREVIEW_AHEAD = 240  # bars of a trade replay's preview evaluated at once (see BarDecider.set_preview)


def bar_evaluate(*, instrument_id: int, bar_time: datetime) -> list[Signal]:
    """Run every enabled ghost on the bar, store each draft as a signal, let the manager pick at most one,
    and paper-fill it. Returns the signals created (none on a repeat: unique per ghost and bar)."""
    ghosts = list(enabled_ghosts_for(instrument_id=instrument_id))
    if not ghosts:
        return []
    window = warmup_minutes_needed(instrument_id=instrument_id) + 1
    bars = candle_bars(instrument_id=instrument_id, until=bar_time, minutes=window)
    if bars.empty or bars.index[-1] != bar_time:
        log.warning("bar %s of instrument %s not stored; nothing to evaluate", bar_time, instrument_id)
        return []
    created_signals = []
    configs = {}
    for ghost in ghosts:
        try:
            configs[ghost.pk] = config_from_params(ghost.kind, ghost.params)
        except Exception as exc:  # a bad config is a ghost error too, not a task crash
            ghost_record_evaluation(ghost_id=ghost.pk, error="".join(traceback.format_exception(exc)))
    # One evaluate_all per round (each round holds at most one ghost of a kind): the bars are validated and
    # the trend/CVD states computed once for all ghosts, each ghost still guarded on its own.
    rounds: list[dict[str, object]] = []
    for ghost in ghosts:
        if ghost.pk in configs:
            free = next((r for r in rounds if ghost.kind not in r), None)
            if free is None:
                rounds.append(free := {})
            free[ghost.kind] = ghost
    for round_ in rounds:
        results = evaluate_all(bars, {kind: configs[g.pk] for kind, g in round_.items()})
        for kind, ghost in round_.items():
            result, cfg = results[kind], configs[ghost.pk]
            ghost_record_evaluation(ghost_id=ghost.pk, error=result.error, state=_summary(kind, bars, cfg, ghost.pk))
            if result.error or result.drafts is None or result.drafts.empty:
                continue
            row = result.drafts.iloc[-1]
            if int(row["side"]) == 0:
                continue
            signal, created = signal_record(ghost=ghost, bar_time=bar_time,
                                            draft=Draft.from_row(bars.index[-1], row))
            if created:
                created_signals.append(signal)
    last = price_get(instrument_id)
    bar_close_s = bar_time.timestamp() + 60
    now_s = max(last[1] / 1000, bar_close_s) if last else bar_close_s
    signal, decision = bar_decide(instrument_id=instrument_id, bar_time=bar_time, bars=bars, now_s=now_s)
    if signal is not None:
        signal_execute_at_market(signal_id=signal.pk, instrument_id=instrument_id, quantity=decision.quantity)
    return created_signals


def summary_key(ghost_id: int) -> str:
    return f"ghost-summary:{ghost_id}"


def _summary(kind: str, bars, cfg, ghost_id: int) -> dict[str, str] | None:
    """The ghost's state for the ghosts page, at most every SUMMARY_EVERY_S per ghost (a summary costs about
    as much as the evaluation; live that is every bar, a fast sim or replay need not pay it on each).
    A failing summary is logged, never a failed evaluation; None keeps the last state."""
    summary = GHOSTS[kind].summary
    if summary is None or not cache.add(summary_key(ghost_id), 1, SUMMARY_EVERY_S):
        return None
    try:
        return {str(k): str(v) for k, v in summary(bars, cfg).items()}
    except Exception:
        log.exception("state summary of %s failed", kind)
        return None


def signal_execute_at_market(*, signal_id: int, instrument_id: int, quantity: float | None = None) -> None:
    """Market order at the feed's latest price, which is after the signal bar's close: paper by default,
    live through ccxt when HFT_LIVE_TRADING=1 (apps.trading.execution picks)."""
    last = price_get(instrument_id)
    signal = Signal.objects.get(pk=signal_id)
    bar_close_ms = int(signal.bar_time.timestamp() * 1000) + 60_000
    if last is None or last[1] < bar_close_ms - 1 or last[1] - bar_close_ms > MAX_PRICE_AGE_MS:
        with transaction.atomic():
            locked = Signal.objects.select_for_update().get(pk=signal_id)
            if locked.fate == Fate.PENDING:
                signal_set_fate(signal=locked, fate=Fate.STALE, detail="no fresh price after the bar closed")
        return
    price, ts_ms = last
    position = signal_execute(
        signal_id=signal_id,
        price=Decimal(repr(price)),
        at=datetime.fromtimestamp(ts_ms / 1000, tz=UTC),
        quantity=quantity,
    )
    if position is not None:
        positions_changed(instrument_id)  # committed by now: the feed reloads its stop/target cache


class BarDecider:
    """A replay's ghosts, run in-process over a chunk of closed bars at once (issue 13: thousands of bars/s).

    Live and sim queue one `evaluate_bar` task per bar, which reads the trailing window from the database. A
    replay feeds bars far faster than that, so the pipeline hands the decider each chunk of bars it stored:

    * the rolling window is kept in memory (read from the database once, at the first chunk, then extended
      with the chunk's own bars and trimmed to the longest warm-up);
    * every ghost runs ONCE per chunk over window + chunk (apps.engine.batch.evaluate_all) and the chunk's rows
      are its drafts: a ghost's output at bar t depends only on bars up to t (the engine's look-ahead guard
      proves it for every ghost), so these are the drafts a per-bar evaluation of the trailing window gives;
      the trend gate is computed once per chunk the same way;
    * per-bar database work only where a draft exists: its signals, the manager's decision (risk state read
      then, after every earlier exit and entry is written) and the fill at the next bar's open; the ghosts'
      evaluation records (status, error, state summary) once per chunk.
    """

    def __init__(self, instrument_id: int) -> None:
        self.instrument_id = instrument_id
        self.window: pd.DataFrame | None = None
        self.warmup = 0
        self.preview: pd.DataFrame | None = None
        self._ahead: dict = {}
        self._ahead_gates: dict = {}
        self._ahead_until = None

    def _ghosts(self) -> list[tuple[list, dict]]:
        """Rounds of (ghosts, {kind: config}) as bar_evaluate forms them; re-read per chunk (an operator may
        disable a ghost or change its params while the replay runs)."""
        rounds: list[tuple[list, dict]] = []
        for ghost in enabled_ghosts_for(instrument_id=self.instrument_id):
            try:
                cfg = config_from_params(ghost.kind, ghost.params)
            except Exception as exc:  # a bad config is a ghost error too, not a replay crash
                ghost_record_evaluation(ghost_id=ghost.pk, error="".join(traceback.format_exception(exc)))
                continue
            free = next((r for r in rounds if ghost.kind not in r[1]), None)
            if free is None:
                rounds.append(free := ([], {}))
            free[0].append(ghost)
            free[1][ghost.kind] = cfg
        return rounds

    def set_preview(self, frame: pd.DataFrame) -> None:
        """The bars a trade replay will close, built ahead from its own trades (same sanitiser and builder, values
        as stored). Their drafts are computed PREVIEW_AHEAD bars at a time, and a bar's drafts are used only when
        it and every bar before it came out as previewed; on the first difference the preview is dropped and each
        bar is evaluated on its own (the drafts of the bars before it were right: they saw only matching bars)."""
        self.preview = frame
        self._ahead, self._ahead_gates, self._ahead_until = {}, {}, None

    def drafts(self, chunk: pd.DataFrame, *, new: set) -> tuple[dict, dict]:
        """The chunk's drafts ({bar time: [(ghost, Draft), ...]}, only bars in `new`, i.e. stored by this run)
        and the trend gate of each bar that has one ({bar time: TrendGate})."""
        if self.preview is not None:
            if self._as_previewed(chunk):
                if self._ahead_until is None or chunk.index[-1] > self._ahead_until:
                    ahead = self.preview.loc[chunk.index[0]:].iloc[:max(PREVIEW_AHEAD, len(chunk))]
                    bars = self._bars_with(ahead, advance=False)
                    self._ahead, self._ahead_gates = self._evaluate(bars, len(ahead))
                    self._ahead_until = ahead.index[-1]
                self._bars_with(chunk)
                out = {t: self._ahead[t] for t in chunk.index if t in new and t in self._ahead}
                return out, {t: self._ahead_gates[t] for t in out if t in self._ahead_gates}
            log.info("instrument %s: bar %s differs from the replay's preview; evaluating bar by bar",
                     self.instrument_id, chunk.index[0])
            self.preview = None
        bars = self._bars_with(chunk)
        out, gates = self._evaluate(bars, len(chunk))
        out = {t: d for t, d in out.items() if t in new}
        return out, {t: g for t, g in gates.items() if t in out}

    def _as_previewed(self, chunk: pd.DataFrame) -> bool:
        rows = self.preview.reindex(chunk.index)
        return bool(np.array_equal(rows.to_numpy(), chunk.to_numpy(), equal_nan=True))

    def _bars_with(self, chunk: pd.DataFrame, *, advance: bool = True) -> pd.DataFrame:
        """Window + chunk (what the ghosts see); with `advance` the window then moves on past the chunk (the
        chunk's bars are stored ones; a preview's are not)."""
        if self.window is None:
            self.warmup = warmup_minutes_needed(instrument_id=self.instrument_id)
            first = chunk.index[0].to_pydatetime()
            self.window = candle_bars(instrument_id=self.instrument_id, until=first - timedelta(minutes=1),
                                      minutes=self.warmup)
        bars = pd.concat([self.window[self.window.index < chunk.index[0]], chunk]) if len(self.window) else chunk
        bars = bars[~bars.index.duplicated(keep="last")]
        if advance:
            self.window = bars.iloc[-max(self.warmup, 1):]
        return bars

    def _evaluate(self, bars: pd.DataFrame, rows: int) -> tuple[dict, dict]:
        """Every enabled ghost once over `bars`; the drafts of its last `rows` bars and their trend gates."""
        from apps.ghosts.selectors import trend_config_for
        from apps.runtime.manager import gate_from_row

        out: dict = {}
        # re-read with the ghosts (an operator may enable one with a longer warm-up): the window keeps this many
        self.warmup = warmup_minutes_needed(instrument_id=self.instrument_id)
        for ghosts, configs in self._ghosts():
            results = evaluate_all(bars, configs)
            for ghost in ghosts:
                result, cfg = results[ghost.kind], configs[ghost.kind]
                ghost_record_evaluation(ghost_id=ghost.pk, error=result.error,
                                        state=_summary(ghost.kind, bars, cfg, ghost.pk))
                if result.error or result.drafts is None or result.drafts.empty:
                    continue
                tail = result.drafts.iloc[-rows:]
                tail = tail[tail["side"].to_numpy() != 0]
                for t, row in zip(tail.index, tail.to_dict("records"), strict=True):
                    out.setdefault(t, []).append((ghost, Draft.from_row(t, row)))
        gates: dict = {}
        trend_cfg = trend_config_for(self.instrument_id) if out else None
        if trend_cfg is not None:
            from apps.engine.trend import trend_state

            state = trend_state(bars, trend_cfg)
            gates = {t: gate_from_row(state.loc[t]) for t in out}
        return out, gates

    def decide(self, *, bar_time: datetime, drafts: list, gate: TrendGate | None, price: float, ts_ms: int) -> bool:
        """Record the bar's drafts as signals, let the manager pick, fill at `price` (the next bar's open, at
        `ts_ms`). True when a position was opened."""
        from apps.market.prices import price_set
        from apps.market.services import feed_status_update

        # A ghost disabled since its chunk was evaluated (auto-disable, an operator, a drawdown stop at a close in
        # between) drafts nothing here, as it would not have been evaluated bar by bar.
        enabled = set(Ghost.objects.filter(pk__in=[g.pk for g, _ in drafts], enabled=True).values_list("pk", flat=True))
        drafts = [(g, d) for g, d in drafts if g.pk in enabled]
        if not drafts:
            return False
        for ghost, draft in drafts:
            signal_record(ghost=ghost, bar_time=bar_time, draft=draft)
        # The desk's clock and marks as the decision sees them live: the risk state reads "today" and the open
        # positions' marks from the feed status, which the pipeline otherwise writes about once a wall second.
        price_set(self.instrument_id, price, ts_ms)
        at = datetime.fromtimestamp(ts_ms / 1000, tz=UTC)
        feed_status_update(instrument_id=self.instrument_id, push=False, last_price=Decimal(repr(price)),
                           last_trade_at=at)
        now_s = max(ts_ms / 1000, bar_time.timestamp() + 60)
        signal, decision = bar_decide(instrument_id=self.instrument_id, bar_time=bar_time, bars=None, now_s=now_s,
                                      gate=gate)
        if signal is None:
            return False
        bar_close_ms = int(bar_time.timestamp() * 1000) + 60_000
        if ts_ms < bar_close_ms - 1 or ts_ms - bar_close_ms > MAX_PRICE_AGE_MS:
            # as signal_execute_at_market: a bar closed by the clock in a quiet market has no price after it yet
            with transaction.atomic():
                locked = Signal.objects.select_for_update().get(pk=signal.pk)
                if locked.fate == Fate.PENDING:
                    signal_set_fate(signal=locked, fate=Fate.STALE, detail="no fresh price after the bar closed")
            return False
        position = signal_execute(signal_id=signal.pk, price=Decimal(repr(price)), at=at, quantity=decision.quantity)
        if position is not None:
            positions_changed(self.instrument_id)
        return position is not None
