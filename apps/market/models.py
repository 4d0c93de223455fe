from decimal import Decimal

from django.conf import settings
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
    # A trade is a "whale" print when its notional (quote units) reaches whale_notional AND, when
    # whale_median_multiple > 0, its size is also at least that multiple of the rolling median trade size.
    whale_notional = models.DecimalField(max_digits=20, decimal_places=2, default=Decimal("100000"))
    whale_median_multiple = models.DecimalField(max_digits=8, decimal_places=2, default=Decimal("0"))

    # The market's trading rules as ccxt reports them (apps.market.markets.market_facts fills them from ccxt's
    # market dict; `markets_checked_at` says when). NULL = not known: the executors then neither round nor refuse
    # on that rule, as before these fields existed. Amounts are in the exchange's order unit: base units on spot
    # and linear markets, CONTRACTS on contract markets (notional = amount * contract_size, in quote units for
    # linear contracts, in the base currency's worth of quote units / price for inverse ones).
    class MarketType(models.TextChoices):
        SPOT = "spot"
        SWAP = "swap"  # perpetual
        FUTURE = "future"  # dated delivery

    market_type = models.CharField(max_length=8, choices=MarketType.choices, default=MarketType.SPOT)
    inverse = models.BooleanField(default=False)  # contracts margined and settled in the base coin (COIN-M)
    settle = models.CharField(max_length=16, blank=True)  # settlement currency of contracts; "" on spot
    contract_size = qty_field(default=Decimal("1"))  # units of base (linear) or of quote (inverse) per contract
    price_tick = price_field(null=True, blank=True)  # smallest price step
    amount_step = qty_field(null=True, blank=True)  # smallest order-amount step
    min_amount = qty_field(null=True, blank=True)  # smallest order amount
    min_notional = price_field(null=True, blank=True)  # smallest order cost, quote units
    markets_checked_at = models.DateTimeField(null=True, blank=True)  # when the facts above came from ccxt

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["exchange", "symbol"], name="instrument_unique"),
            models.CheckConstraint(
                condition=models.Q(whale_notional__gt=0, whale_median_multiple__gte=0), name="instrument_whale_rule"
            ),
            models.CheckConstraint(
                condition=models.Q(contract_size__gt=0)
                & (models.Q(price_tick__isnull=True) | models.Q(price_tick__gt=0))
                & (models.Q(amount_step__isnull=True) | models.Q(amount_step__gt=0))
                & (models.Q(min_amount__isnull=True) | models.Q(min_amount__gte=0))
                & (models.Q(min_notional__isnull=True) | models.Q(min_notional__gte=0)),
                name="instrument_market_rules_positive",
            ),
        ]

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
    source = models.CharField(max_length=255)  # "sim", "live", "replay:<path>[,<path>...][@speed]"
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


class LiquidationEvent(models.Model):
    """One recorded forced order (Binance forceOrder and the like). side is the side LIQUIDATED:
    "long" = a long was forced to sell. Exchanges throttle these streams, so they are a sample."""

    class Side(models.TextChoices):
        LONG = "long"
        SHORT = "short"

    instrument = models.ForeignKey(Instrument, on_delete=models.CASCADE, related_name="liquidations")
    ts = models.DateTimeField()
    side = models.CharField(max_length=8, choices=Side.choices)
    price = price_field()
    amount = qty_field()  # base units
    source = models.CharField(max_length=64, blank=True)  # file name or "live"

    class Meta:
        ordering = ["instrument", "ts"]
        constraints = [
            models.UniqueConstraint(fields=["instrument", "ts", "side", "price", "amount"], name="liquidation_unique"),
            models.CheckConstraint(condition=models.Q(price__gt=0, amount__gt=0), name="liquidation_positive"),
        ]
        indexes = [models.Index(fields=["instrument", "ts"])]

    def __str__(self) -> str:
        return f"{self.instrument} {self.ts:%Y-%m-%d %H:%M:%S} {self.side} {self.amount}"


class LargeTrade(models.Model):
    """One large aggressive print (a whale trade) kept individually; side is the TAKER side."""

    class Side(models.TextChoices):
        BUY = "buy"
        SELL = "sell"

    instrument = models.ForeignKey(Instrument, on_delete=models.CASCADE, related_name="large_trades")
    trade_id = models.CharField(max_length=64)
    ts = models.DateTimeField()
    side = models.CharField(max_length=4, choices=Side.choices)
    price = price_field()
    amount = qty_field()  # base units
    source = models.CharField(max_length=64, blank=True)

    class Meta:
        ordering = ["instrument", "ts"]
        constraints = [
            models.UniqueConstraint(fields=["instrument", "trade_id"], name="large_trade_unique"),
            models.CheckConstraint(condition=models.Q(price__gt=0, amount__gt=0), name="large_trade_positive"),
        ]
        indexes = [models.Index(fields=["instrument", "ts"])]

    def __str__(self) -> str:
        return f"{self.instrument} {self.ts:%Y-%m-%d %H:%M:%S} {self.side} {self.amount}@{self.price}"


class HistoryDownload(models.Model):
    """One `download_history` run (command or dashboard): what was asked, how far it got, the gaps found."""

    class State(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"

    instrument = models.ForeignKey(Instrument, on_delete=models.CASCADE, related_name="downloads")
    timeframe = models.CharField(max_length=8, default="1m")
    since = models.DateTimeField()
    until = models.DateTimeField(null=True, blank=True)  # None: up to the last closed candle
    state = models.CharField(max_length=8, choices=State.choices, default=State.QUEUED)
    expected = models.PositiveIntegerField(default=0)  # candles the range should hold
    fetched = models.PositiveIntegerField(default=0)
    stored = models.PositiveIntegerField(default=0)
    gaps = models.JSONField(default=list, blank=True)  # [[first missing open time, last missing, count], ...]
    error = models.TextField(blank=True)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.instrument} {self.timeframe} from {self.since:%Y-%m-%d} {self.state}"
