"""The live feed (HFT_FEED=live): public trades (and liquidations) from a real exchange through ccxt.

Threads, and why: ccxt.pro is asyncio; the FeedPipeline's ORM calls (candle_store, feed_status_update,
stop checks) are sync. The network side runs in its OWN thread with its own event loop and only hands
ready-made batches (`Trade` / `Liquidation` lists, stream-state changes) to a `queue.Queue`. The calling
thread (the Celery task) keeps all database work, the heartbeat, the bar flush clock and status
publishing. So a slow database write never stalls the socket reader (the queue buffers), a stalled
socket never delays the heartbeat or the flush of a quiet minute, and no ORM call ever runs on an event
loop (no sync_to_async thread hopping per trade).

Transports:
- websocket (ccxt.pro `watch_trades`, plus `watch_liquidations` for derivatives where the exchange has
  it: then `has_liquidations=True` and quiet minutes carry liquidation volume 0.0, else NaN);
- REST polling (`fetch_trades` with `since`) where ccxt has no websocket for the exchange, or when
  `transport="rest"`. Overlap at the `since` boundary is removed here (same ts and id), so the
  sanitiser's `duplicate_id` count only shows real replays.

Failures (state shown on the dashboard with `last_error` and `next_retry_at`):
- `ccxt.NetworkError` (RequestTimeout, ExchangeNotAvailable, DDoSProtection, a closed socket), and an
  async truncated body (`ExchangeError` caused by aiohttp's ClientPayloadError): RECONNECTING, retry
  after an exponential backoff with jitter (base 0.5 s, doubling, cap 60 s; the delay is uniform in
  [d/2, d]). The next `watch_*` call opens a new socket and re-subscribes (ccxt.pro does that itself).
- any other `ccxt.ExchangeError` (BadSymbol for a symbol the exchange does not list, bad request...):
  ERROR with the message, retried on a slow backoff (base 30 s, cap 10 min) while the runner keeps its
  lock: a listing can appear, and the supervisor would otherwise restart a failing runner every beat.
- anything else is a bug: it ends `run()` with the exception (the task shows ERROR, beat restarts it).
- LAGGING: connected, but the last trade is older than `lag_seconds` on the exchange clock.

Bars close when the exchange-aligned clock is past the minute's end plus the BarBuilder's grace (2 s of
data time, during which a trade stamped inside the minute still amends it) plus `FLUSH_DELAY_MS` (0.5 s
for the exchange -> us latency): about 2.5 s after the minute, whether or not a later trade came (a quiet
market still closes its bars). Polling REST adds the poll interval and a round trip to that delay.

Known limits: trades made while the socket is down are not replayed by Binance's streams, so the bar of
that minute misses them (a REST backfill is not done: Binance spot REST `aggTrades` ids are not the
`@trade` ids, so the duplicate check could not dedupe the overlap). The first bar after a (re)start
holds only what was seen since connecting; `candle_store` never overwrites an existing bar with it.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from apps.market.bar_builder import Liquidation
from apps.market.exchanges import (
    exchange_build,
    liquidation_from_ccxt,
    streams_liquidations,
    streams_trades,
    trade_from_ccxt,
)
from apps.market.models import FeedStatus, Instrument
from apps.market.sink import PipelineFactory

log = logging.getLogger(__name__)
State = FeedStatus.State

FLUSH_DELAY_MS = 500  # on top of the BarBuilder's grace: transport latency allowance
REST_ROUND_TRIP_MS = 1_000  # REST transport: a trade can reach us a poll interval plus a round trip late
LAG_SECONDS = 30.0
HEARTBEAT_SECONDS = 1.0
QUEUE_WAIT = 0.1  # seconds the main loop waits for data before flushing/publishing anyway
POLL_SECONDS = 2.0  # REST transport: pause between polls when the last page was not full
POLL_LIMIT = 1000
NETWORK_BACKOFF = (0.5, 60.0)  # (base, cap) seconds
EXCHANGE_BACKOFF = (30.0, 600.0)
LIQ_MEMORY = 2_000  # recent liquidation keys kept for de-duplication
_SEVERITY = {State.CONNECTED: 0, State.STARTING: 1, State.RECONNECTING: 2, State.ERROR: 3}


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Seconds to wait before retry number `attempt` (0-based): min(cap, base * 2**attempt) with jitter,
    uniform in [d/2, d], so many feeds dropped together do not all reconnect in the same instant."""
    d = min(cap, base * (2 ** min(attempt, 30)))
    return d / 2 + (rng or random).uniform(0, d / 2)


