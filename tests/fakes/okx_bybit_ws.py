"""Local stand-ins for OKX v5 and Bybit v5 public endpoints (the network edge of the OKX/Bybit live feed tests).

ccxt 4.5.90's own code (URL building, subscription, routing in `handle_message`, `handle_trades`,
`handle_liquidation`, reconnect) runs unchanged; only the transport ends at 127.0.0.1. The message shapes
follow what ccxt/pro/okx.py and ccxt/pro/bybit.py parse (and the exchanges' v5 docs):

- OKX: client `{"op":"subscribe","args":[{"channel":"trades","instId":"BTC-USDT"}]}` -> server
  `{"event":"subscribe","arg":{...},"connId":..}` per arg, then `{"arg":{...},"data":[{instId, tradeId, px,
  sz, side, ts}]}`; liquidations: arg `{"channel":"liquidation-orders","instType":"SWAP"}`, data
  `[{"details":[{bkPx, posSide, side, sz, ts, bkLoss, ccy}], instId, instFamily, instType, uly}]`.
  ccxt's keep-alive is the TEXT frame "ping", answered with "pong".
- Bybit: client `{"op":"subscribe","req_id":n,"args":["publicTrade.BTCUSDT"]}` on /v5/public/<category> ->
  `{"success":true,"ret_msg":"","conn_id":..,"req_id":n,"op":"subscribe"}`, then `{"topic":"publicTrade.BTCUSDT",
  "type":"snapshot","ts":..,"data":[{T, s, S, v, p, L, i, BT}]}`; `allLiquidation.BTCUSDT` data `[{T, s, S, v, p}]`
  where S is the liquidated POSITION's side. Keep-alive `{"op":"ping","req_id":..}` -> `{"success":true,
  "ret_msg":"pong","op":"ping",..}`.
- Markets come over REST from `tests.fakes.binance_ws.LocalHttp` with the bodies built here:
  OKX `GET /api/v5/public/instruments?instType=...`, Bybit `GET /v5/market/instruments-info?category=...`.
  Instrument values (ctVal 0.01 BTC for BTC-USDT-SWAP, tick and lot sizes) are the exchanges' documented
  ones; they only matter for parsing and the contract -> base conversion.

`FakeVenueWs(venue, streams)`: `streams` maps a stream key (OKX `"<channel>:<instId or instType>"`, Bybit the
topic) to a list of `(data_time_ms, message)`. ONE sender sends all streams merged in data-time order; it
starts only when every stream with messages has been subscribed (so a second `watch_*` that subscribes a few
ms later misses nothing), and waits while any of them has no connection (a drop), so the exchange's time
stands still during a reconnect. `speed=None` is a burst; `speed=x` sends a message when the fake exchange
clock (x times wall time from the start) reaches its time. `drop_after=N` closes a socket after N messages
sent on it, once; the replay then resumes where it stopped (a real exchange would not re-send the gap).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from typing import Any

from websockets.exceptions import ConnectionClosed

from tests.fakes.binance_ws import ThreadedWsServer

Event = tuple[int, dict]

# ------------------------------------------------------------------ OKX wire formats


def okx_trades_message(inst_id: str, rows: list[dict]) -> dict:
    """One `trades` push; rows: {"id", "ts_ms", "price", "size", "side"} as strings/ints, size in the
    instrument's unit (base for spot, contracts for swaps), side = the taker's."""
    return {"arg": {"channel": "trades", "instId": inst_id},
            "data": [{"instId": inst_id, "tradeId": str(r["id"]), "px": r["price"], "sz": r["size"],
                      "side": r["side"], "ts": str(r["ts_ms"]), "count": "1"} for r in rows]}


def okx_liquidation_message(inst_id: str, ts_ms: int, order_side: str, bk_px: str, contracts: str) -> dict:
    """One `liquidation-orders` push. `order_side` is the forced ORDER's side (a sell closes a long);
    posSide is the position it closes."""
    uly = inst_id.removesuffix("-SWAP")
    return {"arg": {"channel": "liquidation-orders", "instType": "SWAP"},
            "data": [{"details": [{"bkLoss": "0", "bkPx": bk_px, "ccy": "", "posSide":
                                   "long" if order_side == "sell" else "short", "side": order_side,
                                   "sz": contracts, "ts": str(ts_ms)}],
                      "instFamily": uly, "instId": inst_id, "instType": "SWAP", "uly": uly}]}


def okx_instruments(inst_type: str, *inst_ids: str) -> dict:
    """GET /api/v5/public/instruments body for SPOT "ETH-USDT"-style or SWAP "BTC-USDT-SWAP" ids (linear,
    ctVal 0.01 base per contract, OKX's value for BTC-USDT-SWAP)."""
    data = []
    for inst_id in inst_ids:
        base, quote = inst_id.split("-")[:2]
        row = {"alias": "", "baseCcy": "", "category": "1", "ctMult": "", "ctType": "", "ctVal": "",
               "ctValCcy": "", "expTime": "", "instFamily": "", "instId": inst_id, "instType": inst_type,
               "lever": "10", "listTime": "1548133413000", "lotSz": "0.00000001", "maxMktSz": "1000000",
               "minSz": "0.00001", "optType": "", "quoteCcy": "", "settleCcy": "", "state": "live", "stk": "",
               "tickSz": "0.01", "uly": ""}
        if inst_type == "SPOT":
            row.update(baseCcy=base, quoteCcy=quote)
        else:
            row.update(ctMult="1", ctType="linear", ctVal="0.01", ctValCcy=base, instFamily=f"{base}-{quote}",
                       settleCcy=quote, uly=f"{base}-{quote}", lotSz="0.01", minSz="0.01", tickSz="0.1",
                       lever="100")
        data.append(row)
    return {"code": "0", "msg": "", "data": data}


# ------------------------------------------------------------------ Bybit wire formats


def bybit_trades_message(topic_symbol: str, rows: list[dict], linear: bool) -> dict:
    """One `publicTrade.<symbol>` snapshot; rows as for OKX (size in base units: Bybit linear USDT
    contracts are 1 base unit). `BT` (block trade) exists only on derivatives' messages."""
    data = []
    for r in rows:
        item = {"T": int(r["ts_ms"]), "s": topic_symbol, "S": "Buy" if r["side"] == "buy" else "Sell",
                "v": r["size"], "p": r["price"], "L": "ZeroPlusTick", "i": str(r["id"])}
        if linear:
            item["BT"] = False
        data.append(item)
    return {"topic": f"publicTrade.{topic_symbol}", "type": "snapshot", "ts": max(int(r["ts_ms"]) for r in rows),
            "data": data}


def bybit_liquidation_message(topic_symbol: str, ts_ms: int, position_side: str, price: str, size: str) -> dict:
    """One `allLiquidation.<symbol>` snapshot. `position_side` "long"/"short" is the LIQUIDATED position:
    Bybit sends S="Buy" for a long liquidated (its documented convention, the opposite of Binance's
    forced-order side)."""
    return {"topic": f"allLiquidation.{topic_symbol}", "type": "snapshot", "ts": ts_ms,
            "data": [{"T": ts_ms, "s": topic_symbol, "S": "Buy" if position_side == "long" else "Sell",
                      "v": size, "p": price}]}


def bybit_instruments(category: str, *pairs: tuple[str, str]) -> dict:
    """GET /v5/market/instruments-info body: spot or linear perpetual (base, quote) pairs; other categories
    get an empty list."""
    rows = []
    for base, quote in pairs:
        if category == "spot":
            rows.append({"symbol": base + quote, "baseCoin": base, "quoteCoin": quote, "innovation": "0",
                         "status": "Trading", "marginTrading": "both",
                         "lotSizeFilter": {"basePrecision": "0.000001", "quotePrecision": "0.00000001",
                                           "minOrderQty": "0.000048", "maxOrderQty": "71.73956243",
                                           "minOrderAmt": "1", "maxOrderAmt": "2000000"},
                         "priceFilter": {"tickSize": "0.01"}})
        elif category == "linear":
            rows.append({"symbol": base + quote, "contractType": "LinearPerpetual", "status": "Trading",
                         "baseCoin": base, "quoteCoin": quote, "launchTime": "1585526400000", "deliveryTime": "0",
                         "deliveryFeeRate": "", "priceScale": "2",
                         "leverageFilter": {"minLeverage": "1", "maxLeverage": "100.00", "leverageStep": "0.01"},
                         "priceFilter": {"minPrice": "0.10", "maxPrice": "1999999.80", "tickSize": "0.10"},
                         "lotSizeFilter": {"maxOrderQty": "1190.000", "minOrderQty": "0.001", "qtyStep": "0.001",
                                           "postOnlyMaxOrderQty": "1190.000", "minNotionalValue": "5"},
                         "unifiedMarginTrade": True, "fundingInterval": 480, "settleCoin": quote})
    body = {"category": category, "list": rows, "nextPageCursor": ""}
    return {"retCode": 0, "retMsg": "OK", "result": body, "retExtInfo": {}, "time": 1672712495660}


# ------------------------------------------------------------------ websocket server


class FakeVenueWs(ThreadedWsServer):
    """with FakeVenueWs("okx", {"trades:ETH-USDT": [(t, msg), ...]}) as ws: ws.base -> "ws://127.0.0.1:PORT"."""

    def __init__(self, venue: str, streams: dict[str, list[Event]], *, speed: float | None = None) -> None:
        if venue not in ("okx", "bybit"):
            raise ValueError(venue)
        self.venue = venue
        self.streams = {k: deque(v) for k, v in streams.items()}
        self.speed = speed
        self.received: list[tuple[str, Any]] = []  # (path, message) for every client frame, pings included
        self.drop_after: int | None = None
        self.drops = 0
        self.sent = 0
        self.open_connections = 0
        self.port = 0
        firsts = [q[0][0] for q in self.streams.values() if q]
        self._first_t = min(firsts) - 1 if firsts else 0
        self._t0_wall: float | None = None
        self._needed = {k for k, q in self.streams.items() if q}
        self._subs: dict[str, Any] = {}  # stream key -> the connection subscribed to it now
        self._sent_on: dict[int, int] = {}
        ThreadedWsServer.__init__(self)

    @property
    def base(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def clock_ms(self) -> int:
        if self.speed is None or self._t0_wall is None:
            return self._first_t
        return int(self._first_t + (time.monotonic() - self._t0_wall) * self.speed * 1000)

    def remaining(self) -> int:
        return sum(len(q) for q in self.streams.values())

    def _subscribe(self, msg: dict) -> tuple[list[str], list[dict]]:
        """Stream keys and acknowledgements for one subscribe request, in the venue's format."""
        if self.venue == "okx":
            keys = [f"{a['channel']}:{a.get('instId') or a.get('instType')}" for a in msg.get("args", [])]
            acks = [{"event": "subscribe", "arg": a, "connId": "fake0001"} for a in msg.get("args", [])]
            return keys, acks
        ack = {"success": True, "ret_msg": "", "conn_id": "fake-conn-0001", "op": "subscribe"}
        if "req_id" in msg:
            ack["req_id"] = str(msg["req_id"])
        return list(msg.get("args", [])), [ack]

    async def _handler(self, conn) -> None:
        self.open_connections += 1
        path = conn.request.path
        try:
            async for raw in conn:
                if raw == "ping":  # OKX text keep-alive
                    self.received.append((path, raw))
                    await conn.send("pong")
                    continue
                msg = json.loads(raw)
                self.received.append((path, msg))
                if msg.get("op") == "ping":  # Bybit keep-alive
                    await conn.send(json.dumps({"success": True, "ret_msg": "pong", "conn_id": "fake-conn-0001",
                                                "req_id": str(msg.get("req_id", "")), "op": "ping"}))
                    continue
                if msg.get("op") != "subscribe":
                    continue
                keys, acks = self._subscribe(msg)
                for ack in acks:
                    await conn.send(json.dumps(ack))
                for key in keys:
                    self.streams.setdefault(key, deque())
                    self._subs[key] = conn
                self._wake.set()
        except ConnectionClosed:
            pass
        finally:
            for key in [k for k, c in self._subs.items() if c is conn]:
                del self._subs[key]
            self.open_connections -= 1

    async def _sender(self) -> None:
        while True:
            live = self._needed and all(k in self._subs for k in self._needed)
            ready = [(self.streams[k][0][0], k) for k in self._subs if self.streams[k]] if live else []
            if not ready:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), 0.05)
                except TimeoutError:
                    pass
                continue
            if self._t0_wall is None:
                self._t0_wall = time.monotonic()
            t, key = min(ready)
            if self.speed is not None:
                delay = (t - self.clock_ms()) / self.speed / 1000
                if delay > 0:
                    await asyncio.sleep(min(delay, 0.02))
                    continue
            conn = self._subs[key]
            if self.drop_after is not None and self._sent_on.get(id(conn), 0) >= self.drop_after:
                self.drop_after = None
                self.drops += 1
                await asyncio.sleep(0.1)  # let the client get back into a pending watch_*()
                await conn.close()
                for k in [k for k, c in self._subs.items() if c is conn]:
                    del self._subs[k]
                continue
            try:
                await conn.send(json.dumps(self.streams[key][0][1]))
            except ConnectionClosed:
                self._subs.pop(key, None)
                continue
            self.streams[key].popleft()  # only after a successful send: nothing lost on a drop
            self._sent_on[id(conn)] = self._sent_on.get(id(conn), 0) + 1
            self.sent += 1
            if self.sent % 50 == 0:
                await asyncio.sleep(0)
