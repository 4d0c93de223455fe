"""Chart data of a study's page, built on the server (DESIGN §13: a page never ships more points than the
screen has pixels). Pure numpy: no Django, no database; the views hand in what the study stored.

- `stitched_equity`: the out-of-sample equity of the walk-forward. Each fold contributes the daily returns of
  ITS chosen parameters over ITS test window only; the windows are laid end to end in time and compounded
  from the start capital: equity_d = capital x prod_{k <= d} (1 + r_k). Drawn with the lab's equity chart
  (`apps.lab.charts.equity_chart`: equity and underwater drawdown on one min/max-decimated x), plus the test
  windows as bands. Overlapping test windows (a step shorter than the test length) would count a day twice:
  a day already covered by an earlier fold is skipped, so every calendar day is traded by exactly one fold,
  the earliest one whose test window holds it (said on the page).
- `importance_bars`: optuna's parameter importances (fractions summing to 1 per fold), averaged over the
  folds that have them, largest first.
- `parcoords`: one line per trial with a defined objective, one axis per searched parameter (its searched
  range), the fold and the train/test scores; colour = the train objective. Beyond `max_lines` trials the
  chart keeps each fold's best ones and an even sample of the rest (the count says so).
- `stability_rows`: the chosen value of each parameter per fold and how far apart they are, as a share of
  the searched range: (max - min) / (high - low). 0 % = every fold chose the same value; a large spread
  means the optimum moves around and the choice is fragile.

Times are int64 milliseconds since the epoch (UTC).
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from apps.lab import charts as lab_charts

MAX_POINTS = lab_charts.MAX_POINTS
MAX_LINES = 1500  # parcoords lines: beyond ~1,500 the plot is a solid block and the page slows down
DAY_MS = 86_400_000


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


@dataclass(frozen=True)
class OosSegment:
    """One fold's out-of-sample stretch: its test window [start_ms, end_ms) and the chosen trial's daily
    returns inside it (t_ms = each day's start, UTC midnight; returns as fractions, 0.01 = +1 %)."""

    fold: int
    start_ms: int
    end_ms: int
    t_ms: Sequence[int]
    returns: Sequence[float]


def stitched_equity(segments: Sequence[OosSegment], start_capital: float,
                    max_points: int = MAX_POINTS) -> dict[str, Any]:
    """The stitched out-of-sample equity (see the module doc) as {"t", "equity", "drawdown", "points", "of",
    "folds": [{"index", "start", "end", "label", "days"}], "days", "return_pct"}.

    A point at each test day's END (its start + 1 day: the equity at that day's close), after a first point
    at the first window's start holding the start capital. A non-finite return (a day the trial could not
    measure) is taken as 0, i.e. flat, and counted in "flat_days".
    """
    segs = sorted(segments, key=lambda s: (s.start_ms, s.fold))
    t_out: list[int] = []
    r_out: list[float] = []
    folds = []
    covered_to = None  # the end of the days already taken by an earlier fold
    flat = 0
    for s in segs:
        t = np.asarray(s.t_ms, dtype=np.int64)
        r = np.asarray(s.returns, dtype=np.float64)
        keep = (t >= s.start_ms) & (t < s.end_ms)
        if covered_to is not None:
            keep &= t >= covered_to
        t, r = t[keep], r[keep]
        bad = ~np.isfinite(r)
        flat += int(bad.sum())
        r = np.where(bad, 0.0, r)
        folds.append({"index": s.fold, "start": int(s.start_ms), "end": int(s.end_ms), "label": f"fold {s.fold + 1}",
                      "days": int(len(t))})
        t_out.extend(t.tolist())
        r_out.extend(r.tolist())
        covered_to = max(covered_to or s.end_ms, s.end_ms)
    if not t_out:
        return {"t": [], "equity": [], "drawdown": [], "points": 0, "of": 0, "folds": folds, "days": 0,
                "return_pct": None, "flat_days": flat}
    order = np.argsort(np.asarray(t_out, dtype=np.int64), kind="stable")
    t_arr = np.asarray(t_out, dtype=np.int64)[order]
    r_arr = np.asarray(r_out, dtype=np.float64)[order]
    equity = float(start_capital) * np.cumprod(1.0 + r_arr)
    t_all = np.concatenate(([t_arr[0]], t_arr + DAY_MS))
    e_all = np.concatenate(([float(start_capital)], equity))
    out = lab_charts.equity_chart(t_all, e_all, max_points)
    out.update(folds=folds, days=int(len(r_arr)), flat_days=flat,
               return_pct=(float(e_all[-1]) / float(start_capital) - 1.0) * 100.0 if start_capital else None)
    return out


def importance_bars(per_fold: Sequence[Mapping[str, float] | None]) -> dict[str, Any]:
    """Mean importance per parameter over the folds that report one ({param: fraction}), largest first:
    {"param", "value", "folds" (how many folds the mean is over)}. A parameter a fold does not list counts
    0 in that fold (optuna leaves out what it could not rank)."""
    maps = [m for m in per_fold if m]
    names = sorted({k for m in maps for k in m})
    if not maps or not names:
        return {"param": [], "value": [], "folds": 0}
    mean = {n: sum(float(v) for m in maps if _finite(v := m.get(n))) / len(maps) for n in names}
    ranked = sorted(names, key=lambda n: (-mean[n], n))
    return {"param": ranked, "value": [mean[n] for n in ranked], "folds": len(maps)}


def _axis(r: Mapping[str, Any], values: list[Any]) -> dict[str, Any]:
    """One parcoords axis of a searched parameter: its searched range, choices/booleans as ticks."""
    name, kind = r["name"], r.get("kind", "float")
    if kind == "bool":
        return {"label": name, "values": [1 if v else 0 for v in values], "range": [0, 1], "tickvals": [0, 1],
                "ticktext": ["off", "on"]}
    if kind == "choice":
        choices = list(r.get("choices") or [])
        idx = [choices.index(v) if v in choices else -1 for v in values]
        return {"label": name, "values": idx, "range": [0, max(1, len(choices) - 1)],
                "tickvals": list(range(len(choices))), "ticktext": [str(c) for c in choices]}
    lo, hi = r.get("low"), r.get("high")
    vals = [float(v) if _finite(v) else None for v in values]
    dim: dict[str, Any] = {"label": name, "values": vals}
    if _finite(lo) and _finite(hi) and hi > lo:
        dim["range"] = [float(lo), float(hi)]
    return dim


def parcoords(trials: Sequence[Mapping[str, Any]], space: Sequence[Mapping[str, Any]], *, objective: str,
              folds: int, max_lines: int = MAX_LINES) -> dict[str, Any]:
    """Plotly parcoords data from trials [{"fold", "number", "params", "value" (train objective), "test"
    (test objective or None)}] and the searched ranges [{"name", "kind", "low", "high", "choices"}].

    Trials without a train value (infeasible, failed, fewer trades than the minimum) have no place on an
    objective axis: left out, counted in "left_out". Returns {"dimensions", "color", "cmin", "cmax",
    "color_label", "n", "of", "left_out", "sampled"}.
    """
    scored = [t for t in trials if _finite(t.get("value"))]
    left_out = len(trials) - len(scored)
    sampled = False
    if len(scored) > max_lines:
        sampled = True
        by_fold: dict[int, list] = {}
        for t in scored:
            by_fold.setdefault(int(t.get("fold", 0)), []).append(t)
        best_each = max(1, max_lines // (4 * max(1, len(by_fold))))  # a quarter of the budget: the best ones
        keep = []
        for rows in by_fold.values():
            keep.extend(sorted(rows, key=lambda t: (-t["value"], t.get("number", 0)))[:best_each])
        kept_ids = {id(t) for t in keep}
        rest = [t for t in scored if id(t) not in kept_ids]
        room = max_lines - len(keep)
        if room > 0 and rest:
            step = len(rest) / room
            keep.extend(rest[int(i * step)] for i in range(min(room, len(rest))))
        scored = sorted(keep, key=lambda t: (int(t.get("fold", 0)), t.get("number", 0)))
    dims: list[dict[str, Any]] = []
    if folds > 1:
        dims.append({"label": "fold", "values": [int(t.get("fold", 0)) for t in scored], "range": [0, folds - 1],
                     "tickvals": list(range(folds)), "ticktext": [str(i + 1) for i in range(folds)]})
    for r in space:
        dims.append(_axis(r, [(t.get("params") or {}).get(r["name"]) for t in scored]))
    train = [float(t["value"]) for t in scored]
    dims.append({"label": f"train {objective}", "values": train})
    test = [float(t["test"]) if _finite(t.get("test")) else None for t in scored]
    if any(v is not None for v in test):
        dims.append({"label": f"test {objective}", "values": test})
    lo, hi = (min(train), max(train)) if train else (0.0, 1.0)
    return {"dimensions": dims, "color": train, "cmin": lo, "cmax": hi if hi > lo else lo + 1.0,
            "color_label": f"train {objective}", "n": len(scored), "of": len(trials), "left_out": left_out,
            "sampled": sampled}


def stability_rows(chosen: Sequence[Mapping[str, Any] | None], space: Sequence[Mapping[str, Any]]) -> list[dict]:
    """Per searched parameter: the value each fold chose (None where a fold chose nothing) and the spread.

    spread_pct = (max - min) / (high - low) x 100 over the folds' numeric choices (None with fewer than two,
    or without a searched range); booleans and choices report how many distinct values were chosen instead.
    """
    rows = []
    for r in space:
        name, kind = r["name"], r.get("kind", "float")
        values = [(c or {}).get(name) if c is not None else None for c in chosen]
        present = [v for v in values if v is not None]
        row: dict[str, Any] = {"name": name, "kind": kind, "values": values, "spread_pct": None,
                               "distinct": len({repr(v) for v in present})}
        lo, hi = r.get("low"), r.get("high")
        nums = [float(v) for v in present if _finite(v)]
        if kind not in ("bool", "choice") and len(nums) >= 2 and _finite(lo) and _finite(hi) and hi > lo:
            row["spread_pct"] = (max(nums) - min(nums)) / (float(hi) - float(lo)) * 100.0
        if nums:
            row["min"], row["max"] = min(nums), max(nums)
        rows.append(row)
    return rows
