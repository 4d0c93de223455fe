from apps.audit.models import AuditEvent
from apps.common.keyset import Cursor, KeysetPage, keyset_page


def audit_events(*, limit: int = 200) -> list[AuditEvent]:
    """The newest audit rows with their actor (one query); None actor means the system did it."""
    return list(AuditEvent.objects.select_related("actor").order_by("-created_at", "-id")[:limit])


def audit_page(
    *, before: Cursor | None = None, after: Cursor | None = None, limit: int = 50
) -> KeysetPage[AuditEvent]:
    """One page of the whole audit log, newest first, by keyset on the (created_at, id) index: the log only grows,
    so the page neither counts it nor offsets into it (the old page showed the latest 200 only)."""
    return keyset_page(AuditEvent.objects.select_related("actor"), field="created_at", before=before, after=after,
                       limit=limit)
