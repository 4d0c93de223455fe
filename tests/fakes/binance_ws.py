"""Local stand-ins for exchange endpoints, fed with REAL recorded data (the network edge of the live feed tests).

ccxt's own code (URL building, subscription, message routing, parsing) runs unchanged; only the transport
ends at 127.0.0.1. Adapted from shared/docs/recipes/ccxt-offline.md (ccxt 4.5.90, websockets 17.4).

- `FakeBinanceWs`: a `websockets` server in its own thread and event loop speaking Binance's stream
  protocol: answers `{"method": "SUBSCRIBE"}` with `{"result": null, "id": ..}` and then sends each
  subscribed stream's prepared events. ONE sender merges all streams in event-time order across
  connections (ccxt puts USDT-M aggTrade and forceOrder on two sockets, and their relative order decides
  which bar a liquidation lands in); while a stream once subscribed has no connection (a drop), the
  whole replay waits, so the exchange's time stands still during a reconnect.
    * `speed=None`: events go out as fast as the socket takes them (a burst). The server cannot know
      how far the client has read, so such tests use a clock on the consumer side;
    * `speed=x`: events go out when the server's exchange clock (`clock_ms`: x times wall time from
      the first subscription) reaches their time.
  `drop_after=N` closes a socket (close frame, or TCP reset with `drop_mode="abort"`) after N events
  sent on it, once. The queues survive the drop, so the replay resumes where it stopped after the
  client re-subscribes; `resend_on_reconnect=K` additionally re-sends the last K events of each stream
  (a replay, as an exchange's snapshot or a proxy may do), which the consumer must drop as duplicates.
- `LocalHttp`: a stdlib HTTP server in a thread with a route table (path -> handler(query) -> (status,
  body)); used for Binance `exchangeInfo` / `aggTrades` and Kraken's public endpoints.
- Binance wire formats built from real rows: `trade_event`, `agg_trade_event`, `force_order_event`,
  `agg_trades_rest_row`, and minimal `exchangeInfo` bodies (typical recent filter values; fine for parsing).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlparse

from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

# ------------------------------------------------------------------ Binance wire formats


def trade_event(ts_ms: int, trade_id: int | str, price: str, qty: str, taker_side: str, wire_symbol: str) -> dict:
    """Spot `<symbol>@trade` payload. No event time in the recordings, so E = T. m = buyer is maker,
    i.e. the TAKER sold."""
    return {"e": "trade", "E": ts_ms, "s": wire_symbol, "t": int(trade_id), "p": price, "q": qty, "T": ts_ms,
            "m": taker_side == "sell", "M": True}


def agg_trade_event(ts_ms: int, agg_id: int, price: str, qty: str, buyer_maker: bool, wire_symbol: str,
                    event_ms: int | None = None) -> dict:
    """`<symbol>@aggTrade` payload (USDT-M). First/last trade ids are not in the recordings and not read
    by ccxt, so they are left out rather than invented."""
    return {"e": "aggTrade", "E": event_ms or ts_ms, "s": wire_symbol, "a": int(agg_id), "p": price, "q": qty,
            "T": ts_ms, "m": bool(buyer_maker)}


def force_order_event(row: list[str]) -> dict:
    """USDT-M `<symbol>@forceOrder` payload from a recorded row (recorder stripped "USDT"; E = T)."""
    t = int(row[10])
    return {"e": "forceOrder", "E": t, "o": {"s": row[0] + "USDT", "S": row[1], "o": row[2], "f": row[3],
                                            "q": row[4], "p": row[5], "ap": row[6], "X": row[7], "l": row[8],
                                            "z": row[9], "T": t}}


def agg_trades_rest_row(ts_ms: int, agg_id: int, price: str, qty: str, taker_side: str) -> dict:
    """One element of GET /api/v3/aggTrades (f/l = the one trade the row stands for)."""
    return {"a": int(agg_id), "p": price, "q": qty, "f": int(agg_id), "l": int(agg_id), "T": ts_ms,
            "m": taker_side == "sell", "M": True}


def event_time(ev: dict) -> int:
    return int(ev["o"]["T"]) if "o" in ev else int(ev["T"])


def _filters(tick: str, step: str) -> list[dict]:
    return [{"filterType": "PRICE_FILTER", "minPrice": tick, "maxPrice": "1000000", "tickSize": tick},
            {"filterType": "LOT_SIZE", "minQty": step, "maxQty": "9000", "stepSize": step}]


def spot_exchange_info(*pairs: tuple[str, str]) -> dict:
    """GET /api/v3/exchangeInfo with the given (base, quote) spot pairs."""
    return {"timezone": "UTC", "symbols": [
        {"symbol": b + q, "status": "TRADING", "baseAsset": b, "baseAssetPrecision": 8, "quoteAsset": q,
         "quotePrecision": 8, "quoteAssetPrecision": 8, "isSpotTradingAllowed": True,
         "isMarginTradingAllowed": True, "permissionSets": [["SPOT", "MARGIN"]],
         "filters": _filters("0.01000000", "0.00010000")} for b, q in pairs]}


def usdm_exchange_info(*bases: str) -> dict:
    """GET /fapi/v1/exchangeInfo with <base>USDT perpetuals."""
    return {"timezone": "UTC", "symbols": [
        {"symbol": b + "USDT", "pair": b + "USDT", "contractType": "PERPETUAL", "deliveryDate": 4133404800000,
         "status": "TRADING", "baseAsset": b, "quoteAsset": "USDT", "marginAsset": "USDT", "pricePrecision": 2,
         "quantityPrecision": 3, "baseAssetPrecision": 8, "quotePrecision": 8,
         "filters": _filters("0.10", "0.001")} for b in bases]}


# ------------------------------------------------------------------ websocket server


class ThreadedWsServer:
    """A `websockets` server on 127.0.0.1 in a thread and event loop of its own, for `with` blocks.

    Subclasses call `ThreadedWsServer.__init__(self)` and provide `_handler(conn)` and `_sender()` (the
    replay loop, woken through `self._wake`); the port is known once the `with` block is entered.
    """

    def __init__(self) -> None:
        self.port = 0
        self._wake: asyncio.Event | None = None
        self._tasks: set[asyncio.Task] = set()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def start() -> None:
            self._wake = asyncio.Event()
            self._server = await serve(self._handler, "127.0.0.1", 0)
            self.port = self._server.sockets[0].getsockname()[1]
            task = asyncio.ensure_future(self._sender())
            self._tasks.add(task)  # asyncio keeps only weak references to tasks

        self._loop.run_until_complete(start())
        self._ready.set()
        self._loop.run_forever()

    def __enter__(self) -> Self:
        self._thread.start()
        self._ready.wait(5)
        return self

    def __exit__(self, *exc) -> None:
        async def stop() -> None:
            for task in self._tasks:
                task.cancel()
            self._server.close()
            await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()


class FakeBinanceWs(ThreadedWsServer):
    """with FakeBinanceWs({"btcusdt@trade": [event, ...]}) as ws:
    ccxt.pro.binance({"urls": {"api": {"ws": ws.urls()}}})"""

    def __init__(self, streams: dict[str, list[dict]], *, speed: float | None = None,
                 resend_on_reconnect: int = 0) -> None:
        self.streams = {name: deque(events) for name, events in streams.items()}
        self.history: dict[str, list[dict]] = {name: [] for name in streams}
        self.speed = speed
        self.resend_on_reconnect = resend_on_reconnect
        self.received: list[tuple[str, dict]] = []  # (path, message) for every client message
        self.drop_after: int | None = None
        self.drop_mode = "close"
        self.drops = 0
        self.sent = 0
        self.open_connections = 0
        self.port = 0
        firsts = [event_time(q[0]) for q in self.streams.values() if q]
        self._first_t = min(firsts) - 1 if firsts else 0
        self._last_t: int | None = None
        self._t0_wall: float | None = None
        self._subs: dict[str, Any] = {}  # stream name -> the connection subscribed to it now
        self._ever: set[str] = set()  # streams ever subscribed: while one is down, the replay waits
        self._sent_on: dict[int, int] = {}  # id(connection) -> events sent on it
        ThreadedWsServer.__init__(self)

    def urls(self) -> dict[str, str]:
        base = f"ws://127.0.0.1:{self.port}"
        # keep "/stream" in the spot URL: ccxt maps "s":"BTCUSDT" to the spot market only when the client
        # url contains "/stream" (binance.is_spot_url). ccxt appends "/<n>"; linear becomes .../<category>/ws.
        return {"spot": f"{base}/stream/ws", "linear": f"{base}/linear/ws", "inverse": f"{base}/inverse/ws"}

    def clock_ms(self) -> int:
        """The fake exchange's time in ms: paced, x `speed` from the first subscription; in burst mode the
        newest event time sent (ahead of what the client has read)."""
        if self.speed is not None:
            if self._t0_wall is None:
                return self._first_t
            return int(self._first_t + (time.monotonic() - self._t0_wall) * self.speed * 1000)
        return self._last_t if self._last_t is not None else self._first_t

    def remaining(self) -> int:
        return sum(len(q) for q in self.streams.values())

    async def _handler(self, conn) -> None:
        self.open_connections += 1
        try:
            async for raw in conn:
                msg = json.loads(raw)
                self.received.append((conn.request.path, msg))
                if msg.get("method") != "SUBSCRIBE":
                    continue
                await conn.send(json.dumps({"result": None, "id": msg["id"]}))
                for name in msg["params"]:
                    queue = self.streams.setdefault(name, deque())
                    if name in self._ever and self.resend_on_reconnect:
                        queue.extendleft(reversed(self.history.get(name, [])[-self.resend_on_reconnect:]))
                    self._subs[name] = conn
                    self._ever.add(name)
                if self._t0_wall is None:
                    self._t0_wall = time.monotonic()
                self._wake.set()
        except ConnectionClosed:
            pass
        finally:
            for name in [n for n, c in self._subs.items() if c is conn]:
                del self._subs[name]
            self.open_connections -= 1

    async def _sender(self) -> None:
        """ONE sender for all connections, in event-time order across streams (trades and liquidations
        may sit on different sockets); it waits while any stream once subscribed has no connection."""
        while True:
            live = self._ever and all(n in self._subs for n in self._ever)
            ready = [(event_time(self.streams[n][0]), n) for n in self._subs if self.streams[n]] if live else []
            if not ready:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), 0.05)
                except TimeoutError:
                    pass
                continue
            t, name = min(ready)
            if self.speed is not None:
                delay = (t - self.clock_ms()) / self.speed / 1000
                if delay > 0:  # re-check after a short nap: a new subscription may have an earlier event
                    await asyncio.sleep(min(delay, 0.02))
                    continue
            conn = self._subs[name]
            if self.drop_after is not None and self._sent_on.get(id(conn), 0) >= self.drop_after:
                self.drop_after = None
                self.drops += 1
                await asyncio.sleep(0.1)  # let the client get back into a pending watch_*()
                if self.drop_mode == "abort":
                    conn.transport.abort()
                else:
                    await conn.close()
                for n in [n for n, c in self._subs.items() if c is conn]:
                    del self._subs[n]
                continue
            ev = self.streams[name][0]
            try:
                await conn.send(json.dumps(ev))
            except ConnectionClosed:
                self._subs.pop(name, None)
                continue
            self.streams[name].popleft()  # only after a successful send: nothing lost on a drop
            self.history.setdefault(name, []).append(ev)
            self._last_t = t if self._last_t is None else max(self._last_t, t)
            self._sent_on[id(conn)] = self._sent_on.get(id(conn), 0) + 1
            self.sent += 1
            if self.sent % 50 == 0:
                await asyncio.sleep(0)  # let the readers see subscriptions/closes during a burst


# ------------------------------------------------------------------ HTTP server

Route = Callable[[dict[str, str]], tuple[int, Any]]


class LocalHttp:
    """with LocalHttp({"/api/v3/exchangeInfo": lambda q: (200, body)}) as http: http.base -> "http://127.0.0.1:PORT"."""

    def __init__(self, routes: dict[str, Route]) -> None:
        self.routes = routes
        self.requests: list[str] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                fake.requests.append(self.path)
                url = urlparse(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                route = fake.routes.get(url.path)
                status, body = route(query) if route else (404, {"code": -1000, "msg": f"not faked: {url.path}"})
                data = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> LocalHttp:
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
