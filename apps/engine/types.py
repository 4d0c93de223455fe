"""Shared engine vocabulary: bar and draft column names, the Draft record, and config validation.

Everything here is plain Python + numpy/pandas so the same ghost code runs in backtests (one call over
the whole history), paper and live (one call over the trailing window). Django converts its Decimal
rows at the boundary (`apps.engine.bars.bars_from_records`).
"""

import contextvars
import dataclasses
import math
import typing
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd
from pandas.api.internals import create_dataframe_from_blocks

# Bars: a DataFrame indexed by a tz-aware UTC DatetimeIndex of 1-minute bar OPEN times, float64 columns.
# Volumes are in base units (BTC for BTC/USDT). An input the venue does not provide (no liquidation
# feed, no taker split in a freqtrade download) is NaN, never 0: a ghost that needs it must stay idle
# rather than read "no liquidations" into missing data.
BAR_COLUMNS: tuple[str, ...] = (
    "open", "high", "low", "close", "volume",
    "taker_buy_volume", "taker_sell_volume", "trades",
    "whale_buy_volume", "whale_sell_volume",
    "liq_long_volume", "liq_short_volume",
)
REQUIRED_BAR_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close")

# Per-bar output of every ghost. side: +1 long, -1 short, 0 no signal (int8). confidence 0..1.
# entry is the REFERENCE price (close of the signal bar); the executor fills at the next bar's open plus
# slippage and shifts stop/target by the same ratio (apps.engine.exits.rebase_levels).
DRAFT_COLUMNS: tuple[str, ...] = (
    "side", "confidence", "priority", "entry", "stop", "target", "size_mult", "max_hold_s", "reason",
)


class ConfigError(ValueError):
    """A ghost/fill configuration that cannot be used; the message is shown to operators as is."""


class BarsError(ValueError):
    """Bars that violate the engine's input contract (corrupt data is worse than no data)."""


@dataclasses.dataclass(frozen=True)
class Draft:
    """One ghost's proposal for one bar, as the signal manager and the UI see it.

    entry/stop/target are prices in quote currency relative to the reference entry (the signal bar's
    close); max_hold_s is data-time seconds; reason is human text with the numbers that triggered it.
    """

    side: int
    confidence: float
    priority: int
    entry: float
    stop: float
    target: float
    size_mult: float
    max_hold_s: float
    reason: str
    bar_time: pd.Timestamp

    @classmethod
    def from_row(cls, bar_time: pd.Timestamp, row: Mapping[str, Any]) -> "Draft":
        """Build a Draft from one row of a drafts DataFrame (numpy scalars -> Python types)."""
        return cls(
            side=int(row["side"]),
            confidence=float(row["confidence"]),
            priority=int(row["priority"]),
            entry=float(row["entry"]),
            stop=float(row["stop"]),
            target=float(row["target"]),
            size_mult=float(row["size_mult"]),
            max_hold_s=float(row["max_hold_s"]),
            reason=str(row["reason"]),
            bar_time=pd.Timestamp(bar_time),
        )


def empty_drafts(index: pd.DatetimeIndex) -> pd.DataFrame:
    """An all-idle drafts frame for `index`: side 0, prices NaN, reason ""."""
    return drafts_frame(index, **idle_draft_arrays(len(index)))


# The six float64 draft columns, in frame order. idle_draft_arrays allocates them as the rows of ONE (6, n)
# block, which drafts_frame hands to pandas as the frame's float block as is (no copy, no stacking).
_FLOAT_DRAFT_COLUMNS: tuple[str, ...] = ("confidence", "entry", "stop", "target", "size_mult", "max_hold_s")
_DRAFT_INDEX = pd.Index(list(DRAFT_COLUMNS))
# Block placements of the drafts frame: side, the float block, priority, reason.
_PLACEMENTS = {
    "side": np.array([0]), "floats": np.array([DRAFT_COLUMNS.index(c) for c in _FLOAT_DRAFT_COLUMNS]),
    "priority": np.array([2]), "reason": np.array([8]),
}


# One all-idle drafts frame (numeric columns) per row count, shared copy-on-write by idle_drafts.
_IDLE_TEMPLATE: dict[int, pd.DataFrame] = {}


