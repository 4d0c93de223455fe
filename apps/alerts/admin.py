"""Admin: channels without their secret (edit secrets on the Alerts page, which never shows them),
deliveries read-only."""

from django.contrib import admin

from apps.alerts.models import AlertChannel, AlertDelivery


@admin.register(AlertChannel)
class AlertChannelAdmin(admin.ModelAdmin):
    list_display = ("name", "kind", "enabled", "events", "updated_at")
    list_filter = ("kind", "enabled")
    exclude = ("secret",)  # a rendered form field would print the token into the page
    readonly_fields = ("kind", "created_by", "created_at", "updated_at")


@admin.register(AlertDelivery)
class AlertDeliveryAdmin(admin.ModelAdmin):
    list_display = ("created_at", "event", "channel_label", "status", "attempts", "http_status")
    list_filter = ("status", "event", "channel_kind")

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
