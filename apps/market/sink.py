"""What a feed adapter (sim, replay, live) hands its data to: the runtime's pipeline, given to the feed by
whoever starts it (apps.runtime.tasks). Declared here so the adapters in apps.market depend on this shape
only, never on apps.runtime (which imports trading and ghosts): market data stays below the runtime.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol

from apps.market.bar_builder import BarBuilder, Liquidation, Trade
from apps.market.sanitize import Sanitiser


class FeedSink(Protocol):
    """The calls a feed makes (apps.runtime.pipeline.FeedPipeline implements them)."""

    builder: BarBuilder
    sanitiser: Sanitiser
    last_price: float | None
    last_ts: int
    bars_stored: int

    def consume(self, trades: Iterable[Trade], liqs: Iterable[Liquidation] = (), *, now_ms: int,
                evaluate: bool = True) -> None: ...

    def backfill(self, trades: Iterable[Trade], liqs: Iterable[Liquidation] = (), *, now_ms: int) -> int: ...

    def consume_bars(self, bars: Iterable[dict], *, now_ms: int, evaluate: bool = True) -> None: ...

    def finish_bars(self, *, evaluate: bool = True) -> None: ...

    def flush(self, now_ms: int, *, evaluate: bool = True) -> None: ...

    def refresh_positions(self) -> None: ...

    def counts(self) -> dict[str, int]: ...

    def publish(self, *, state: str = ..., force: bool = False, **status: Any) -> None: ...

    def set_preview(self, bars: Any) -> None: ...


# make_pipeline(has_liquidations=...) -> the sink for one instrument's stream
PipelineFactory = Callable[..., FeedSink]
