from apps.audit.models import AuditEvent


def audit_events(*, limit: int = 200) -> list[AuditEvent]:
    """The newest audit rows with their actor (one query); None actor means the system did it."""
    return list(AuditEvent.objects.select_related("actor").order_by("-created_at", "-id")[:limit])
