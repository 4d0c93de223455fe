from django.contrib import admin

from apps.market.models import Candle, Exchange, FeedStatus, HistoryDownload, Instrument, LargeTrade, LiquidationEvent

admin.site.register(Exchange)
admin.site.register(Instrument)
admin.site.register(FeedStatus)
admin.site.register(LiquidationEvent)
admin.site.register(LargeTrade)
admin.site.register(HistoryDownload)


@admin.register(Candle)
class CandleAdmin(admin.ModelAdmin):
    list_display = ("instrument", "timeframe", "open_time", "open", "high", "low", "close", "volume")
    list_filter = ("instrument", "timeframe")