def _is_network_error(exc: BaseException) -> bool:
    import ccxt

    if isinstance(exc, ccxt.NetworkError):
        return True
    try:  # async ccxt maps a truncated HTTP body to a plain ExchangeError (see the ccxt-offline recipe)
        import aiohttp

        return isinstance(exc, ccxt.ExchangeError) and isinstance(exc.__cause__, aiohttp.ClientPayloadError)
    except ImportError:  # pragma: no cover - aiohttp ships with ccxt
        return False


class LiveFeed:
    """Runs one instrument's live ccxt feed until `heartbeat()` is False or `max_seconds` elapse.

    `exchange_config` is deep-merged into the ccxt constructor config (tests point `urls` at 127.0.0.1);
    `clock_ms` is the exchange-aligned clock in ms (default: local UTC clock corrected once by the
    exchange's `fetch_time` where it has one); `transport` is "auto" (websocket when ccxt.pro has it),
    "ws" or "rest". `transitions` records every published (state, last_error, next_retry_at) change.
    """

    def __init__(
        self,
        instrument: Instrument,
        *,
        make_pipeline: PipelineFactory,
        heartbeat: Callable[[], bool],
        max_seconds: float | None = None,
        exchange_config: dict | None = None,
        clock_ms: Callable[[], int] | None = None,
        transport: str = "auto",
        lag_seconds: float = LAG_SECONDS,
        poll_seconds: float = POLL_SECONDS,
        network_backoff: tuple[float, float] = NETWORK_BACKOFF,
        exchange_backoff: tuple[float, float] = EXCHANGE_BACKOFF,
    ) -> None:
        if transport not in ("auto", "ws", "rest"):
            raise ValueError(f"transport must be auto, ws or rest, got {transport!r}")
        self.instrument = instrument
        self.code = instrument.exchange.code
        self.symbol = instrument.symbol
        self.heartbeat = heartbeat
        self.max_seconds = max_seconds
        self.exchange_config = exchange_config or {}
        self._clock = clock_ms
        self._clock_offset_ms = 0
        self.lag_ms = int(lag_seconds * 1000)
        self.poll_seconds = poll_seconds
        self.network_backoff = network_backoff
        self.exchange_backoff = exchange_backoff
        # Built here only to read `has` (class data, no network); the network thread builds its own.
        probe = exchange_build(self.code, symbol=self.symbol, websocket=transport != "rest")
        self.websocket = streams_trades(probe) if transport != "rest" else False
        if transport == "ws" and not self.websocket:
            raise ValueError(f"{self.code} has no websocket trade stream in ccxt.pro")
        self.has_liquidations = self.websocket and streams_liquidations(probe, self.symbol)
        self.pipeline = make_pipeline(has_liquidations=self.has_liquidations)
        self.transitions: list[tuple[str, str, datetime | None]] = []
        self.trades_received = 0  # consumed by the pipeline (main thread)
        self.trades_handed = 0  # handed over by the network thread
        self.newest_received_ms = 0  # data time of the newest trade/liquidation handed over (diagnostics)
        self.first_batch_at: float | None = None  # monotonic time of the first batch, for throughput
        self.last_batch_done_at: float | None = None
        self._queue: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._streams: dict[str, tuple[str, datetime | None]] = {}  # stream -> (state, next retry)
        self._last_error = ""  # kept after a recovery: the dashboard shows the last error seen
        self._connected_at_ms: int | None = None
        self._liq_seen: set[tuple] = set()
        self._liq_order: deque[tuple] = deque()

    # -- clock ---------------------------------------------------------------------------------------
    def clock_ms(self) -> int:
        """Exchange-aligned time in ms since the epoch (UTC)."""
        if self._clock is not None:
            return int(self._clock())
        return int(time.time() * 1000) + self._clock_offset_ms

    # -- main (ORM) thread ---------------------------------------------------------------------------
    def run(self) -> None:
        """Block until the heartbeat fails or `max_seconds` pass; the exchange is closed on the way out."""
        net = threading.Thread(target=self._net_main, name=f"feed-{self.code}-{self.symbol}", daemon=True)
        started = time.monotonic()
        next_beat = started
        published: tuple | None = None
        flush_delay = FLUSH_DELAY_MS
        if not self.websocket:
            flush_delay += int(self.poll_seconds * 1000) + REST_ROUND_TRIP_MS
        net.start()
        try:
            self.pipeline.publish(state=State.STARTING, force=True, last_error="", next_retry_at=None)
            while True:
                now = time.monotonic()
                if self.max_seconds is not None and now - started > self.max_seconds:
                    break
                if now >= next_beat:
                    if not self.heartbeat():
                        log.info("%s %s: heartbeat lost, stopping", self.code, self.symbol)
                        break
                    next_beat = now + HEARTBEAT_SECONDS
                seen_at = self._drain()
                self.pipeline.flush(seen_at - flush_delay)
                self.pipeline.refresh_positions()
                state, error, retry_at = self._state()
                changed = (state, error, retry_at) != published
                if changed:
                    self.transitions.append((state, error, retry_at))
                    published = (state, error, retry_at)
                self.pipeline.publish(state=state, force=changed, last_error=error, next_retry_at=retry_at)
        finally:
            self._stop.set()
            net.join(timeout=15)
            if net.is_alive():
                log.warning("%s %s: network thread did not stop within 15 s", self.code, self.symbol)

    def _drain(self) -> int:
        """Consume everything queued, in arrival order. Returns the clock read BEFORE looking at the queue:
        every item the network thread had handed over by then is consumed here, so flushing up to that
        time can never close a bar ahead of trades already received."""
        now = self.clock_ms()
        try:
            items = [self._queue.get(timeout=QUEUE_WAIT)]
        except queue.Empty:
            return now
        while True:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                break
        for kind, payload in items:
            if kind == "trades":
                if self.first_batch_at is None:
                    self.first_batch_at = time.monotonic()
                self.pipeline.consume(payload, (), now_ms=self.clock_ms())
                self.trades_received += len(payload)
                self.last_batch_done_at = time.monotonic()
            elif kind == "liqs":
                self.pipeline.consume((), self._new_liquidations(payload), now_ms=self.clock_ms())
            elif kind == "state":
                stream, state, error, retry_at = payload
                self._streams[stream] = (state, retry_at)
                self._last_error = error or self._last_error
                if state == State.CONNECTED and self._connected_at_ms is None:
                    self._connected_at_ms = self.clock_ms()
            elif kind == "fatal":
                raise payload
        return now

    def _new_liquidations(self, liqs: list[Liquidation]) -> list[Liquidation]:
        """Drop exact repeats (same ms, side, price, size): liquidation events carry no id, and a
        re-subscribed snapshot stream (Binance forceOrder) can repeat the latest event. Counted in the
        sanitiser's per-reason counts as `duplicate_liquidation` so the dashboard shows them."""
        fresh = []
        for liq in liqs:
            key = (liq.ts_ms, liq.side, liq.price, liq.amount)
            if key in self._liq_seen:
                counts = self.pipeline.sanitiser.counts
                counts["duplicate_liquidation"] = counts.get("duplicate_liquidation", 0) + 1
                continue
            if len(self._liq_order) >= LIQ_MEMORY:
                self._liq_seen.discard(self._liq_order.popleft())
            self._liq_order.append(key)
            self._liq_seen.add(key)
            fresh.append(liq)
        return fresh

    def _state(self) -> tuple[str, str, datetime | None]:
        """The worst stream state; CONNECTED becomes LAGGING when the last trade is too old."""
        if not self._streams:
            return State.STARTING, self._last_error, None
        state, retry_at = max(self._streams.values(), key=lambda s: _SEVERITY.get(s[0], 1))
        if state == State.CONNECTED:
            ref = self.pipeline.last_ts or self._connected_at_ms or self.clock_ms()
            if self.clock_ms() - ref > self.lag_ms:
                state = State.LAGGING
        return state, self._last_error, retry_at

    # -- network thread (asyncio) --------------------------------------------------------------------
    def _emit(self, kind: str, payload: Any) -> None:
        self._queue.put((kind, payload))
        if kind in ("trades", "liqs") and payload:  # after the put: see `_drain`
            self.newest_received_ms = max(self.newest_received_ms, max(x.ts_ms for x in payload))
            if kind == "trades":
                self.trades_handed += len(payload)

    def _net_main(self) -> None:
        try:
            asyncio.run(self._net())
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread, which re-raises it
            self._emit("fatal", exc)

    async def _net(self) -> None:
        ex = exchange_build(self.code, symbol=self.symbol, websocket=self.websocket, config=self.exchange_config)
        try:
            if self._clock is None:
                await self._sync_clock(ex)
            jobs = [self._watch("trades", ex) if self.websocket else self._poll(ex)]
            if self.has_liquidations:
                jobs.append(self._watch("liquidations", ex))
            tasks = [asyncio.ensure_future(j) for j in jobs]
            while not self._stop.is_set():
                done, _ = await asyncio.wait(tasks, timeout=0.1, return_when=asyncio.FIRST_EXCEPTION)
                for t in done:
                    if t.exception() is not None:
                        raise t.exception()
                if len(done) == len(tasks):
                    break
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            await ex.close()

    async def _sync_clock(self, ex) -> None:
        """Offset of the exchange clock from ours, once (best effort: a failure keeps offset 0)."""
        if not ex.has.get("fetchTime"):
            return
        try:
            t0 = time.time()
            server = await asyncio.wait_for(ex.fetch_time(), 5)
            self._clock_offset_ms = int(server - (t0 + time.time()) * 500)
        except Exception as exc:  # noqa: BLE001 - a clock offset is an optimisation, not a requirement
            log.info("%s: fetch_time failed (%s); using the local clock", self.code, exc)

    def _failure(self, stream: str, exc: BaseException, attempt: int, rng: random.Random) -> float:
        """Report a failed call as RECONNECTING (network) or ERROR (exchange); returns the retry delay."""
        network = _is_network_error(exc)
        base, cap = self.network_backoff if network else self.exchange_backoff
        delay = backoff_delay(attempt, base, cap, rng)
        retry_at = datetime.fromtimestamp(time.time() + delay, tz=UTC)
        message = f"{stream}: {type(exc).__name__}: {exc}"[:2000]
        state = State.RECONNECTING if network else State.ERROR
        log.warning("%s %s %s; retry in %.1f s", self.code, self.symbol, message, delay)
        self._emit("state", (stream, state, message, retry_at))
        return delay

    async def _watch(self, stream: str, ex) -> None:
        """One websocket subscription, forever: each call returns what arrived since the previous one."""
        import ccxt

        rng = random.Random()
        attempt = 0
        ok = False
        while not self._stop.is_set():
            try:
                if stream == "trades":
                    raw = await ex.watch_trades(self.symbol)
                else:
                    raw = await ex.watch_liquidations(self.symbol)
            except asyncio.CancelledError:
                raise
            except ccxt.BaseError as exc:
                ok = False
                await asyncio.sleep(self._failure(stream, exc, attempt, rng))
                attempt += 1
                continue
            if not ok:
                self._emit("state", (stream, State.CONNECTED, "", None))
                ok, attempt = True, 0
            market = ex.markets.get(self.symbol) if ex.markets else None
            if stream == "trades":
                self._emit("trades", [trade_from_ccxt(t, market) for t in raw])
            else:
                mine = [x for x in self._unseen_liquidations(ex, raw) if x.get("symbol") == self.symbol]
                self._emit("liqs", [liquidation_from_ccxt(x, market, self.code) for x in mine])

    @staticmethod
    def _unseen_liquidations(ex, returned: list[dict]) -> list[dict]:
        """Every liquidation ccxt has received that we have not handed on yet, oldest first.

        ccxt.pro 4.5.90 binance `watch_liquidations` (newUpdates) returns only the ONE message that resolved
        the call; others arriving before the next call are kept in ccxt's `ex.liquidations` cache but never
        returned. So read that cache from its end back to the first entry we marked as handed on (entries
        are dicts we own once parsed). Exchanges without such a list cache: what the call returned."""
        cache = getattr(ex, "liquidations", None)
        if not isinstance(cache, list | deque) or not cache:
            return [x for x in returned if not x.get("_hft_seen")]
        fresh = []
        for x in reversed(cache):
            if x.get("_hft_seen"):
                break
            fresh.append(x)
        for x in fresh:
            x["_hft_seen"] = True
        return fresh[::-1]

    async def _poll(self, ex) -> None:
        """REST transport: `fetch_trades(since=last seen ts)` pages; the boundary overlap is dropped here."""
        import ccxt

        rng = random.Random()
        attempt = 0
        ok = False
        since: int | None = None
        ids_at_since: set[str] = set()
        while not self._stop.is_set():
            try:
                raw = await ex.fetch_trades(self.symbol, since=since, limit=POLL_LIMIT)
            except asyncio.CancelledError:
                raise
            except ccxt.BaseError as exc:
                ok = False
                await asyncio.sleep(self._failure("trades", exc, attempt, rng))
                attempt += 1
                continue
            if not ok:
                self._emit("state", ("trades", State.CONNECTED, "", None))
                ok, attempt = True, 0
            market = ex.markets.get(self.symbol) if ex.markets else None
            raw = sorted(raw, key=lambda t: (t.get("timestamp") or 0))
            if since is None:
                # The first page is recent history: trades of minutes whose bar is already due would only
                # count as late; keep those the bar builder still takes (a partial first bar, as after any
                # (re)start).
                due = self.clock_ms() - 60_000 - getattr(self.pipeline.builder, "grace_ms", 0)
                fresh = [t for t in raw if (t.get("timestamp") or 0) // 60_000 * 60_000 > due]
            else:
                fresh = [
                    t for t in raw
                    if (t.get("timestamp") or 0) > since
                    or ((t.get("timestamp") or 0) == since and str(t.get("id")) not in ids_at_since)
                ]
            if raw:
                if fresh:
                    self._emit("trades", [trade_from_ccxt(t, market) for t in fresh])
                since = max(since or 0, max(t.get("timestamp") or 0 for t in raw))
                ids_at_since = {str(t.get("id")) for t in raw if (t.get("timestamp") or 0) == since}
            elif since is not None and self.clock_ms() - since > 3_600_000:
                # Binance answers `since` with a one-hour window: after a long outage jump to the present
                # rather than crawl empty hours (the gap stays a gap, as it would on a websocket).
                log.warning("%s %s: no trades for over an hour after %s; resuming from now", self.code, self.symbol,
                            since)
                since, ids_at_since = None, set()
            if len(raw) < POLL_LIMIT:
                await self._sleep(self.poll_seconds)

    async def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self._stop.is_set() and time.monotonic() < end:
            await asyncio.sleep(min(0.1, end - time.monotonic()))
