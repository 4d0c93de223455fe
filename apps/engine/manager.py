"""The signal manager, pure: of the drafts several ghosts made on one instrument's bar, take at most one,
and give every draft a fate. Backtests, paper and live call this same function (issue 5).

Order of decisions for each draft:
1. ghost_disabled - its ghost is off (a draft computed before an operator's click does not trade);
2. stale          - older than `max_age_s` of data time past its bar's close (a late worker, a backlog);
3. blocked_trend  - the trend filter refuses its side (allow_long / allow_short of trend_state);
4. score          = w_confidence x confidence + w_priority x min(priority, priority_cap) / priority_cap
                    + w_performance x the ghost's performance score (apps.engine.performance, 0..1);
                    all three parts are 0..1, so the score is 0..1 when the weights add up to 1;
5. conflict       - when the best long and the best short both score >= strong_score and lie within
                    `conflict_margin` of each other, nobody knows better than the other: none trades
                    (fate "conflict", naming the other ghost);
6. the rest in score order go to the risk check; the first it accepts is taken, those it refuses are
   blocked_risk (naming the limit), and everything below the taken one is outscored (naming the winner).
   Ties keep the lower ghost id, so the choice is deterministic.

The trend filter is a gate here and a ghost of its own elsewhere: its own drafts pass the same gate.
"""

import dataclasses
import math
from collections.abc import Callable, Sequence

from apps.engine.risk import RiskDecision
from apps.engine.types import ConfigError, Draft, GhostConfig, check_range

TAKEN = "taken"
OUTSCORED = "outscored"
BLOCKED_TREND = "blocked_trend"
BLOCKED_RISK = "blocked_risk"
GHOST_DISABLED = "ghost_disabled"
STALE = "stale"
CONFLICT = "conflict"
DISABLED_DETAIL = "ghost disabled before its draft was handled"  # the detail of every ghost_disabled fate


@dataclasses.dataclass(frozen=True)
class ManagerConfig(GhostConfig):
    """Weights and thresholds of the signal manager (see the module docstring for their use).

    - w_confidence (0.5), w_priority (0.2), w_performance (0.3): weights of the score parts; add up to 1.
      The prototype used 0.4 x confidence + a priority score derived from confidence + 0.3 x performance,
      counting confidence twice; priority here is the ghost's own integer priority.
    - priority_cap (integer; 10): priorities at or above it score full marks.
    - strong_score (0..1; 0.6): a draft this good on each side makes a disagreement a conflict.
    - conflict_margin (score points; 0.1): how close the two sides must be for a conflict.
    - max_age_s (seconds of data time; 120): a draft older than this after its bar closed is stale.
    """

    KIND = "manager"

    w_confidence: float = 0.5
    w_priority: float = 0.2
    w_performance: float = 0.3
    priority_cap: int = 10
    strong_score: float = 0.6
    conflict_margin: float = 0.1
    max_age_s: float = 120.0

    def __post_init__(self) -> None:
        k = self.KIND
        for name in ("w_confidence", "w_priority", "w_performance"):
            check_range(k, name, getattr(self, name), 0, 1)
        total = self.w_confidence + self.w_priority + self.w_performance
        if not math.isclose(total, 1.0, abs_tol=1e-9):
            raise ConfigError(f"manager weights must add up to 1, they add up to {total:g}")
        check_range(k, "priority_cap", self.priority_cap, 1, 100)
        check_range(k, "strong_score", self.strong_score, 0, 1)
        check_range(k, "conflict_margin", self.conflict_margin, 0, 1)
        check_range(k, "max_age_s", self.max_age_s, 1, 86_400, unit="seconds")


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One ghost's draft as the manager sees it."""

    ghost_id: int
    ghost_name: str
    draft: Draft
    enabled: bool = True
    performance_score: float = 0.5


@dataclasses.dataclass(frozen=True)
class TrendGate:
    """The trend filter's verdict on the bar (apps.engine.trend.trend_state's last row)."""

    allow_long: bool = True
    allow_short: bool = True
    size_mult_long: float = 1.0
    size_mult_short: float = 1.0
    label: str = ""  # e.g. "strong down / trending down", for the fate text


