from django.contrib import admin

from apps.signals.models import Signal


@admin.register(Signal)
class SignalAdmin(admin.ModelAdmin):
    list_display = ("bar_time", "ghost", "side", "confidence", "fate", "created_at")
    list_filter = ("fate", "side", "ghost")
