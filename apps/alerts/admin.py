"""Admin: channels without their secret (edit secrets on the Alerts page, which never shows them), deliveries
read-only.

No lookup of any kind may touch a secret: Django's admin accepts a query-string filter on any local field
(`?secret__startswith=1`) even when it is not in `list_filter`, and the row count answered a prefix search one
character at a time. `lookup_allowed` refuses every lookup naming a secret field, here and through a delivery's
channel (a 400, DisallowedModelAdminLookup); there is no search, and the secret shows only as "set"/"not set".
"""

from django.contrib import admin
from django.db.models.constants import LOOKUP_SEP

from apps.alerts.models import AlertChannel, AlertDelivery


def _names_a_secret(lookup: str) -> bool:
    return any(part.startswith("secret") for part in lookup.split(LOOKUP_SEP))


class _NoSecretLookups(admin.ModelAdmin):
    search_fields = ()  # nothing to search: a search over a secret would be the same oracle

    def lookup_allowed(self, lookup, value, request=None) -> bool:
        if _names_a_secret(lookup):
            return False
        return super().lookup_allowed(lookup, value, request)


@admin.register(AlertChannel)
class AlertChannelAdmin(_NoSecretLookups):
    list_display = ("name", "kind", "enabled", "events", "secret_state", "updated_at")
    list_filter = ("kind", "enabled")
    exclude = ("secret_encrypted",)  # not editable anyway; a rendered field would print the token into the page
    readonly_fields = ("kind", "secret_state", "created_by", "created_at", "updated_at")

    @admin.display(description="secret")
    def secret_state(self, obj: AlertChannel) -> str:
        return "set" if obj.secret_set else "not set"


@admin.register(AlertDelivery)
class AlertDeliveryAdmin(_NoSecretLookups):
    list_display = ("created_at", "event", "channel_label", "status", "attempts", "http_status")
    list_filter = ("status", "event", "channel_kind")

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
