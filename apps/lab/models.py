"""The research lab's tables: one BacktestRun per request, its trades and signals, and the success criteria.

A run is written in two phases: the request (settings, fingerprint, status queued) when it is created, and
every result (summary, figures, criteria, series, daily, trades, signals) in ONE transaction that also sets
status done (`apps.lab.services.lab_run_execute`), so a worker killed mid-run never leaves a "done" run with
partial rows. Money is Decimal as in the trading ledger (`apps.common.fields`); engine floats (scores, draft
levels, returns) stay float.
"""

from django.conf import settings
from django.db import models

from apps.common.fields import money_field, price_field, qty_field
from apps.market.models import Instrument


class RunQuerySet(models.QuerySet):
    pass


class RunManager(models.Manager.from_queryset(RunQuerySet)):  # type: ignore[misc]
    """`series` (the full-resolution equity, ~16 bytes per bar: 2 MB for 90 days of 1m) is deferred by
    default, so lists and detail pages never read it by accident; `run.series` loads it on access."""

    def get_queryset(self) -> RunQuerySet:
        return super().get_queryset().defer("series")


class BacktestRun(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"
        CANCELLED = "cancelled"

    # stage texts, in order (the progress bar shows them as they are)
    STAGE_LOADING = "loading bars"
    STAGE_EVALUATING = "evaluating ghosts"
    STAGE_WALKING = "walking"
    STAGE_STORING = "storing"

    name = models.CharField(max_length=200, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="backtest_runs")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    stage = models.CharField(max_length=32, blank=True)
    bars_total = models.PositiveIntegerField(default=0)
    bars_done = models.PositiveIntegerField(default=0)
    heartbeat_at = models.DateTimeField(null=True, blank=True)  # wall time; the sweeper fails stale running runs
    cancel_requested = models.BooleanField(default=False)
    error = models.TextField(blank=True)
    instrument = models.ForeignKey(Instrument, on_delete=models.PROTECT, related_name="backtest_runs")
    start = models.DateTimeField()  # UTC, inclusive (bar open time)
    end = models.DateTimeField()  # UTC, exclusive
    settings = models.JSONField()  # the validated request (apps.lab.services.lab_settings_validate)
    fingerprint = models.CharField(max_length=64, blank=True, db_index=True)  # sha256 hex, see services
    code_version = models.CharField(max_length=64, blank=True)
    summary = models.JSONField(null=True, blank=True)  # headline figures (apps.engine.report)
    ghost_figures = models.JSONField(null=True, blank=True)  # list, one dict per ghost
    criteria = models.JSONField(null=True, blank=True)  # gate results at finish time (apps.engine.criteria)
    # full-resolution equity: int64 bar open times (ms) then float64 equity, little-endian (apps.lab.series)
    series = models.BinaryField(null=True, blank=True, editable=False)
    daily = models.JSONField(default=list, blank=True)  # [[day "YYYY-MM-DD", net pnl, trades, fees], ...]
    source = models.CharField(max_length=32, default="lab")  # "lab" | "desk_compare" | "command"
    compare_of = models.JSONField(null=True, blank=True)  # desk_compare: what was compared (period, ghosts)

    objects = RunManager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status", "heartbeat_at"], name="lab_run_status_heartbeat")]

    def __str__(self) -> str:
        return f"run {self.pk} {self.name or ''} ({self.status})".replace("  ", " ")

    @property
    def is_active(self) -> bool:
        return self.status in (self.Status.QUEUED, self.Status.RUNNING)


class BacktestSignal(models.Model):
    """One draft (side != 0) of one ghost on one bar, with the fate the manager gave it."""

    run = models.ForeignKey(BacktestRun, on_delete=models.CASCADE, related_name="signals")
    bar_time = models.DateTimeField()  # open time of the bar the draft was computed on
    ghost = models.CharField(max_length=64)  # the ghost's name in the run
    kind = models.CharField(max_length=32)
    side = models.SmallIntegerField()  # +1 long, -1 short
    fate = models.CharField(max_length=32)  # taken, outscored, blocked_trend, blocked_risk, direction_off ...
    detail = models.TextField(blank=True)
    score = models.FloatField(null=True, blank=True)
    confidence = models.FloatField(null=True, blank=True)
    entry = models.FloatField(null=True, blank=True)  # reference price: the signal bar's close
    stop = models.FloatField(null=True, blank=True)
    target = models.FloatField(null=True, blank=True)
    reason = models.TextField(blank=True)

    class Meta:
        ordering = ["run", "bar_time", "id"]
        indexes = [
            models.Index(fields=["run", "bar_time"], name="lab_signal_run_bar"),
            models.Index(fields=["run", "ghost", "fate"], name="lab_signal_run_ghost_fate"),
        ]

    def __str__(self) -> str:
        return f"{self.ghost} {self.bar_time:%Y-%m-%d %H:%M} {self.fate}"


class BacktestTrade(models.Model):
    """One closed round trip of a run (the engine's Trade), money as trading.Position stores it."""

    run = models.ForeignKey(BacktestRun, on_delete=models.CASCADE, related_name="trades")
    seq = models.PositiveIntegerField()  # 1.. in the engine's close order
    ghost = models.CharField(max_length=64)
    kind = models.CharField(max_length=32)
    side = models.SmallIntegerField()  # +1 long, -1 short
    signal_time = models.DateTimeField()
    entry_time = models.DateTimeField()
    entry_price = price_field()
    exit_time = models.DateTimeField()
    exit_price = price_field()
    qty = qty_field()
    entry_fee = money_field()
    exit_fee = money_field()
    gross_pnl = money_field()
    net_pnl = money_field()
    return_pct = models.FloatField()  # net P&L / entry notional x 100
    reason = models.CharField(max_length=32)  # stop, target, time, end_of_data, kill_switch
    signal = models.ForeignKey(BacktestSignal, null=True, blank=True, on_delete=models.SET_NULL,
                               related_name="trades")

    class Meta:
        ordering = ["run", "seq"]
        constraints = [models.UniqueConstraint(fields=["run", "seq"], name="lab_trade_run_seq")]
        indexes = [
            models.Index(fields=["run", "entry_time"], name="lab_trade_run_entry"),
            models.Index(fields=["run", "ghost"], name="lab_trade_run_ghost"),
        ]

    def __str__(self) -> str:
        return f"{self.ghost} {'long' if self.side > 0 else 'short'} {self.entry_time:%Y-%m-%d %H:%M} {self.reason}"


class SuccessCriteria(models.Model):
    """The seed's gates, one row (pk=1, `apps.lab.selectors.success_criteria` gets or creates it); operators
    edit it through `apps.lab.services.lab_criteria_update` (audited). Percentages are percent (60 = 60 %)."""

    # phase 1
    win_rate_min_pct = models.FloatField(default=60.0)
    sharpe_min = models.FloatField(default=1.5)
    max_drawdown_max_pct = models.FloatField(default=15.0)
    profitable_streak_days = models.PositiveIntegerField(default=10)
    # phase 2
    daily_loss_max_pct = models.FloatField(default=3.0)
    daily_profit_min = money_field(default=50)  # quote currency per capital_basis
    capital_basis = money_field(default=10000)
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")

    class Meta:
        verbose_name_plural = "success criteria"

    def __str__(self) -> str:
        return "success criteria"
