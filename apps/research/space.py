"""A study's search space as the engine and optuna see it: the ParamRanges of its settings, and optuna's
distributions of them. Shared by apps.research.services (the driver) and apps.research.results (importances),
which therefore need not import each other both ways (issue 13: no import circles).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import optuna

from apps.engine import search_space as space_mod


def study_ranges(s: Mapping[str, Any]) -> list[Any]:
    """The study's ParamRanges, named by their key in Trial.params ("field", or "ghost.field" for the desk)."""
    fields = {f.name for f in dataclasses.fields(space_mod.ParamRange)}
    return [space_mod.ParamRange(**{k: v for k, v in r.items() if k in fields}) for r in s["space"]]


@lru_cache(maxsize=64)
def study_distributions(ranges: tuple[Any, ...]) -> dict[str, Any]:
    """optuna's distributions of a space, exactly as `search_space.suggest` declares them (a FixedTrial at each
    range's low end records them; they depend on the ranges only), computed once per space and process."""
    point = {r.name: r.low if r.kind in ("int", "float") else r.choices[0] for r in ranges}
    ft = optuna.trial.FixedTrial(point)
    space_mod.suggest(ft, ranges)
    return ft.distributions
