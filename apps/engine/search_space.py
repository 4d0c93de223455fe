"""The search space of a parameter study (issue 10): which ghost parameters a study may vary, and how far.

Bounds are never written twice: `param_bounds(kind)` builds the kind's config at its defaults while
`types.RANGE_RECORDER` is set, so every `check_range` call of its `__post_init__` reports the bounds the
engine itself enforces (name, low, high, open or closed, unit). Bounds between fields (a spike fader's
take_profit_pct below its spike_threshold_pct, a trend filter's fast below its slow periods) cannot be
ranges of one field: a sampled combination that breaks one is an INFEASIBLE trial (apps.engine.trial),
rejected by the same validation, with its message, before any bar is walked.

- `default_space(kind)`: every numeric field except `priority` (it only breaks ties between ghosts in the
  manager, it never changes what a ghost drafts), from 0.5x to 2x its default, clipped to its bounds (an
  open bound is replaced by the midpoint between it and the default); integers step 1, floats continuous.
- `validate_space(kind, ranges)`: rows from a form or JSON -> ParamRange list, or SpaceError with the
  messages per parameter (`errors[name]`).
- `suggest(trial, space)`: optuna's suggest_float / suggest_int / suggest_categorical per range (optuna is
  only duck-typed here: the engine does not import it).
- `grid(space)`: the value lists of optuna's GridSampler.

Desk studies (kind "desk") name parameters "<ghost kind>.<field>" for the desk kinds; a single ghost's
study names them by field ("<kind>.<field>" is accepted and normalised).
"""

import dataclasses
import functools
import math
import typing
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from apps.engine.registry import DESK_KINDS, get_spec
from apps.engine.types import RANGE_RECORDER, ConfigError, GhostConfig

if TYPE_CHECKING:  # the engine never needs optuna at run time
    import optuna

DESK = "desk"
RANGE_KINDS = ("float", "int", "bool", "choice")
# Fields that never change what a ghost drafts or how a trade is managed (see the module docstring).
NOT_SEARCHED = frozenset({"priority"})
_ROW_KEYS = ("name", "kind", "low", "high", "step", "choices")
_DIGITS = 10  # significant digits of a default range's ends: 0.3 x 2 is 0.6, not 0.6000000000000001


