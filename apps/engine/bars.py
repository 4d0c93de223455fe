"""Bars in, bars checked: the one gate every ghost's input passes.

A ghost is only as good as its input, and a silent NaN close or an out-of-order row turns into a wrong
trade much later. So the contract is checked here, once, loudly (NautilusTrader: "corrupt data is worse
than no data"): tz-aware UTC index of whole-minute open times, strictly increasing, OHLC present,
finite, positive and consistent. Optional inputs a venue does not provide are added as NaN.
"""

from collections.abc import Iterable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd

from apps.engine.types import BAR_COLUMNS, REQUIRED_BAR_COLUMNS, BarsError

# The Candle model names the trade count `trade_count`; accept it so `Candle.objects.values()` rows can
# be passed straight in.
_ALIASES = {"trade_count": "trades"}


# Attribute (not `attrs`, which pandas copies into derived frames) holding the proof that a frame is the
# untouched output of validate_bars: (index object, column data addresses, a shallow copy of the frame).
# The shallow copy shares the data, so under copy-on-write (pandas >= 3) ANY write to the frame's values
# copies them first and moves their address: a frame edited after validation fails the fast path.
_PROOF = "_engine_validated_bars"


def data_addresses(df: pd.DataFrame) -> tuple[int, ...]:
    """Memory addresses of the contract columns' data: equal for frames sharing (copy-on-write) data."""
    if tuple(df.columns) == BAR_COLUMNS:
        try:
            # the columns' arrays straight from pandas' block manager: the same views df[c].to_numpy() gives,
            # ~8x cheaper than 12 column lookups (a batch checks this ~7 times per ghost)
            return tuple(int(a.ctypes.data) for a in df._mgr.column_arrays)
        except AttributeError:  # pandas internals changed: the public way below
            pass
    return tuple(int(df[c].to_numpy().ctypes.data) for c in BAR_COLUMNS)


def _mark(out: pd.DataFrame) -> pd.DataFrame:
    object.__setattr__(out, _PROOF, (out.index, data_addresses(out), out.copy(deep=False)))
    return out


def is_validated(df: object) -> bool:
    """True when `df` is a frame returned by validate_bars and not changed since (cheap: O(columns)).

    Checks the class, the exact contract columns and dtypes, the very index object that was validated
    and that every column still points at the validated memory. The data cannot have been written in
    place meanwhile: validate_bars keeps a shallow copy, so copy-on-write moves edited data elsewhere.
    """
    if type(df) is not pd.DataFrame:
        return False
    proof = df.__dict__.get(_PROOF)
    if proof is None:
        return False
    index, addresses, _ = proof
    return (df.index is index and tuple(df.columns) == BAR_COLUMNS
            and all(dt == np.float64 for dt in df.dtypes) and data_addresses(df) == addresses)


def validate_bars(df: pd.DataFrame) -> pd.DataFrame:
    """Check `df` against the bar contract and return a float64 copy with exactly BAR_COLUMNS.

    The index is converted to UTC and named "open_time"; missing optional columns are NaN; columns
    outside BAR_COLUMNS are dropped (ghosts read only the contract, and a copy keeps the caller's frame
    untouched). Raises BarsError with the first offending timestamp.

    Fast path: a frame that validate_bars itself returned and that nobody changed since (`is_validated`)
    is not checked again; a shallow copy of it is returned (copy-on-write: edits to either never reach
    the other). Every ghost validates its input, so a runner that validates once and hands the result to
    several ghosts pays for the checks once (~5 ms per 130k bars) instead of per ghost.
    """
    if is_validated(df):
        return _mark(df.copy(deep=False))
    if not isinstance(df, pd.DataFrame):
        raise BarsError(f"bars must be a pandas DataFrame, got {type(df).__name__}")
    idx = df.index
    if not isinstance(idx, pd.DatetimeIndex):
        raise BarsError(f"bars must be indexed by a DatetimeIndex of bar open times, "
                        f"got {type(idx).__name__}")
    if idx.tz is None:
        raise BarsError("bars index must be tz-aware (UTC bar open times); got naive timestamps")
    if len(idx) and not idx.is_unique:
        dup = idx[idx.duplicated()][0]
        raise BarsError(f"bars index has duplicate open times, first {dup}")
    if len(idx) and not idx.is_monotonic_increasing:
        pos = int(np.flatnonzero(np.diff(idx.asi8) < 0)[0]) + 1
        raise BarsError(f"bars index is not increasing: {idx[pos]} comes after {idx[pos - 1]}")
    missing = [c for c in REQUIRED_BAR_COLUMNS if c not in df.columns]
    if missing:
        raise BarsError(f"bars lack required column(s): {', '.join(missing)}")
    utc = idx.tz_convert("UTC")
    off_minute = utc.as_unit("ns").asi8 % 60_000_000_000 != 0
    if off_minute.any():
        raise BarsError(f"bar open times must be whole minutes (1-minute bars), got {utc[off_minute][0]}")

    # One (columns, bars) float64 block filled column by column: the frame below wraps it without the
    # copy pandas makes when it stacks separate column arrays.
    data = np.empty((len(BAR_COLUMNS), len(df)), dtype=np.float64)
    for j, c in enumerate(BAR_COLUMNS):
        if c in df.columns:
            try:
                data[j] = np.asarray(df[c].to_numpy(), dtype=np.float64)
            except (TypeError, ValueError) as exc:
                raise BarsError(f"bars column {c!r} is not numeric: {exc}") from None
        else:
            data[j] = np.nan
    out = pd.DataFrame(data.T, index=pd.DatetimeIndex(utc, name="open_time"), columns=list(BAR_COLUMNS),
                       copy=False)
    if not _values_ok(data):
        _check_values(out)  # finds the first offending value and raises with it
    return _mark(out)


