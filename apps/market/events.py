"""Typed browser payloads for market data and feed health."""

from typing import Literal, TypedDict

from apps.market.models import Candle, FeedStatus

FEEDS_GROUP = "feeds"


class Tick(TypedDict):
    type: Literal["market.tick"]
    instrument_id: int
    symbol: str
    price: float
    ts: str


class BarClosed(TypedDict):
    type: Literal["bar.closed"]
    instrument_id: int
    open_time: str
    open: float
    high: float
    low: float
    close: float
    volume: float


class FeedStatusEvent(TypedDict):
    type: Literal["feed.status"]
    instrument_id: int
    symbol: str
    state: str
    source: str
    last_price: float | None
    last_trade_at: str | None
    last_error: str
    next_retry_at: str | None
    rejected: dict[str, int]
    # Set on rows read for display (apps.market.selectors.feed_liveness_mark): the runner stopped beating, so the
    # state reads "down" and last_error says since when; seconds since the last trade (wall time), else None.
    heartbeat_lapsed: bool
    silent_s: int | None


def bar_payload(c: Candle) -> BarClosed:
    return BarClosed(
        type="bar.closed",
        instrument_id=c.instrument_id,
        open_time=c.open_time.isoformat(),
        open=float(c.open),
        high=float(c.high),
        low=float(c.low),
        close=float(c.close),
        volume=float(c.volume),
    )


def feed_payload(fs: FeedStatus) -> FeedStatusEvent:
    return FeedStatusEvent(
        type="feed.status",
        instrument_id=fs.instrument_id,
        symbol=fs.instrument.symbol,
        state=fs.state,
        source=fs.source,
        last_price=None if fs.last_price is None else float(fs.last_price),
        last_trade_at=fs.last_trade_at.isoformat() if fs.last_trade_at else None,
        last_error=fs.last_error,
        next_retry_at=fs.next_retry_at.isoformat() if fs.next_retry_at else None,
        rejected=fs.rejected,
        heartbeat_lapsed=getattr(fs, "heartbeat_lapsed", False),
        silent_s=getattr(fs, "silent_s", None),
    )
