"""Typed browser payload for signals."""

from typing import Literal, TypedDict

from apps.signals.models import Signal

SIGNALS_GROUP = "signals"


class SignalEvent(TypedDict):
    type: Literal["signal.created", "signal.updated"]
    id: int
    ghost_id: int
    ghost: str
    bar_time: str
    side: str
    confidence: float
    entry: float
    stop: float
    target: float
    reason: str
    fate: str
    fate_detail: str


def signal_payload(signal: Signal, *, type_: Literal["signal.created", "signal.updated"]) -> SignalEvent:
    return SignalEvent(
        type=type_,
        id=signal.pk,
        ghost_id=signal.ghost_id,
        ghost=signal.ghost.name,
        bar_time=signal.bar_time.isoformat(),
        side=signal.side,
        confidence=float(signal.confidence),
        entry=float(signal.entry),
        stop=float(signal.stop),
        target=float(signal.target),
        reason=signal.reason,
        fate=signal.fate,
        fate_detail=signal.fate_detail,
    )
