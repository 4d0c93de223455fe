from django.contrib import admin

from apps.market.models import Candle, Exchange, FeedStatus, Instrument

admin.site.register(Exchange)
admin.site.register(Instrument)
admin.site.register(FeedStatus)


@admin.register(Candle)
class CandleAdmin(admin.ModelAdmin):
    list_display = ("instrument", "timeframe", "open_time", "open", "high", "low", "close", "volume")
    list_filter = ("instrument", "timeframe")
