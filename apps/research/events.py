"""Typed browser payloads of the research lab, built in one place; every desk socket joins the `lab` group
(apps.lab.events.LAB_GROUP), so the studies list and a study's page get these without a second socket."""

from datetime import datetime
from typing import Literal, TypedDict

from django.db.models import Count, Q
from django.utils import timezone

from apps.lab.events import LAB_GROUP
from apps.research.models import Study, Trial

__all__ = ["LAB_GROUP", "FoldProgress", "StudyProgress", "progress_payload", "elapsed_s"]


class FoldProgress(TypedDict):
    index: int
    done: int  # finished trials (done, infeasible, failed)
    best_train: float | None  # the best train objective so far (what selects)
    best_test: float | None  # the test objective of that same trial (shown, never selects)


class StudyProgress(TypedDict):
    type: Literal["study.progress"]
    study_id: int
    status: str  # queued | running | paused | done | failed | cancelled
    trials_done: int
    trials_total: int | None  # None: a minutes budget
    folds: list[FoldProgress]
    eta_s: float | None  # seconds left at the rate so far (minutes budget: the time left of it)
    error: str


def elapsed_s(study: Study, now: datetime | None = None) -> float:
    """Wall seconds the study has spent running (pauses excluded)."""
    now = now or timezone.now()
    extra = (now - study.resumed_at).total_seconds() if study.resumed_at and study.status == Study.Status.RUNNING \
        else 0.0
    return max(0.0, study.active_s + extra)


def _fold_rows(study: Study) -> list[FoldProgress]:
    """Two queries whatever the number of trials: counts per fold, then the best train value per fold with
    its trial's test value (ties: the lowest trial number, as the results choose)."""
    n = len(study.folds)
    done = dict(Trial.objects.filter(study=study).order_by().values("fold").annotate(
        n=Count("id", filter=Q(status__in=Trial.FINISHED))).values_list("fold", "n"))
    best: dict[int, tuple[float, float | None]] = {}
    rows = (Trial.objects.filter(study=study, status=Trial.Status.DONE, value__isnull=False)
            .order_by("fold", "-value", "number").values_list("fold", "value", "test_value"))
    for fold, value, test in rows:
        best.setdefault(fold, (value, test))
    return [FoldProgress(index=k, done=int(done.get(k, 0)), best_train=best.get(k, (None, None))[0],
                         best_test=best.get(k, (None, None))[1]) for k in range(n)]


def progress_payload(study: Study) -> StudyProgress:
    done = int(study.trials_done)
    total = study.trials_total
    eta = None
    if study.status == Study.Status.RUNNING:
        spent = elapsed_s(study)
        minutes = (study.settings or {}).get("budget_minutes")
        if minutes:
            eta = max(0.0, float(minutes) * 60.0 - spent)
        elif total and done:
            eta = spent / done * max(total - done, 0)
    return StudyProgress(
        type="study.progress", study_id=study.pk, status=study.status, trials_done=done, trials_total=total,
        folds=_fold_rows(study), eta_s=None if eta is None else round(eta, 1), error=(study.error or "")[:500],
    )
