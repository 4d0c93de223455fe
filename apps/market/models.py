from django.db import models

from apps.common.fields import price_field, qty_field


class Exchange(models.Model):
    code = models.SlugField(
        max_length=32, unique=True
    )  # the ccxt id: binance, binanceusdm, okx, kraken, bybit
    name = models.CharField(max_length=64)
    taker_fee = models.DecimalField(max_digits=8, decimal_places=6, default="0.001")  # fraction of notional
    maker_fee = models.DecimalField(max_digits=8, decimal_places=6, default="0.001")

    def __str__(self) -> str:
        return self.name


class Instrument(models.Model):
    exchange = models.ForeignKey(Exchange, on_delete=models.PROTECT, related_name="instruments")
    symbol = models.CharField(max_length=32)  # ccxt unified symbol, "BTC/USDT"
    base = models.CharField(max_length=16)
    quote = models.CharField(max_length=16)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["exchange", "symbol"], name="instrument_unique")]

    def __str__(self) -> str:
        return f"{self.exchange.code}:{self.symbol}"

    @property
    def group_name(self) -> str:
        """Channels group for this instrument's ticks: letters, digits, hyphens and periods only."""
        return f"market.{self.exchange.code}.{self.symbol.replace('/', '-').replace(':', '-')}"


# Candle fields that carry a bar column of the same name (apps.engine.types.BAR_COLUMNS minus "trades",
# which is stored as trade_count). Writers and the bar loader share this one list.
CANDLE_BAR_FIELDS = (
    "open", "high", "low", "close", "volume", "taker_buy_volume", "taker_sell_volume",
    "whale_buy_volume", "whale_sell_volume", "liq_long_volume", "liq_short_volume",
)


class Candle(models.Model):
    """One closed bar. Volumes are in base units; missing inputs (no liquidation feed) are NULL."""

    instrument = models.ForeignKey(Instrument, on_delete=models.CASCADE, related_name="candles")
    timeframe = models.CharField(max_length=8, default="1m")
    open_time = models.DateTimeField()
    open = price_field()
    high = price_field()
    low = price_field()
    close = price_field()
    volume = qty_field()
    taker_buy_volume = qty_field(null=True, blank=True)  # NULL when the source has no taker split (OHLCV only)
    taker_sell_volume = qty_field(null=True, blank=True)
    trade_count = models.PositiveIntegerField(default=0)
    whale_buy_volume = qty_field(null=True, blank=True)
    whale_sell_volume = qty_field(null=True, blank=True)
    liq_long_volume = qty_field(null=True, blank=True)  # longs liquidated (forced sells)
    liq_short_volume = qty_field(null=True, blank=True)

    class Meta:
        ordering = ["instrument", "timeframe", "open_time"]
        constraints = [
            models.UniqueConstraint(fields=["instrument", "timeframe", "open_time"], name="candle_unique"),
            models.CheckConstraint(
                condition=models.Q(low__gt=0)
                & models.Q(high__gte=models.F("low"))
                & models.Q(open__gte=models.F("low"), open__lte=models.F("high"))
                & models.Q(close__gte=models.F("low"), close__lte=models.F("high")),
                name="candle_ohlc_consistent",
            ),
            models.CheckConstraint(
                condition=models.Q(volume__gte=0, taker_buy_volume__gte=0, taker_sell_volume__gte=0),
                name="candle_volumes_non_negative",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.instrument} {self.timeframe} {self.open_time:%Y-%m-%d %H:%M}"


class FeedStatus(models.Model):
    """What the dashboard shows for each feed: state, last error, next retry, rejected-input counts."""

    class State(models.TextChoices):
        STARTING = "starting"
        CONNECTED = "connected"
        LAGGING = "lagging"
        RECONNECTING = "reconnecting"
        STOPPED = "stopped"
        ERROR = "error"

    instrument = models.OneToOneField(Instrument, on_delete=models.CASCADE, related_name="feed_status")
    source = models.CharField(max_length=64)  # "sim", "replay:<path>", "live"
    state = models.CharField(max_length=16, choices=State.choices, default=State.STARTING)
    last_price = price_field(null=True, blank=True)
    last_trade_at = models.DateTimeField(null=True, blank=True)  # data time of the last trade
    last_error = models.TextField(blank=True)
    next_retry_at = models.DateTimeField(null=True, blank=True)
    rejected = models.JSONField(default=dict, blank=True)  # reason -> count
    bars_stored = models.PositiveIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.instrument} {self.state}"
