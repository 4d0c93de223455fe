"""Reads of the research pages (written by R3 for the views; apps.research.events holds the progress reads).

Every read is a fixed number of queries whatever the number of trials: lists page by keyset (studies on id,
trials on (fold, number)), the "best per fold" table ranks with a window function in one query, and the
trials' daily returns (one float per day each) are never loaded by a page (Trial.objects defers them).
"""

from django.db.models import F, Q, QuerySet, Window
from django.db.models.functions import RowNumber

from apps.research.models import Study, Trial


def study_get(*, study_id: int) -> Study | None:
    return Study.objects.select_related("instrument__exchange", "created_by").filter(pk=study_id).first()


def studies_page(*, before: int | None, limit: int) -> list[Study]:
    """The newest `limit` studies with an id below `before` (None: from the newest), newest first; the
    caller asks one more than it shows to know whether an older page exists."""
    qs = Study.objects.select_related("instrument__exchange", "created_by").defer("days").order_by("-id")
    if before:
        qs = qs.filter(pk__lt=before)
    return list(qs[:limit])


def study_best_trials(*, study_id: int, per_fold: int) -> list[Trial]:
    """Each fold's `per_fold` best DONE trials by train objective (ties: the lower trial number, as the results
    choose), fold by fold; one query (ROW_NUMBER over each fold)."""
    ranked = (Trial.objects.filter(study_id=study_id, status=Trial.Status.DONE, value__isnull=False)
              .annotate(rank=Window(RowNumber(), partition_by=[F("fold")],
                                    order_by=[F("value").desc(), F("number").asc()]))
              .filter(rank__lte=per_fold))
    return sorted(ranked, key=lambda t: (t.fold, t.rank))


def study_trials_page(*, study_id: int, fold: int | None, status: str | None, after: tuple[int, int] | None,
                      limit: int) -> list[Trial]:
    """Trials in (fold, number) order after the key `after`, optionally of one fold and one status."""
    qs = Trial.objects.filter(study_id=study_id)
    if fold is not None:
        qs = qs.filter(fold=fold)
    if status:
        qs = qs.filter(status=status)
    if after is not None:
        f, n = after
        qs = qs.filter(Q(fold__gt=f) | Q(fold=f, number__gt=n))
    return list(qs.order_by("fold", "number")[:limit])


def study_trials_for_plot(*, study_id: int) -> list[dict]:
    """Every trial's fold, number, params, train value and test value (no daily returns): the parcoords."""
    rows = Trial.objects.filter(study_id=study_id).order_by("fold", "number").values(
        "fold", "number", "params", "value", "test_value", "status")
    return [{**r, "test": r["test_value"]} for r in rows]


def trial_get(*, study_id: int, trial_id: int) -> Trial | None:
    return Trial.objects.filter(study_id=study_id, pk=trial_id).first()


def ghosts_of_kinds(*, kinds: list[str]) -> QuerySet:
    """The desk's ghosts of the given kinds, to apply a trial to."""
    from apps.ghosts.models import Ghost

    return Ghost.objects.filter(kind__in=kinds).select_related("instrument__exchange").order_by("kind", "name")