@dataclasses.dataclass(frozen=True)
class Bound:
    """A field's validated range, as its config's check_range enforces it."""

    name: str
    lo: float
    hi: float
    lo_open: bool = False
    hi_open: bool = False
    unit: str = ""

    def contains(self, x: float) -> bool:
        return (x > self.lo if self.lo_open else x >= self.lo) and (x < self.hi if self.hi_open else x <= self.hi)

    def text(self) -> str:
        """check_range's wording: '> 0 and < 50 (percent)'."""
        lo = f"> {self.lo:g}" if self.lo_open else f">= {self.lo:g}"
        hi = f"< {self.hi:g}" if self.hi_open else f"<= {self.hi:g}"
        return f"{lo} and {hi}" + (f" ({self.unit})" if self.unit else "")

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class ParamRange:
    """One searched parameter. kind "float" / "int": low..high (inclusive), step None (continuous float) or
    the grid step; "bool" / "choice": the values in `choices`."""

    name: str
    kind: str
    low: float | None = None
    high: float | None = None
    step: float | None = None
    choices: tuple[Any, ...] | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly; validate_space(kind, [r.as_dict() ...]) gives the same ranges back."""
        d = dataclasses.asdict(self)
        d["choices"] = list(self.choices) if self.choices is not None else None
        return d


class SpaceError(ConfigError):
    """A search space that cannot be used; `errors` maps a parameter name (or "ranges[i]" for a row without a
    usable name, "space" for the whole) to its messages."""

    def __init__(self, errors: Mapping[str, list[str]]):
        self.errors = {k: list(v) for k, v in errors.items()}
        super().__init__("; ".join(f"{k}: {m}" for k, msgs in self.errors.items() for m in msgs))


@functools.cache
def _bounds(kind: str) -> dict[str, Bound]:
    cls = get_spec(kind).config_cls
    token = RANGE_RECORDER.set([])
    try:
        cls()
        calls = RANGE_RECORDER.get() or []
    finally:
        RANGE_RECORDER.reset(token)
    out: dict[str, Bound] = {}
    for rec_kind, name, lo, hi, lo_open, hi_open, unit in calls:
        if rec_kind != cls.KIND or name in out:  # the first (and, for every kind today, only) check per field
            continue
        out[name] = Bound(name=name, lo=float(lo), hi=float(hi), lo_open=bool(lo_open), hi_open=bool(hi_open),
                          unit=str(unit))
    return out


def param_bounds(kind: str) -> dict[str, Bound]:
    """The validated bounds of `kind`'s config fields, by field name (fields without a range check, such as
    text or true/false fields, have none)."""
    return dict(_bounds(kind))


def _fields(kind: str) -> tuple[type[GhostConfig], dict[str, type], dict[str, Any]]:
    cls = get_spec(kind).config_cls
    hints = typing.get_type_hints(cls)
    types = {f.name: hints[f.name] for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return cls, types, cls().to_params()


def _round(x: float) -> float:
    return float(f"{x:.{_DIGITS}g}")


def _ghost_default_space(kind: str, prefix: str = "") -> list[ParamRange]:
    _, types, defaults = _fields(kind)
    bounds = _bounds(kind)
    out: list[ParamRange] = []
    for name, typ in types.items():
        b = bounds.get(name)
        if typ not in (int, float) or name in NOT_SEARCHED or b is None:
            continue
        d = float(defaults[name])
        lo, hi = sorted((d * 0.5, d * 2.0))
        if lo < b.lo or (b.lo_open and lo <= b.lo):
            lo = (b.lo + d) / 2 if b.lo_open else b.lo
        if hi > b.hi or (b.hi_open and hi >= b.hi):
            hi = (b.hi + d) / 2 if b.hi_open else b.hi
        if typ is int:
            ilo, ihi = math.ceil(lo), math.floor(hi)
            ilo += 1 if not b.contains(ilo) else 0
            ihi -= 1 if not b.contains(ihi) else 0
            if ilo < ihi:
                out.append(ParamRange(name=prefix + name, kind="int", low=ilo, high=ihi, step=1))
        else:
            lo, hi = _round(lo), _round(hi)
            if lo < hi and b.contains(lo) and b.contains(hi):
                out.append(ParamRange(name=prefix + name, kind="float", low=lo, high=hi))
    return out


def default_space(kind: str) -> list[ParamRange]:
    """The default search space of a ghost kind, or of the whole desk (kind "desk"; module docstring)."""
    if kind == DESK:
        return [r for k in DESK_KINDS for r in _ghost_default_space(k, prefix=f"{k}.")]
    get_spec(kind)
    return _ghost_default_space(kind)


def split_name(kind: str, name: str) -> tuple[str, str]:
    """(ghost kind, field) of a parameter name in a `kind` study; ConfigError when it names no ghost kind the
    study can search."""
    if "." in name:
        ghost_kind, field = name.split(".", 1)
        if kind == DESK:
            if ghost_kind not in DESK_KINDS:
                raise ConfigError(f"{ghost_kind!r} is not a desk ghost kind; desk kinds: {', '.join(DESK_KINDS)}")
        elif ghost_kind != kind:
            raise ConfigError(f"a {kind} study searches {kind} parameters only, not {ghost_kind}")
        return ghost_kind, field
    if kind == DESK:
        raise ConfigError(f"a desk study names parameters '<ghost kind>.<field>' (e.g. spike_fader.{name})")
    return kind, name


def _number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _check_row(kind: str, row: Any, i: int, seen: set[str]) -> tuple[str, ParamRange | None, list[str]]:
    """(error key, the range or None, messages) of one row."""
    if isinstance(row, ParamRange):
        row = row.as_dict()
    if not isinstance(row, Mapping):
        return f"ranges[{i}]", None, [f"each range must be a mapping of {', '.join(_ROW_KEYS)}, got "
                                      f"{type(row).__name__}"]
    name = row.get("name")
    if not isinstance(name, str) or not name:
        return f"ranges[{i}]", None, ["a range needs the parameter's name"]
    errs: list[str] = []
    try:
        ghost_kind, field = split_name(kind, name)
    except ConfigError as exc:
        return name, None, [str(exc)]
    cls, types, _ = _fields(ghost_kind)
    if field not in types:
        return name, None, [f"unknown {ghost_kind} parameter {field!r}; allowed: {', '.join(types)}"]
    key = field if kind != DESK else name
    if key in seen:
        return name, None, ["listed twice"]
    seen.add(key)
    unknown = sorted(set(row) - set(_ROW_KEYS))
    if unknown:
        errs.append(f"unknown key(s) {', '.join(map(str, unknown))}; allowed: {', '.join(_ROW_KEYS)}")
    typ = types[field]
    natural = {int: "int", float: "float", bool: "bool", str: "choice"}.get(typ, "choice")
    rkind = row.get("kind") or natural
    allowed = {"int": ("int", "choice"), "float": ("float", "choice"), "bool": ("bool",),
               "choice": ("choice",)}[natural]
    if rkind not in allowed:
        return name, None, errs + [f"{field} is {'an' if natural == 'int' else 'a'} {natural} parameter: kind must be "
                                   f"{' or '.join(allowed)}, got {rkind!r}"]
    low, high, step, choices = row.get("low"), row.get("high"), row.get("step"), row.get("choices")
    if rkind in ("int", "float"):
        if choices not in (None, [], ()):
            errs.append(f"a {rkind} range takes low/high/step, not choices")
        b = _bounds(ghost_kind).get(field)
        for label, v in (("low", low), ("high", high)):
            if not _number(v):
                errs.append(f"{label} must be a number, got {v!r}")
            elif rkind == "int" and v != int(v):
                errs.append(f"{label} must be a whole number, got {v!r}")
            elif b is not None and not b.contains(v):
                errs.append(f"{label} {v:g} is outside the allowed range: {field} must be {b.text()}")
        if _number(low) and _number(high) and low >= high:
            errs.append(f"low ({low:g}) must be below high ({high:g}); to fix a value, set it as a fixed parameter")
        if step is not None:
            if not _number(step) or step <= 0:
                errs.append(f"step must be a number > 0, got {step!r}")
            elif rkind == "int" and step != int(step):
                errs.append(f"step must be a whole number for an int range, got {step!r}")
            elif _number(low) and _number(high) and low < high:
                n = (high - low) / step
                if abs(n - round(n)) > 1e-9 * max(1.0, abs(n)):
                    errs.append(f"high - low ({high - low:g}) must be a whole number of steps ({step:g})")
        if errs:
            return name, None, errs
        if rkind == "int":
            return name, ParamRange(name=key, kind="int", low=int(low), high=int(high),
                                    step=int(step) if step is not None else 1), []
        return name, ParamRange(name=key, kind="float", low=float(low), high=float(high),
                                step=float(step) if step is not None else None), []
    # bool / choice
    if any(v is not None for v in (low, high, step)):
        errs.append(f"a {rkind} range takes choices, not low/high/step")
    if rkind == "bool":
        if choices in (None, [], ()):
            choices = [False, True]
        if not isinstance(choices, Sequence) or any(not isinstance(c, bool) for c in choices):
            errs.append(f"choices of a true/false parameter must be true and false, got {choices!r}")
    if not isinstance(choices, Sequence) or isinstance(choices, str) or len(choices) < 2:
        errs.append(f"choices must list at least 2 values, got {choices!r}")
    elif len(set(map(repr, choices))) != len(choices):
        errs.append(f"choices must not repeat a value, got {list(choices)!r}")
    elif not errs:
        for c in choices:
            try:  # the field's own type and range checks, the other fields at their defaults
                cls.from_params({field: c})
            except ConfigError as exc:
                errs.append(f"choice {c!r}: {exc}")
    if errs:
        return name, None, errs
    values = tuple(int(c) if typ is int else float(c) if typ is float else c for c in choices)
    return name, ParamRange(name=key, kind=rkind, choices=values), []


def validate_space(kind: str, ranges: Sequence[Mapping[str, Any] | ParamRange]) -> list[ParamRange]:
    """The ranges of a `kind` study (a ghost kind or "desk") from rows {name, kind?, low, high, step, choices},
    checked against the config's own bounds and types; SpaceError with every message per parameter."""
    if kind != DESK:
        get_spec(kind)
    if isinstance(ranges, str | bytes | Mapping) or not isinstance(ranges, Sequence):
        raise SpaceError({"space": [f"the search space must be a list of ranges, got {type(ranges).__name__}"]})
    if not ranges:
        raise SpaceError({"space": ["the search space is empty: choose at least one parameter to search"]})
    errors: dict[str, list[str]] = {}
    out: list[ParamRange] = []
    seen: set[str] = set()
    for i, row in enumerate(ranges):
        key, r, msgs = _check_row(kind, row, i, seen)
        if msgs:
            errors.setdefault(key, []).extend(msgs)
        elif r is not None:
            out.append(r)
    if errors:
        raise SpaceError(errors)
    return out


