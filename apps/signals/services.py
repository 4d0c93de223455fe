from datetime import datetime
from decimal import Decimal

from django.db import IntegrityError, transaction

from apps.common.realtime import send_on_commit
from apps.engine.types import Draft
from apps.ghosts.models import Ghost
from apps.signals.events import SIGNALS_GROUP, signal_payload
from apps.signals.models import Fate, Side, Signal


def _dec(x: float, places: int = 10) -> Decimal:
    return Decimal(repr(float(x))).quantize(Decimal(1).scaleb(-places))


def signal_record(*, ghost: Ghost, bar_time: datetime, draft: Draft) -> tuple[Signal, bool]:
    """Store a ghost's draft for one bar. Idempotent: the (ghost, bar) unique constraint keeps one row."""
    existing = Signal.objects.filter(ghost=ghost, bar_time=bar_time).first()
    if existing:
        return existing, False
    try:
        with transaction.atomic():
            signal = Signal.objects.create(
                ghost=ghost,
                instrument_id=ghost.instrument_id,
                bar_time=bar_time,
                side=Side.LONG if draft.side > 0 else Side.SHORT,
                confidence=_dec(min(max(draft.confidence, 0.0), 1.0), 4),
                priority=int(draft.priority),
                entry=_dec(draft.entry),
                stop=_dec(draft.stop),
                target=_dec(draft.target),
                size_multiplier=_dec(draft.size_mult, 4),
                max_hold_seconds=int(draft.max_hold_s) if draft.max_hold_s == draft.max_hold_s else None,
                reason=draft.reason[:2000],
            )
            send_on_commit(SIGNALS_GROUP, signal_payload(signal, type_="signal.created"))
    except IntegrityError:  # a concurrent evaluation of the same bar won the race
        return Signal.objects.get(ghost=ghost, bar_time=bar_time), False
    return signal, True


def signal_set_fate(*, signal: Signal, fate: Fate, detail: str = "") -> Signal:
    """Caller holds the signal row lock (inside its transaction)."""
    signal.fate, signal.fate_detail = fate, detail[:1000]
    signal.save(update_fields=["fate", "fate_detail"])
    send_on_commit(SIGNALS_GROUP, signal_payload(signal, type_="signal.updated"))
    return signal
