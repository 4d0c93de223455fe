from django.contrib import admin

from apps.ghosts.models import Ghost


@admin.register(Ghost)
class GhostAdmin(admin.ModelAdmin):
    list_display = ("name", "kind", "instrument", "enabled", "status", "updated_at")
    list_filter = ("kind", "status")