def _values_ok(data: np.ndarray) -> bool:
    """True when the (BAR_COLUMNS, bars) block passes every check of _check_values.

    A few whole-block reductions (~5x cheaper than the per-column masks) for the common, clean case; on
    False, _check_values runs to find and name the first offending value.
    """
    if data.shape[1] == 0:
        return True
    o, h, lo, c = data[0], data[1], data[2], data[3]
    ohlc = data[:4]
    # min > 0 fails for NaN too (comparisons with NaN are False); max < inf rules out +inf
    if not (ohlc.min() > 0 and ohlc.max() < np.inf):
        return False
    if not ((h >= np.maximum(o, c)).all() and (lo <= np.minimum(o, c)).all() and (h >= lo).all()):
        return False
    vols = data[4:]
    # NaN (missing input) is allowed: fmin/fmax skip it; -inf is caught by < 0
    return not (np.fmin.reduce(vols, axis=None) < 0 or np.fmax.reduce(vols, axis=None) == np.inf)


def _check_values(bars: pd.DataFrame) -> None:
    """OHLC finite, > 0 and consistent; volumes never negative (NaN allowed: missing input)."""
    o, h, lo, c = (bars[k].to_numpy() for k in ("open", "high", "low", "close"))
    for name, arr in (("open", o), ("high", h), ("low", lo), ("close", c)):
        bad = ~(np.isfinite(arr) & (arr > 0))
        if bad.any():
            raise BarsError(f"bars column {name!r} must be finite and > 0; {int(bad.sum())} bad value(s), "
                            f"first at {bars.index[np.argmax(bad)]} ({arr[np.argmax(bad)]!r})")
    incons = (h < lo) | (h < np.maximum(o, c)) | (lo > np.minimum(o, c))
    if incons.any():
        i = int(np.argmax(incons))
        raise BarsError(f"inconsistent OHLC at {bars.index[i]}: open {o[i]}, high {h[i]}, low {lo[i]}, "
                        f"close {c[i]} ({int(incons.sum())} bar(s))")
    for name in BAR_COLUMNS[4:]:
        arr = bars[name].to_numpy()
        neg = arr < 0  # NaN compares False: missing stays allowed
        if neg.any() or np.isinf(arr).any():
            i = int(np.argmax(neg | np.isinf(arr)))
            raise BarsError(f"bars column {name!r} must be >= 0 and finite (or NaN when missing); "
                            f"got {arr[i]!r} at {bars.index[i]}")


def _num(value: Any) -> float:
    """Decimal/int/float -> float; None -> NaN (a NULL column in the database is missing input)."""
    if value is None:
        return np.nan
    if isinstance(value, bool):
        raise BarsError(f"bar value must be a number, got {value!r}")
    if isinstance(value, Decimal | int | float | np.floating | np.integer):
        return float(value)
    raise BarsError(f"bar value must be a number, got {value!r}")


def bars_from_records(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Build validated bars from row dicts (e.g. `Candle.objects.values(...)`).

    Each record needs `open_time` (a tz-aware datetime) and any of BAR_COLUMNS; absent keys and None
    are NaN, Decimal is converted to float, `trade_count` is accepted for `trades`, other keys (ids,
    instrument, timeframe) are ignored. Records may come in any order only if you sort them first:
    out-of-order input is rejected like any other corrupt input.
    """
    times: list[datetime] = []
    cols: dict[str, list[float]] = {c: [] for c in BAR_COLUMNS}
    for rec in records:
        t = rec.get("open_time")
        if not isinstance(t, datetime):
            raise BarsError(f"record open_time must be a datetime, got {t!r}")
        if t.tzinfo is None or t.utcoffset() is None:
            raise BarsError(f"record open_time must be tz-aware, got naive {t.isoformat()}")
        times.append(t)
        row = {_ALIASES.get(k, k): v for k, v in rec.items()}
        for c in BAR_COLUMNS:
            cols[c].append(_num(row.get(c)))
    index = pd.DatetimeIndex(pd.to_datetime(times, utc=True), name="open_time")
    return validate_bars(pd.DataFrame(cols, index=index, dtype=np.float64))