def idle_drafts(index: pd.DatetimeIndex, reason: str = "") -> pd.DataFrame:
    """The all-idle drafts frame on `index` with `reason` on every row; equal to
    `drafts_frame(index, **idle_draft_arrays(len(index), reason))`.

    For a ghost with nothing to do on the whole input (no taker split, no whale sizes, no liquidation
    feed: every OHLCV-only history). The numeric columns (7.4 MB per 130k rows) are a copy-on-write
    shallow copy of one cached idle frame, so they cost no new memory: pandas copies them before any
    write (and numpy views of them are read-only), so the frames stay independent. The reason column is
    always fresh (a string array can be written through `.array`, bypassing copy-on-write).
    """
    n = len(index)
    template = _IDLE_TEMPLATE.get(n)
    if template is None:
        template = drafts_frame(pd.RangeIndex(n), **idle_draft_arrays(n))
        _IDLE_TEMPLATE.clear()  # one size kept: the history length a desk evaluates
        _IDLE_TEMPLATE[n] = template
    out = template.copy(deep=False)
    out.index = index
    reasons = np.empty(n, dtype=object)
    reasons.fill(reason)
    out["reason"] = pd.array(reasons, dtype="str", copy=False)
    return out


def idle_draft_arrays(n: int, reason: str = "") -> dict[str, np.ndarray]:
    """Writable per-column arrays of an idle drafts frame of n rows, for a ghost to fill in.

    The float columns are rows of one (6, n) block and the arrays are fresh: drafts_frame takes them over
    without copying (each copy of a 130k-row column costs page faults, ~0.5 ms on the desk's VM), so do
    not write to them after building the frame. `reason`: the reason every row starts with ("" = none).
    """
    floats = np.empty((len(_FLOAT_DRAFT_COLUMNS), n), dtype=np.float64)
    floats[0] = 0.0  # confidence
    floats[1:] = np.nan  # levels, size and hold are unknown while idle
    reasons = np.empty(n, dtype=object)
    reasons.fill(reason)  # 3-4x faster than np.full for object arrays
    return {
        "side": np.zeros(n, dtype=np.int8),
        **dict(zip(_FLOAT_DRAFT_COLUMNS, floats, strict=True)),
        "priority": np.zeros(n, dtype=np.int64),
        "reason": reasons,
    }


def drafts_frame(index: pd.DatetimeIndex, **columns: np.ndarray) -> pd.DataFrame:
    """The drafts DataFrame from per-column arrays, with the dtypes every ghost shares.

    One constructor makes every ghost's output identical in layout (side int8, priority int64, floats
    float64, reason str), which the look-ahead and live-vs-backtest checks compare exactly.

    Arrays straight from idle_draft_arrays (float columns still the rows of its block, side / priority /
    reason owning their data with the right dtypes) become the frame's blocks without a copy: the frame
    owns them from then on. Anything else is converted and copied (pandas' DataFrame constructor); both
    paths give equal frames with the same dtypes and the same block layout.
    """
    missing = [c for c in DRAFT_COLUMNS if c not in columns]
    if missing:
        raise ValueError(f"drafts_frame needs columns {missing}")
    block = _idle_block(columns, len(index))
    if block is not None:
        side, prio, reason = columns["side"], columns["priority"], columns["reason"]
        return create_dataframe_from_blocks([
            (side.reshape(1, -1), _PLACEMENTS["side"]),
            (block, _PLACEMENTS["floats"]),
            (prio.reshape(1, -1), _PLACEMENTS["priority"]),
            (pd.array(reason, dtype="str", copy=False), _PLACEMENTS["reason"]),
        ], index=index, columns=_DRAFT_INDEX)
    data = {
        "side": np.asarray(columns["side"], dtype=np.int8),
        "confidence": np.asarray(columns["confidence"], dtype=np.float64),
        "priority": np.asarray(columns["priority"], dtype=np.int64),
        **{c: np.asarray(columns[c], dtype=np.float64)
           for c in ("entry", "stop", "target", "size_mult", "max_hold_s")},
        "reason": pd.array(np.asarray(columns["reason"], dtype=object), dtype="str"),
    }
    return pd.DataFrame(data, index=index, columns=list(DRAFT_COLUMNS))


