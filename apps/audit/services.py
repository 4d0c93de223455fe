from typing import Any

from apps.audit.models import AuditEvent


def audit_record(
    *,
    actor,
    action: str,
    obj: Any,
    reason: str = "",
    before: dict | None = None,
    after: dict | None = None,
) -> AuditEvent:
    """Write one audit row. Callers are inside their own transaction.atomic so it commits with the change."""
    return AuditEvent.objects.create(
        actor=actor if getattr(actor, "is_authenticated", False) else None,
        action=action,
        object_type=obj._meta.label_lower if hasattr(obj, "_meta") else str(type(obj).__name__),
        object_id=str(getattr(obj, "pk", "")),
        reason=reason,
        before=before or {},
        after=after or {},
    )
