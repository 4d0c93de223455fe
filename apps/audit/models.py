from django.conf import settings
from django.db import models


class AuditEvent(models.Model):
    """Who did what, when, with the state before and after. Written in the same transaction as the change."""

    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )  # null = the system (auto-disable, feed supervisor)
    action = models.CharField(max_length=64)  # e.g. "ghost.disabled", "revenue_target.set"
    object_type = models.CharField(max_length=64)
    object_id = models.CharField(max_length=64, blank=True)
    reason = models.TextField(blank=True)
    before = models.JSONField(default=dict, blank=True)
    after = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)  # wall time: when a person or process acted
    # The desk's data time at that moment (apps.common.clock), for the actions that changed what traded (toggle, kill
    # switch, manual close, parameter/target/limit change; apps.audit.services.DATA_TIME_ACTIONS). NULL for the rest
    # and for rows written before the field existed: those have the wall time only.
    data_time = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        # (created_at, id): the audit page pages newest first by keyset on exactly these two columns.
        indexes = [
            models.Index(fields=["object_type", "object_id"]),
            models.Index(fields=["created_at", "id"], name="audit_created_id"),
        ]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.action} {self.object_type}#{self.object_id}"
