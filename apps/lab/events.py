"""Typed browser payloads of the lab, built in one place; every desk socket joins LAB_GROUP."""

from typing import Literal, TypedDict

from apps.lab.models import BacktestRun

LAB_GROUP = "lab"


class LabProgress(TypedDict):
    type: Literal["lab.progress"]
    run_id: int
    status: str  # queued | running | done | failed | cancelled
    stage: str  # "loading bars", "evaluating ghosts", "walking", "storing" ("" once done)
    bars_done: int
    bars_total: int
    bars_per_s: float | None  # over the walk so far; None before the walk
    eta_s: float | None  # seconds left of the walk at that rate
    error: str  # why a run failed ("" otherwise)


def progress_payload(run: BacktestRun, *, bars_per_s: float | None = None, eta_s: float | None = None) -> LabProgress:
    return LabProgress(
        type="lab.progress", run_id=run.pk, status=run.status, stage=run.stage, bars_done=run.bars_done,
        bars_total=run.bars_total, bars_per_s=None if bars_per_s is None else round(bars_per_s, 1),
        eta_s=None if eta_s is None else round(eta_s, 2), error=run.error[:500],
    )
