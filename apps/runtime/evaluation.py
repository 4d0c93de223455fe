"""Evaluate every enabled ghost of an instrument on one closed bar: the live wiring of the pure engine.

The same `evaluate` functions run in backtests over a whole series; here they run on the trailing
window and the last bar is taken (the engine tests assert both give identical drafts).
"""

import logging
import traceback
from datetime import UTC, datetime
from decimal import Decimal

from django.core.cache import cache
from django.db import transaction

from apps.engine.batch import evaluate_all
from apps.engine.registry import GHOSTS, config_from_params
from apps.engine.types import Draft
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
