"""Test helpers for pure (Django-free) tests: find and load the real market data, build synthetic bars.

The real data lives OUTSIDE the repository (../shared/data, see its README.md) and is never copied in.
Tests locate it through $MARKET_DATA_DIR, else <repo>/../shared/data, and skip with a clear reason
when it is absent; in CI it is present.

Pure test modules also import `services_use_test_redis` and `_flush_redis` from here. They shadow the
autouse fixtures of tests/conftest.py, which start Redis and touch Django settings for every test; the
engine and market-model tests need neither, and must run with `pytest -p no:django`.
"""

import functools
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

BTC_90D = "klines/freqtrade/binance_spot_BTCUSDT_1m_2025-05-20_2025-08-18__filimonov.csv.gz"
BTC_2020_TAKER = "klines/binance_api_spot_BTCUSDT_1m_2020-01-01_2020-01-07.csv.gz"


def data_dir() -> Path:
    """$MARKET_DATA_DIR, else the shared data kit next to the repository."""
    env = os.environ.get("MARKET_DATA_DIR")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"


def require(relpath: str) -> Path:
    """Path of a data file, or skip the calling test saying which file is missing and where we looked."""
    path = data_dir() / relpath
    if not path.is_file():
        pytest.skip(f"real market data {relpath} not found under {data_dir()} "
                    "(set MARKET_DATA_DIR to the shared data kit)")
    return path


@functools.lru_cache(maxsize=4)
def _load_freqtrade(path: str) -> pd.DataFrame:
    df = pd.read_csv(path)
    df.index = pd.DatetimeIndex(pd.to_datetime(df.pop("date"), utc=True), name="open_time")
    return df.astype("float64")


def load_freqtrade_1m(relpath: str = BTC_90D) -> pd.DataFrame:
    """A freqtrade 1m download (date,open,high,low,close,volume) indexed by UTC open time.

    Cached per session (each test gets a copy), so several tests can share the 90-day file cheaply.
    """
    return _load_freqtrade(str(require(relpath))).copy()


def load_binance_api_klines(relpath: str = BTC_2020_TAKER) -> pd.DataFrame:
    """The 2020 python-binance klines with taker-buy volume (tb_base_av), indexed by UTC open time."""
    df = pd.read_csv(require(relpath))
    df.index = pd.DatetimeIndex(pd.to_datetime(df.pop("timestamp"), utc=True), name="open_time")
    return df


def synthetic_bars(closes: Sequence[float], volumes: Sequence[float] | float = 10.0,
                   start: str = "2025-01-01 00:00", times: Sequence[pd.Timestamp] | None = None,
                   wick: float = 0.0002) -> pd.DataFrame:
    """1-minute bars from a close path: open = previous close, high/low = max/min(open, close) +/- wick.

    `times` overrides the regular minute grid (to make gaps); volumes may be a scalar.
    """
    c = np.asarray(closes, dtype=float)
    o = np.concatenate(([c[0]], c[:-1]))
    hi = np.maximum(o, c) * (1 + wick)
    lo = np.minimum(o, c) * (1 - wick)
    v = np.broadcast_to(np.asarray(volumes, dtype=float), c.shape).copy()
    idx = (pd.DatetimeIndex(times) if times is not None
           else pd.date_range(start, periods=len(c), freq="1min", tz="UTC"))
    return pd.DataFrame({"open": o, "high": hi, "low": lo, "close": c, "volume": v},
                        index=pd.DatetimeIndex(idx, name="open_time"))


@pytest.fixture(scope="session")
def services_use_test_redis() -> Iterator[None]:
    """Shadows tests/conftest.py's autouse fixture: pure tests need no Redis and no Django settings."""
    yield None


@pytest.fixture
def _flush_redis() -> None:
    """Shadows tests/conftest.py's autouse per-test Redis flush (no Redis in pure tests)."""
    return None