def suggest(trial: "optuna.Trial", space: Sequence[ParamRange]) -> dict[str, Any]:
    """One value per range from an optuna trial (ask-and-tell or objective), by range name."""
    out: dict[str, Any] = {}
    for r in space:
        if r.kind == "float":
            out[r.name] = trial.suggest_float(r.name, r.low, r.high, step=r.step)
        elif r.kind == "int":
            out[r.name] = trial.suggest_int(r.name, int(r.low), int(r.high), step=int(r.step or 1))
        else:
            out[r.name] = trial.suggest_categorical(r.name, list(r.choices or ()))
    return out


def grid(space: Sequence[ParamRange]) -> dict[str, list[Any]]:
    """Every value of each range for optuna's GridSampler; ConfigError when a float range has no step."""
    out: dict[str, list[Any]] = {}
    for r in space:
        if r.kind == "float":
            if r.step is None:
                raise ConfigError(f"{r.name}: a grid search needs a step for every float range")
            n = round((r.high - r.low) / r.step)
            out[r.name] = [_round(r.low + k * r.step) for k in range(n + 1)]
        elif r.kind == "int":
            out[r.name] = list(range(int(r.low), int(r.high) + 1, int(r.step or 1)))
        else:
            out[r.name] = list(r.choices or ())
    return out