def _idle_block(columns: Mapping[str, Any], n: int) -> np.ndarray | None:
    """The (6, n) float block behind the float columns when `columns` is an idle_draft_arrays dict
    (possibly written to, never rebound), else None: then drafts_frame copies as pandas does."""
    first = columns["confidence"]
    if not isinstance(first, np.ndarray):
        return None
    block = first.base
    if (not isinstance(block, np.ndarray) or block.base is not None or block.shape != (6, n)
            or block.dtype != np.float64 or not block.flags.c_contiguous):
        return None
    for k, c in enumerate(_FLOAT_DRAFT_COLUMNS):
        arr = columns[c]
        if (not isinstance(arr, np.ndarray) or arr.base is not block or arr.shape != (n,)
                or arr.ctypes.data != block.ctypes.data + k * n * 8):
            return None
    for c, dt in (("side", np.int8), ("priority", np.int64), ("reason", np.object_)):
        arr = columns[c]
        if (not isinstance(arr, np.ndarray) or arr.base is not None or arr.dtype != dt or arr.shape != (n,)
                or not arr.flags.writeable):
            return None
    return block


class GhostConfig:
    """Mixin for frozen ghost config dataclasses: strict `from_params` / `to_params` round trip.

    Params come from the database (JSON) and operator forms, so they are checked here, once, with
    messages an operator can act on: unknown keys (a typo must not silently fall back to a default),
    wrong types (bool is not a number, "15" is not 15), NaN/inf. Range checks live in each config's
    `__post_init__`, which raises ConfigError too.
    """

    KIND: ClassVar[str] = "ghost"

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None) -> Self:
        """Validate a params mapping (missing keys take the documented defaults)."""
        if params is None:
            params = {}
        if not isinstance(params, Mapping):
            raise ConfigError(f"{cls.KIND} params must be a mapping of name -> value, "
                              f"got {type(params).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(params) - set(fields))
        if unknown:
            raise ConfigError(
                f"unknown {cls.KIND} parameter(s): {', '.join(map(str, unknown))}; "
                f"allowed: {', '.join(fields)}"
            )
        hints = typing.get_type_hints(cls)
        kwargs = {name: _coerce(cls.KIND, name, hints[name], value) for name, value in params.items()}
        return cls(**kwargs)

    def to_params(self) -> dict[str, Any]:
        """All fields as a JSON-friendly dict; `from_params(to_params())` gives an equal config."""
        return dataclasses.asdict(self)  # type: ignore[call-overload]


def _coerce(kind: str, name: str, typ: Any, value: Any) -> Any:
    """Convert one param to its field type or raise ConfigError naming the field."""
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
            raise ConfigError(f"{kind}.{name} must be an integer, got {value!r}")
        if isinstance(value, float | Decimal):
            if not math.isfinite(value) or value != int(value):
                raise ConfigError(f"{kind}.{name} must be a whole number, got {value!r}")
        return int(value)
    if typ is float:
        if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
            raise ConfigError(f"{kind}.{name} must be a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"{kind}.{name} must be a finite number, got {value!r}")
        return value
    if typ is str:
        if not isinstance(value, str):
            raise ConfigError(f"{kind}.{name} must be text, got {value!r}")
        return value
    if typ is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{kind}.{name} must be true or false, got {value!r}")
        return value
    return value


# While set to a list, check_range appends (kind, name, lo, hi, lo_open, hi_open, unit) of every call to it:
# apps.engine.search_space reads each config's validated bounds from its own __post_init__ this way, so the
# bounds a study may search are the ones the engine enforces, never a second copy. A ContextVar: a capture in
# one thread never sees another thread's configs.
RANGE_RECORDER: contextvars.ContextVar[list | None] = contextvars.ContextVar("range_recorder", default=None)


def check_range(kind: str, name: str, value: float, lo: float, hi: float, *, lo_open: bool = False,
                hi_open: bool = False, unit: str = "") -> None:
    """Raise ConfigError unless lo <= value <= hi (bounds optionally open); NaN always fails."""
    recorder = RANGE_RECORDER.get()
    if recorder is not None:
        recorder.append((kind, name, lo, hi, lo_open, hi_open, unit))
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
    if not ok:
        lo_s = f"> {lo:g}" if lo_open else f">= {lo:g}"
        hi_s = f"< {hi:g}" if hi_open else f"<= {hi:g}"
        unit_s = f" ({unit})" if unit else ""
        raise ConfigError(f"{kind}.{name} must be {lo_s} and {hi_s}{unit_s}, got {value!r}")
