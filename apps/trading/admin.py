from django.contrib import admin

from apps.trading.models import Fill, KillSwitch, Order, Position, RiskSettings


@admin.register(Position)
class PositionAdmin(admin.ModelAdmin):
    list_display = (
        "opened_at",
        "ghost",
        "side",
        "quantity",
        "entry_price",
        "status",
        "exit_reason",
        "gross_pnl",
    )
    list_filter = ("status", "side", "ghost", "exit_reason")


admin.site.register(Order)
admin.site.register(Fill)
admin.site.register(RiskSettings)
admin.site.register(KillSwitch)
