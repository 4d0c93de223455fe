from datetime import datetime
from typing import Any

from apps.audit.models import AuditEvent
from apps.common.clock import data_now

# Audited actions that changed what traded: their rows keep the desk's data time beside the wall time (the one-clock
# rule, apps.common.clock), so an operator's toggle lines up with the trades around it. Every "ghost.*" and
# "position.*" action counts (toggles, auto-disables, status changes at evaluation, parameters, manual closes, stops
# moved, live fills recorded), plus these.
DATA_TIME_ACTIONS = frozenset({
    "killswitch.tripped", "killswitch.reset",  # a trip may flatten every position
    "revenue_target.set",  # moves the auto-disable rule's bar
    "risk.limits_changed",
    "study.applied",  # writes a ghost's parameters
    "feed.started", "feed.stopped",  # what the ghosts of an instrument see
})
DATA_TIME_PREFIXES = ("ghost.", "position.")


def keeps_data_time(action: str) -> bool:
    """Whether an audit row of this action records the desk's data time (see DATA_TIME_ACTIONS)."""
    return action in DATA_TIME_ACTIONS or action.startswith(DATA_TIME_PREFIXES)


def audit_record(
    *,
    actor,
    action: str,
    obj: Any,
    reason: str = "",
    before: dict | None = None,
    after: dict | None = None,
    data_time: datetime | None = None,
) -> AuditEvent:
    """Write one audit row. Callers are inside their own transaction.atomic so it commits with the change.

    `created_at` is the wall time. For an action that changed what traded (`keeps_data_time`) the row also keeps
    the desk's data time, `data_time` when the caller knows it, else the newest trade any feed has seen (one small
    query; still NULL before any feed traded: then there is no data clock, and the trading day is the wall's)."""
    if data_time is None and keeps_data_time(action):
        data_time = data_now()
    return AuditEvent.objects.create(
        actor=actor if getattr(actor, "is_authenticated", False) else None,
        action=action,
        object_type=obj._meta.label_lower if hasattr(obj, "_meta") else str(type(obj).__name__),
        object_id=str(getattr(obj, "pk", "")),
        reason=reason,
        before=before or {},
        after=after or {},
        data_time=data_time,
    )
