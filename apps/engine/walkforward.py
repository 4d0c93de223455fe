"""Walk-forward folds for a parameter study (issue 10), pure.

A study covers [start, end) of one instrument's bars. Its folds, in whole UTC days from t0 (the first UTC
midnight at or after `start`; a partial first day only warms the ghosts up), with train N days, test M days,
step S days (S defaults to M):

    fold k: test  = [t0 + N + k*S, t0 + N + k*S + M)
            train = [t0 + k*S, test start)   (rolling: always N days)
                    [t0, test start)         (anchored: grows by S each fold)

and folds are made while the test window ends at or before `end`. Parameters are chosen on a fold's train
window only; its test window, which starts where the train window ends, is that fold's out-of-sample
stretch. Windows are whole UTC days because every score is built from the daily returns of UTC days, as the
lab's Sharpe (apps.engine.report). S < M is refused: test windows would overlap, and the stitched
out-of-sample equity needs each day tested once; S > M is allowed (the days between test windows are
simply not tested).
"""

import dataclasses
import math
from datetime import datetime
from typing import Any

import pandas as pd

from apps.engine.types import ConfigError

SCHEMES = ("anchored", "rolling")
_DAY = pd.Timedelta(days=1)


@dataclasses.dataclass(frozen=True)
class Fold:
    """One walk-forward fold; times are tz-aware UTC Timestamps at midnight, ends exclusive."""

    index: int
    train_start: pd.Timestamp
    train_end: pd.Timestamp
    test_start: pd.Timestamp
    test_end: pd.Timestamp

    @property
    def train_days(self) -> int:
        return int((self.train_end - self.train_start) / _DAY)

    @property
    def test_days(self) -> int:
        return int((self.test_end - self.test_start) / _DAY)

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly: the index and the four times as ISO 8601 strings."""
        return {"index": self.index, "train_start": self.train_start.isoformat(),
                "train_end": self.train_end.isoformat(), "test_start": self.test_start.isoformat(),
                "test_end": self.test_end.isoformat()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Fold":
        return cls(index=int(d["index"]), **{k: utc(d[k]) for k in ("train_start", "train_end", "test_start",
                                                                      "test_end")})


def utc(t: Any) -> pd.Timestamp:
    """A tz-aware UTC Timestamp from a Timestamp, datetime or ISO string (naive means UTC)."""
    ts = pd.Timestamp(t)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _whole_days(name: str, value: Any, *, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name} must be a whole number of days, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} must be a whole number of days > 0, got {value!r}")
    if value != int(value):
        raise ConfigError(f"{name} must be a whole number of days (scores are daily returns of UTC days), "
                          f"got {value!r}")
    return int(value)


def make_folds(start: pd.Timestamp | datetime | str, end: pd.Timestamp | datetime | str, *, scheme: str,
               train_days: float, test_days: float, step_days: float | None = None) -> list[Fold]:
    """The folds of the module docstring; ConfigError with an operator-readable message when the scheme is
    unknown, a length is not a positive whole number of days, the step is shorter than the test window, or
    no fold fits in [start, end)."""
    if scheme not in SCHEMES:
        raise ConfigError(f"scheme must be one of {', '.join(SCHEMES)}, got {scheme!r}")
    n = _whole_days("train_days", train_days)
    m = _whole_days("test_days", test_days)
    s = _whole_days("step_days", step_days, allow_none=True) or m
    if s < m:
        raise ConfigError(f"step_days ({s}) must be at least test_days ({m}): overlapping test windows would "
                          "count some out-of-sample days twice in the stitched equity")
    t_start, t_end = utc(start), utc(end)
    if pd.isna(t_start) or pd.isna(t_end):  # pd.Timestamp("") is NaT, and a NaT end never stops the loop below
        raise ConfigError("a start and an end date are required")
    if t_end <= t_start:
        raise ConfigError(f"end ({t_end:%Y-%m-%d %H:%M}) must be after start ({t_start:%Y-%m-%d %H:%M})")
    t0 = t_start.ceil("D")
    folds: list[Fold] = []
    k = 0
    while True:
        test_start = t0 + (n + k * s) * _DAY
        test_end = test_start + m * _DAY
        if test_end > t_end:
            break
        train_start = t0 + k * s * _DAY if scheme == "rolling" else t0
        folds.append(Fold(index=k, train_start=train_start, train_end=test_start, test_start=test_start,
                          test_end=test_end))
        k += 1
    if not folds:
        avail = max(0, int((t_end - t0) / _DAY))
        raise ConfigError(f"no fold fits: one fold needs train_days + test_days = {n + m} whole UTC days from "
                          f"{t0:%Y-%m-%d}, the range has {avail} (from {t_start:%Y-%m-%d %H:%M} to "
                          f"{t_end:%Y-%m-%d %H:%M} UTC)")
    return folds