@dataclasses.dataclass(frozen=True)
class Decision:
    ghost_id: int
    fate: str
    detail: str
    score: float = math.nan
    quantity: float = 0.0  # base units, for the taken draft
    size_mult: float = 1.0  # trend x confidence multiplier used for sizing the taken draft


def score(c: Candidate, cfg: ManagerConfig) -> float:
    d = c.draft
    pri = min(max(d.priority, 0), cfg.priority_cap) / cfg.priority_cap
    perf = min(max(c.performance_score, 0.0), 1.0) if math.isfinite(c.performance_score) else 0.5
    return cfg.w_confidence * min(max(d.confidence, 0.0), 1.0) + cfg.w_priority * pri + cfg.w_performance * perf


RiskFn = Callable[[Candidate, float], RiskDecision]  # (candidate, size multiplier) -> decision


def arbitrate(candidates: Sequence[Candidate], *, now_s: float, trend: TrendGate, risk: RiskFn,
              cfg: ManagerConfig = ManagerConfig()) -> list[Decision]:
    """One Decision per candidate, in the candidates' order; at most one is TAKEN.

    now_s is data time (epoch seconds) of the decision; a draft's bar closes at bar_time + 60 s.
    """
    decided: dict[int, Decision] = {}
    live: list[tuple[float, Candidate]] = []
    for c in candidates:
        d = c.draft
        age = now_s - (d.bar_time.timestamp() + 60.0)
        if not c.enabled:
            decided[c.ghost_id] = Decision(c.ghost_id, GHOST_DISABLED, DISABLED_DETAIL)
        elif age > cfg.max_age_s:
            decided[c.ghost_id] = Decision(c.ghost_id, STALE,
                                           f"draft {age:.0f} s old after its bar closed > {cfg.max_age_s:g} s")
        elif (d.side > 0 and not trend.allow_long) or (d.side < 0 and not trend.allow_short):
            side = "long" if d.side > 0 else "short"
            decided[c.ghost_id] = Decision(c.ghost_id, BLOCKED_TREND,
                                           f"trend filter blocks {side}s ({trend.label or 'blocked'})")
        else:
            live.append((score(c, cfg), c))
    live.sort(key=lambda sc: (-sc[0], sc[1].ghost_id))

    longs = [sc for sc in live if sc[1].draft.side > 0]
    shorts = [sc for sc in live if sc[1].draft.side < 0]
    if longs and shorts:
        (sl, bl), (ss, bs) = longs[0], shorts[0]
        if min(sl, ss) >= cfg.strong_score and abs(sl - ss) <= cfg.conflict_margin:
            for s, c in live:
                other = bs if c.draft.side > 0 else bl
                decided[c.ghost_id] = Decision(
                    c.ghost_id, CONFLICT,
                    f"long {bl.ghost_name} {sl:.3f} vs short {bs.ghost_name} {ss:.3f} within "
                    f"{cfg.conflict_margin:g}: no trade (disagrees with {other.ghost_name})", score=s)
            live = []

    winner: Candidate | None = None
    winner_score = math.nan
    for s, c in live:
        if winner is not None:
            decided[c.ghost_id] = Decision(c.ghost_id, OUTSCORED,
                                           f"score {s:.3f} < {winner_score:.3f} of {winner.ghost_name}", score=s)
            continue
        trend_mult = trend.size_mult_long if c.draft.side > 0 else trend.size_mult_short
        mult = trend_mult * c.draft.size_mult if math.isfinite(c.draft.size_mult) else trend_mult
        verdict = risk(c, mult)
        if verdict.ok:
            winner, winner_score = c, s
            decided[c.ghost_id] = Decision(c.ghost_id, TAKEN, f"score {s:.3f}, size {verdict.quantity:.6g}",
                                           score=s, quantity=verdict.quantity, size_mult=mult)
        else:
            decided[c.ghost_id] = Decision(c.ghost_id, BLOCKED_RISK, f"{verdict.limit}: {verdict.detail}", score=s)
    return [decided[c.ghost_id] for c in candidates]
