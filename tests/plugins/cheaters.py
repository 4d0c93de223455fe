"""Ghost modules that break the plug-in contract, one way each, for the guard tests: each is the example
plug-in (plugins/streak_fader.py) with one fault, written to a temporary folder as its own module."""

HEAD = '''
import dataclasses
from typing import ClassVar

import numpy as np
import pandas as pd

from apps.engine.plugins import GhostConfig, drafts_frame, idle_draft_arrays, validate_bars

KIND = "{kind}"
TITLE = "{kind} (test)"


@dataclasses.dataclass(frozen=True)
class Config(GhostConfig):
    KIND: ClassVar[str] = KIND
    lookback_min: int = 15

    @property
    def warmup_minutes(self) -> int:
        return self.lookback_min + 1


def _fade(bars, cfg):
    """A plain causal fader: LONG after a 0.3 % fall over lookback_min minutes, SHORT after a rise."""
    bars = validate_bars(bars)
    out = idle_draft_arrays(len(bars))
    close = bars["close"].to_numpy()
    k = cfg.lookback_min
    # the close lookback_min minutes of DATA time earlier (NaN across a gap): row counts would differ there
    back = bars["close"].reindex(bars.index - pd.Timedelta(minutes=k)).to_numpy()
    move = close / back - 1
    with np.errstate(invalid="ignore"):
        side = np.where(move <= -0.003, 1, np.where(move >= 0.003, -1, 0))
    rows = np.flatnonzero(side != 0)
    out["side"][rows] = side[rows]
    s = side[rows].astype(float)
    out["entry"][rows] = close[rows]
    out["stop"][rows] = close[rows] * (1 - s * 0.005)
    out["target"][rows] = close[rows] * (1 + s * 0.005)
    out["confidence"][rows] = 0.5
    out["size_mult"][rows] = 1.0
    out["priority"][rows] = 1
    for i in rows:
        out["reason"][i] = "fade"
    return bars, out
'''

HONEST = HEAD + '''

def evaluate(bars, cfg):
    bars, out = _fade(bars, cfg)
    return drafts_frame(bars.index, **out)
'''

# Looks ahead: keeps only the fades the NEXT bar's close proves right.
PEEKING = HEAD + '''

def evaluate(bars, cfg):
    bars, out = _fade(bars, cfg)
    close = bars["close"].to_numpy()
    nxt = np.append(close[1:], np.nan)
    wrong = ((out["side"] == 1) & ~(nxt > close)) | ((out["side"] == -1) & ~(nxt < close))
    out["side"][wrong] = 0
    return drafts_frame(bars.index, **out)
'''

MUTATING = HEAD + '''

def evaluate(bars, cfg):
    bars["volume"] = bars["volume"] * 2.0  # writes into the frame it was handed
    _, out = _fade(bars, cfg)
    return drafts_frame(bars.index, **out)
'''

RAISING = HEAD + '''

def evaluate(bars, cfg):
    raise RuntimeError("the plug-in's own bug")
'''

NAN_FRAGILE = HEAD + '''

def evaluate(bars, cfg):
    bars, out = _fade(bars, cfg)
    if bars["taker_buy_volume"].isna().any():
        raise ValueError("cannot convert float NaN to integer")  # as int(nan) would
    return drafts_frame(bars.index, **out)
'''

BAD_LEVELS = HEAD + '''

def evaluate(bars, cfg):
    bars, out = _fade(bars, cfg)
    out["stop"], out["target"] = out["target"].copy(), out["stop"].copy()  # stop on the profit side
    return drafts_frame(bars.index, **out)
'''

# Depends on where the series starts: an exponential average with infinite memory, warm-up 16 minutes.
START_DEPENDENT = HEAD + '''

def evaluate(bars, cfg):
    bars, out = _fade(bars, cfg)
    ema = bars["close"].ewm(span=200, adjust=False).mean().to_numpy()
    close = bars["close"].to_numpy()
    out["side"][:] = 0
    with np.errstate(invalid="ignore"):
        out["side"][close < ema * 0.997] = 1
    rows = np.flatnonzero(out["side"] != 0)
    out["entry"][rows] = close[rows]
    out["stop"][rows] = close[rows] * 0.995
    out["target"][rows] = close[rows] * 1.005
    out["confidence"][rows] = 0.5
    out["size_mult"][rows] = 1.0
    out["priority"][rows] = 1
    return drafts_frame(bars.index, **out)
'''

# Counts rows instead of minutes: across a feed gap the live window (16 minutes of data time) holds fewer rows.
ROW_COUNTING = HEAD + '''

def evaluate(bars, cfg):
    bars, out = _fade(bars, cfg)
    close = bars["close"].to_numpy()
    k = cfg.lookback_min
    move = np.full(len(close), np.nan)
    move[k:] = close[k:] / close[:-k] - 1 if len(close) > k else move[k:]
    out["side"][:] = 0
    with np.errstate(invalid="ignore"):
        out["side"][move <= -0.003] = 1
        out["side"][move >= 0.003] = -1
    rows = np.flatnonzero(out["side"] != 0)
    s = out["side"][rows].astype(float)
    out["entry"][rows] = close[rows]
    out["stop"][rows] = close[rows] * (1 - s * 0.005)
    out["target"][rows] = close[rows] * (1 + s * 0.005)
    out["confidence"][rows] = 0.5
    out["size_mult"][rows] = 1.0
    out["priority"][rows] = 1
    return drafts_frame(bars.index, **out)
'''

NOT_FROZEN = HONEST.replace("@dataclasses.dataclass(frozen=True)", "@dataclasses.dataclass")

BROKEN_IMPORT = "import a_module_that_does_not_exist\n"

# Passes at load; at run time raises (FAIL) or returns a stop on the wrong side (BAD), switched by the test.
SWITCHED = HEAD + '''
FAIL = False
BAD = False


def evaluate(bars, cfg):
    if FAIL:
        raise ZeroDivisionError("plug-in blew up at run time")
    bars, out = _fade(bars, cfg)
    if BAD:
        out["stop"], out["target"] = out["target"].copy(), out["stop"].copy()
    return drafts_frame(bars.index, **out)
'''


def write(folder, kind: str, source: str):
    path = folder / f"{kind}.py"
    path.write_text(source.replace("{kind}", kind))
    return path
