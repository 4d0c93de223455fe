"""The signal manager service: the engine's arbitration (apps.engine.manager) on stored signals.

For one instrument and closed bar: every enabled ghost's draft is already a Signal (pending). This reads
what the pure arbitration needs (ghosts still enabled, the trend filter's gate on the same bars, each
ghost's performance score, the risk state and limits), asks `arbitrate`, and writes each signal's fate.
The one it takes stays PENDING until the executor fills it (which sets TAKEN), so a worker killed between
the decision and the fill simply decides again on the retry: nothing is lost, nothing doubled.
"""

import logging
import math

import pandas as pd
from django.db import transaction

from apps.engine.manager import Candidate, Decision, ManagerConfig, TrendGate, arbitrate
from apps.engine.performance import performance_score
from apps.engine.risk import RiskDecision, risk_check
from apps.engine.types import Draft
from apps.ghosts.models import Ghost
from apps.ghosts.selectors import trend_config_for
from apps.revenue.selectors import ghost_performance
from apps.signals.models import Fate, Signal
from apps.signals.services import signal_set_fate
from apps.trading.risk_selectors import risk_limits, risk_market, risk_state
from apps.trading.risk_services import risk_watch

log = logging.getLogger(__name__)
DEFAULT_MANAGER = ManagerConfig()


def trend_gate(bars: pd.DataFrame, cfg) -> TrendGate:
    """The gate from the trend filter's state on the last bar (everything allowed without a trend filter)."""
    if cfg is None:
        return TrendGate(label="no trend filter on this instrument")
    from apps.engine.trend import trend_state

    return gate_from_row(trend_state(bars, cfg).iloc[-1])


def gate_from_row(row) -> TrendGate:
    """The gate from one row of apps.engine.trend.trend_state (a replay computes the state once per chunk of bars
    and takes each decided bar's row: the same row the trailing window's last bar gives, the state being causal)."""
    from apps.engine.trend import DIRECTION_NAMES, REGIME_NAMES

    label = f"{DIRECTION_NAMES[int(row['direction'])]} / {REGIME_NAMES[int(row['regime'])]}"
    if not bool(row["ready"]):
        label = "trend filter warming up"
    return TrendGate(
        allow_long=bool(row["allow_long"]),
        allow_short=bool(row["allow_short"]),
        size_mult_long=float(row["size_mult_long"]),
        size_mult_short=float(row["size_mult_short"]),
        label=label,
    )


def _draft(signal: Signal) -> Draft:
    return Draft(
        side=1 if signal.side == "long" else -1,
        confidence=float(signal.confidence),
        priority=int(signal.priority),
        entry=float(signal.entry),
        stop=float(signal.stop),
        target=float(signal.target),
        size_mult=float(signal.size_multiplier),
        max_hold_s=float(signal.max_hold_seconds or math.nan),
        reason=signal.reason,
        bar_time=pd.Timestamp(signal.bar_time),
    )


def bar_decide(*, instrument_id: int, bar_time, bars: pd.DataFrame | None, now_s: float,
               cfg: ManagerConfig = DEFAULT_MANAGER, gate: TrendGate | None = None,
               ) -> tuple[Signal | None, Decision | None]:
    """Give every pending signal of this bar a fate; returns the signal to execute and its decision.

    The trend gate comes from `bars` (the window ending at the bar), unless the caller computed it (`gate`)."""
    pending = list(
        Signal.objects.filter(instrument_id=instrument_id, bar_time=bar_time, fate=Fate.PENDING)
        .select_related("ghost", "instrument__exchange")
    )
    if not pending:
        return None, None
    enabled = set(Ghost.objects.filter(pk__in=[s.ghost_id for s in pending], enabled=True).values_list("pk", flat=True))
    candidates = [
        Candidate(
            ghost_id=s.ghost_id,
            ghost_name=s.ghost.name,
            draft=_draft(s),
            enabled=s.ghost_id in enabled,
            performance_score=performance_score(ghost_performance(s.ghost_id)) if s.ghost_id in enabled else 0.5,
        )
        for s in pending
    ]
    risk_watch()  # a daily loss at the limit trips the kill switch before anything new is decided
    if gate is None:
        gate = trend_gate(bars, trend_config_for(instrument_id))
    state, limits = risk_state(), risk_limits()
    # every instrument's open positions are in `state`; `market` names this one for its cap and currency
    market = risk_market(pending[0].instrument)

    def risk(c: Candidate, size_mult: float) -> RiskDecision:
        return risk_check(ghost_id=c.ghost_id, entry=c.draft.entry, stop=c.draft.stop, size_mult=size_mult,
                          state=state, limits=limits, market=market)

    decisions = arbitrate(candidates, now_s=now_s, trend=gate, risk=risk, cfg=cfg)
    taken: tuple[Signal | None, Decision | None] = (None, None)
    with transaction.atomic():
        for signal, decision in zip(pending, decisions, strict=True):
            locked = Signal.objects.select_for_update().get(pk=signal.pk)
            if locked.fate != Fate.PENDING:
                continue  # a concurrent run decided it already
            if decision.fate == Fate.TAKEN:
                taken = (locked, decision)  # stays pending until the fill marks it taken
                continue
            signal_set_fate(signal=locked, fate=Fate(decision.fate), detail=decision.detail)
    return taken
