"""The research tables: one Study per parameter search, one Trial per parameter set tried on one fold.

A study's state lives here, never in a worker: the driver (`apps.research.services.study_step`) rebuilds each
fold's optuna study in memory from the DONE trials every time it runs, so a study survives a restart of every
process, and a trial whose worker died is simply run again (its row is still pending/running).

Life of a study (status): queued -> running -> done | failed | cancelled, and running <-> paused.
Life of a trial: pending -> running -> done | infeasible | failed (a trial is re-run while pending/running).
"""

from django.conf import settings
from django.db import models

from apps.market.models import Instrument


class StudyQuerySet(models.QuerySet):
    def active(self) -> "StudyQuerySet":
        return self.filter(status__in=(Study.Status.QUEUED, Study.Status.RUNNING, Study.Status.PAUSED))


class Study(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        PAUSED = "paused"
        DONE = "done"
        FAILED = "failed"
        CANCELLED = "cancelled"

    name = models.CharField(max_length=200, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="studies")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)  # first step
    finished_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    instrument = models.ForeignKey(Instrument, on_delete=models.PROTECT, related_name="studies")
    start = models.DateTimeField()  # UTC, inclusive: the first fold's train start
    end = models.DateTimeField()  # UTC, exclusive
    # the validated request (apps.research.services.study_settings_validate): target ("desk" or a ghost kind),
    # space, fixed ghosts, objective, min_trades, scheme, train/test/step days, sampler, seed, budget, batch
    # size, and the lab settings of the rest (fee, limits, sizing, capital, toggles)
    settings = models.JSONField()
    folds = models.JSONField(default=list, blank=True)  # [{index, train_start, train_end, test_start, test_end}]
    days = models.JSONField(default=list, blank=True)  # ["YYYY-MM-DD", ...]: the index of every Trial.daily
    fingerprint = models.CharField(max_length=64, blank=True, db_index=True)  # sha256 hex (code, data, settings)
    code_version = models.CharField(max_length=64, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)  # last trial finished / step taken (sweeper)
    pushed_at = models.DateTimeField(null=True, blank=True)  # last progress push (at most ~4/s over all workers)
    # budget_minutes: wall seconds spent running before the current run of it (pauses do not count)
    active_s = models.FloatField(default=0.0)
    resumed_at = models.DateTimeField(null=True, blank=True)  # when it last went (back) to running
    error = models.TextField(blank=True)
    # written once, with status done, in one transaction (services._study_finish): per fold the chosen trial,
    # IS/OOS scores and degradation; the stitched out-of-sample figures and daily equity; stability;
    # importance; DSR; PBO
    results = models.JSONField(null=True, blank=True)
    trials_done = models.PositiveIntegerField(default=0)  # done + infeasible + failed trials, all folds
    trials_total = models.PositiveIntegerField(null=True, blank=True)  # budget_trials x folds (None: minutes)

    objects = StudyQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "studies"
        indexes = [models.Index(fields=["status", "heartbeat_at"], name="research_study_status_hb")]

    def __str__(self) -> str:
        return f"study {self.pk} {self.name or ''} ({self.status})".replace("  ", " ")

    @property
    def is_active(self) -> bool:
        return self.status in (self.Status.QUEUED, self.Status.RUNNING, self.Status.PAUSED)


class TrialManager(models.Manager):
    """`daily` (one float per day of the range) is deferred by default: only the results need it."""

    def get_queryset(self) -> models.QuerySet:
        return super().get_queryset().defer("daily")


class Trial(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"
        INFEASIBLE = "infeasible"  # the engine's validation refused the params (e.g. take_profit >= threshold)

    FINISHED = (Status.DONE, Status.FAILED, Status.INFEASIBLE)

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="trials")
    fold = models.PositiveSmallIntegerField()
    number = models.PositiveIntegerField()  # per fold, 0.. (optuna's trial number in that fold's study)
    batch = models.PositiveIntegerField(default=0)  # the ask batch it came from (seeds its sampler)
    params = models.JSONField()  # the searched params only (the rest are the study's fixed settings)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    train = models.JSONField(null=True, blank=True)  # WindowScore of the fold's train window
    test = models.JSONField(null=True, blank=True)  # WindowScore of the fold's test window (never selects)
    value = models.FloatField(null=True, blank=True)  # the train objective; None when undefined
    test_value = models.FloatField(null=True, blank=True)  # the test window's objective (shown, never selects)
    daily = models.JSONField(null=True, blank=True)  # daily returns over Study.days (fraction of equity)
    n_trades = models.PositiveIntegerField(null=True, blank=True)  # over the whole range
    started_at = models.DateTimeField(null=True, blank=True)  # the current attempt's claim token
    finished_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    error = models.TextField(blank=True)

    objects = TrialManager()

    class Meta:
        ordering = ["study", "fold", "number"]
        constraints = [models.UniqueConstraint(fields=["study", "fold", "number"], name="research_trial_unique")]
        indexes = [models.Index(fields=["study", "status"], name="research_trial_study_status")]

    def __str__(self) -> str:
        return f"study {self.study_id} fold {self.fold} trial {self.number} ({self.status})"
