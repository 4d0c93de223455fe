"""A local stand-in for Binance spot's signed REST API, for ccxt's real `binance` class.

Built from Binance's documented spot API (https://developers.binance.com/docs/binance-spot-api-docs/rest-api):
request parameters, the FULL new-order response with `fills` (price, qty, commission, commissionAsset,
tradeId), the query-order shape of GET /api/v3/order, /openOrders and /allOrders, GET /api/v3/account, and
the error bodies `{"code": -2010, "msg": "Duplicate order sent."}`, `{"code": -2013, "msg": "Order does
not exist."}`, `{"code": -2014, "msg": "API-key format invalid."}`, `{"code": -1022, "msg": "Signature for
this request is not valid."}` (all HTTP 400).

Signed requests are checked: the X-MBX-APIKEY header must carry the test key, `timestamp` and `signature`
must be present, and the signature must be the HMAC-SHA256 of the query with the test secret (that is
what ccxt computes; checking it proves the secret reached the request and nothing else did).

Deliberate simplifications (a fake, not an exchange):
- MARKET orders fill at once at `price` (split into two fills at `price` and `price + tick` when the
  quantity allows, so the average and the per-fill commissions are really aggregated by ccxt);
  LIMIT orders rest (status NEW) until the test changes them.
- Stop orders (Binance spot's STOP_LOSS and STOP_LOSS_LIMIT, with the parameters Binance requires: stopPrice,
  and price + timeInForce for the limit kind) rest with `isWorking: false` and lock what they would sell.
  `set_price(p)` is the exchange's last trade: a SELL stop triggers at p <= stopPrice (a BUY stop at
  p >= stopPrice). A triggered STOP_LOSS fills at once at p; a triggered STOP_LOSS_LIMIT becomes a working
  limit order (`isWorking: true`) that fills at p when p is at or better than its limit, else rests and fills
  at its limit when a later price reaches it. One fill, taker commission. A stop that would trigger at once is
  rejected (-2010 "Stop price would trigger immediately."), as is a type the symbol does not list (-1013).
- Balances: `balances` are the account's totals; `locked` what open orders hold. An order needing more than
  is free is rejected (-2010 "Account has insufficient balance for requested action."); so is a MARKET sell
  of BTC that a resting stop holds, exactly as on Binance spot.
- DELETE /api/v3/order cancels an open order (by orderId or origClientOrderId) and releases its lock; any
  other order answers -2011 "Unknown order sent." (Binance's answer for a filled or cancelled one).
- Commission is `commission_rate` of each fill, in the asset received (base on a BUY, quote on a SELL),
  which is Binance's rule without BNB fee discounts.
- A client order id that was ever used is rejected as a duplicate (the brief's contract). Real Binance
  enforces uniqueness of `newClientOrderId` among OPEN orders only; the live executor therefore looks the
  order up by client id before placing it and does not rely on the rejection alone.
- `hide_orders` makes GET /api/v3/order answer -2013 for those client ids once: the window in which two
  racing tasks both miss the order before one of them places it.
"""

from __future__ import annotations

import copy
import threading
import time
from decimal import Decimal
from urllib.parse import parse_qsl

from tests.fakes.binance_http import API_KEY, API_SECRET, BinanceJsonServer

__all__ = ["API_KEY", "API_SECRET", "FakeBinanceSpot"]


SPOT_EXCHANGE_INFO = {
    "timezone": "UTC",
    "serverTime": 1767225600000,
    "symbols": [
        {
            "symbol": "BTCUSDT",
            "status": "TRADING",
            "baseAsset": "BTC",
            "baseAssetPrecision": 8,
            "quoteAsset": "USDT",
            "quotePrecision": 8,
            "quoteAssetPrecision": 8,
            "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
            "isSpotTradingAllowed": True,
            "isMarginTradingAllowed": True,
            "permissionSets": [["SPOT", "MARGIN"]],
            "filters": [
                {"filterType": "PRICE_FILTER", "minPrice": "0.01000000", "maxPrice": "1000000.00000000",
                 "tickSize": "0.01000000"},
                {"filterType": "LOT_SIZE", "minQty": "0.00001000", "maxQty": "9000.00000000",
                 "stepSize": "0.00001000"},
                {"filterType": "NOTIONAL", "minNotional": "5.00000000", "maxNotional": "9000000.00000000"},
            ],
        }
    ],
}
ASSETS = {"BTCUSDT": ("BTC", "USDT")}
STOP_TYPES = ("STOP_LOSS", "STOP_LOSS_LIMIT")


def _s(x: Decimal) -> str:
    return f"{x:.8f}"


def _public(order: dict) -> dict:
    """An order as Binance shows it (without the fake's own bookkeeping)."""
    return {k: v for k, v in order.items() if k != "locked"}


class FakeBinanceSpot(BinanceJsonServer):
    """with FakeBinanceSpot(price=Decimal("95000")) as fake: config {"urls": {"api": fake.urls()}}."""

    def __init__(self, *, price: Decimal = Decimal("95000.00"), commission_rate: Decimal = Decimal("0.001"),
                 order_types: list[str] | None = None):
        self.price = price
        self.commission_rate = commission_rate
        self.exchange_info = copy.deepcopy(SPOT_EXCHANGE_INFO)
        if order_types is not None:  # e.g. with "STOP_LOSS", as Binance lists it for BTCUSDT today
            self.exchange_info["symbols"][0]["orderTypes"] = list(order_types)
        self.balances: dict[str, Decimal] = {"BTC": Decimal(0), "USDT": Decimal("100000")}
        self.locked: dict[str, Decimal] = {"BTC": Decimal(0), "USDT": Decimal(0)}
        self.orders: list[dict] = []  # query-order shape, in placement order
        self.used_client_ids: set[str] = set()
        self.hide_orders: set[str] = set()
        self.requests: list[tuple[str, str, dict]] = []  # (method, path, params without signature)
        self._next_order_id = 1000
        self._next_trade_id = 5000
        self.trades: list[dict] = []  # GET /api/v3/myTrades rows
        self._lock = threading.Lock()
        super().__init__()

    # ------------------------------------------------------------------ plumbing

    def urls(self) -> dict:
        base = f"{self.base_url}/api/v3"
        return {"public": base, "private": base}

    def posted_orders(self) -> list[dict]:
        return [p for m, path, p in self.requests if m == "POST" and path == "/api/v3/order"]

    def cancel_requests(self) -> list[dict]:
        return [p for m, path, p in self.requests if m == "DELETE" and path == "/api/v3/order"]

    def order_by_client_id(self, client_id: str) -> dict:
        return next(o for o in self.orders if o["clientOrderId"] == client_id)

    def set_price(self, price: Decimal, *, at_most: Decimal | None = None) -> list[dict]:
        """The market trades at `price`: resting stops trigger and working stop-limits fill (see the module
        docstring), each by `at_most` when given (a thin book: the rest stays working). Returns the orders
        that filled (partly)."""
        with self._lock:
            self.price = price
            filled = []
            for o in self.orders:
                if o["status"] not in ("NEW", "PARTIALLY_FILLED") or o["type"] not in STOP_TYPES:
                    continue
                sell = o["side"] == "SELL"
                stop, limit = Decimal(o["stopPrice"]), Decimal(o["price"])
                if not o["isWorking"]:
                    if (price > stop) if sell else (price < stop):
                        continue
                    now = int(time.time() * 1000)
                    o.update(isWorking=True, workingTime=now, updateTime=now)
                    if o["type"] == "STOP_LOSS" or ((price >= limit) if sell else (price <= limit)):
                        px = price  # crosses the book at once: the market's price (taker)
                    else:
                        continue  # the limit is through: it rests on the book
                elif o["type"] == "STOP_LOSS":
                    px = price  # a working stop-market takes the book
                elif (price >= limit) if sell else (price <= limit):
                    px = limit  # a resting limit reached by the market fills at its price
                else:
                    continue
                remaining = Decimal(o["origQty"]) - Decimal(o["executedQty"])
                qty = remaining if at_most is None else min(at_most, remaining)
                asset, held = o.get("locked", (None, Decimal(0)))
                if asset is not None:  # the coins sold are no longer held by the order
                    o["locked"] = (asset, held - qty)
                    self.locked[asset] -= qty
                self._fill(o, qty, px=px, split=False)
                if o["status"] == "FILLED":
                    self._unlock(o)
                filled.append(o)
            return filled

    # ------------------------------------------------------------------ routing

    def route(self, method: str, path: str, query: str, headers) -> tuple[int, object]:
        pairs = parse_qsl(query, keep_blank_values=True)
        params = dict(pairs)
        self.requests.append((method, path, {k: v for k, v in params.items() if k != "signature"}))
        if (method, path) == ("GET", "/api/v3/exchangeInfo"):
            return 200, self.exchange_info
        if (method, path) == ("GET", "/api/v3/time"):
            return 200, {"serverTime": int(time.time() * 1000)}
        error = self._check_signed(query, params, headers)
        if error:
            return 400, error
        with self._lock:
            if (method, path) == ("POST", "/api/v3/order"):
                return self._new_order(params)
            if (method, path) == ("GET", "/api/v3/order"):
                return self._query_order(params)
            if (method, path) == ("DELETE", "/api/v3/order"):
                return self._cancel_order(params)
            if (method, path) == ("GET", "/api/v3/openOrders"):
                sym = params.get("symbol")
                return 200, [_public(o) for o in self.orders
                             if o["status"] in ("NEW", "PARTIALLY_FILLED") and sym in (None, o["symbol"])]
            if (method, path) == ("GET", "/api/v3/allOrders"):
                start = int(params.get("startTime", 0))
                return 200, [_public(o) for o in self.orders
                             if o["symbol"] == params.get("symbol") and o["time"] >= start]
            if (method, path) == ("GET", "/api/v3/myTrades"):
                oid = params.get("orderId")
                return 200, [t for t in self.trades
                             if t["symbol"] == params.get("symbol") and oid in (None, str(t["orderId"]))]
            if (method, path) == ("GET", "/api/v3/account"):
                return 200, self._account()
        return 404, {"code": -1000, "msg": f"not faked: {method} {path}"}


    # ------------------------------------------------------------------ endpoints

    def _new_order(self, p: dict) -> tuple[int, object]:
        symbol = p.get("symbol")
        if symbol not in ASSETS:
            return 400, {"code": -1121, "msg": "Invalid symbol."}
        kind = p.get("type")
        if kind not in self.exchange_info["symbols"][0]["orderTypes"]:
            return 400, {"code": -1013, "msg": f"{kind} orders are not supported for this symbol."}
        required = {"STOP_LOSS": ("quantity", "stopPrice"),
                    "STOP_LOSS_LIMIT": ("quantity", "price", "stopPrice", "timeInForce"),
                    "LIMIT": ("quantity", "price", "timeInForce"), "MARKET": ("quantity",)}.get(kind, ("quantity",))
        for name in required:
            if not p.get(name):
                return 400, {"code": -1102,
                             "msg": f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed."}
        cid = p.get("newClientOrderId") or f"fake-{self._next_order_id}"
        if cid in self.used_client_ids:
            return 400, {"code": -2010, "msg": "Duplicate order sent."}
        qty = Decimal(p["quantity"])
        base, quote = ASSETS[symbol]
        sell = p["side"] == "SELL"
        if kind in STOP_TYPES:
            stop = Decimal(p["stopPrice"])
            if (self.price <= stop) if sell else (self.price >= stop):
                return 400, {"code": -2010, "msg": "Stop price would trigger immediately."}
        need_asset = base if sell else quote
        need = qty if sell else qty * (Decimal(p["price"]) if p.get("price") else self.price)
        if need > self.balances[need_asset] - self.locked[need_asset]:
            return 400, {"code": -2010, "msg": "Account has insufficient balance for requested action."}
        now = int(time.time() * 1000)
        order = {
            "symbol": symbol, "orderId": self._next_order_id, "orderListId": -1, "clientOrderId": cid,
            "price": _s(Decimal(p.get("price", "0"))), "origQty": _s(qty), "executedQty": _s(Decimal(0)),
            "cummulativeQuoteQty": _s(Decimal(0)), "status": "NEW", "timeInForce": p.get("timeInForce", "GTC"),
            "type": kind, "side": p["side"], "stopPrice": _s(Decimal(p.get("stopPrice", "0"))),
            "icebergQty": "0.00000000", "time": now, "updateTime": now, "isWorking": kind not in STOP_TYPES,
            "workingTime": now if kind not in STOP_TYPES else -1,
            "origQuoteOrderQty": "0.00000000", "selfTradePreventionMode": "EXPIRE_MAKER",
        }
        self._next_order_id += 1
        self.used_client_ids.add(cid)
        if kind == "MARKET":
            fills = self._fill(order, qty)
        else:
            fills = []
            order["locked"] = (need_asset, need)  # released on fill or cancel; never sent to the client
            self.locked[need_asset] += need
        self.orders.append(order)
        resp_type = p.get("newOrderRespType", "FULL")
        resp = {k: order[k] for k in ("symbol", "orderId", "orderListId", "clientOrderId")} | {"transactTime": now}
        if resp_type in ("RESULT", "FULL"):
            resp |= {k: order[k] for k in ("price", "origQty", "executedQty", "cummulativeQuoteQty", "status",
                                           "timeInForce", "type", "side", "workingTime",
                                           "origQuoteOrderQty", "selfTradePreventionMode")}
            if kind in STOP_TYPES:
                resp["stopPrice"] = order["stopPrice"]
        if resp_type == "FULL":
            resp["fills"] = fills
        return 200, resp

    def _unlock(self, order: dict) -> None:
        asset, amount = order.pop("locked", (None, Decimal(0)))
        if asset is not None:
            self.locked[asset] -= amount

    def _cancel_order(self, p: dict) -> tuple[int, object]:
        cid, oid = p.get("origClientOrderId"), p.get("orderId")
        for o in self.orders:
            if o["symbol"] == p.get("symbol") and (o["clientOrderId"] == cid or str(o["orderId"]) == oid):
                if o["status"] not in ("NEW", "PARTIALLY_FILLED"):
                    break
                self._unlock(o)
                o.update(status="CANCELED", updateTime=int(time.time() * 1000))
                resp = {k: o[k] for k in ("symbol", "orderId", "orderListId", "price", "origQty", "executedQty",
                                          "cummulativeQuoteQty", "status", "timeInForce", "type", "side",
                                          "selfTradePreventionMode")}
                if o["type"] in STOP_TYPES:
                    resp["stopPrice"] = o["stopPrice"]
                # Binance answers with the cancel request's own new client id and the order's as origClientOrderId.
                return 200, resp | {"origClientOrderId": o["clientOrderId"], "clientOrderId": f"cancel-{o['orderId']}",
                                    "transactTime": o["updateTime"]}
        return 400, {"code": -2011, "msg": "Unknown order sent."}

    def _fill(self, order: dict, qty: Decimal, *, px: Decimal | None = None, split: bool = True) -> list[dict]:
        base, quote = ASSETS[order["symbol"]]
        tick = Decimal("0.01")
        px = self.price if px is None else px
        half = (qty / 2).quantize(Decimal("0.00001")) if split else Decimal(0)
        parts = [(px, half), (px + tick, qty - half)] if half > 0 else [(px, qty)]
        fills, cost = [], Decimal(0)
        now = int(time.time() * 1000)
        for fill_px, q in parts:
            notional = fill_px * q
            buy = order["side"] == "BUY"
            commission = (q if buy else notional) * self.commission_rate
            asset = base if buy else quote
            self.balances[base] += q - commission if buy else -q
            self.balances[quote] += -notional if buy else notional - commission
            cost += notional
            fills.append({"price": _s(fill_px), "qty": _s(q), "commission": _s(commission), "commissionAsset": asset,
                          "tradeId": self._next_trade_id})
            self.trades.append({
                "symbol": order["symbol"], "id": self._next_trade_id, "orderId": order["orderId"], "orderListId": -1,
                "price": _s(fill_px), "qty": _s(q), "quoteQty": _s(notional), "commission": _s(commission),
                "commissionAsset": asset, "time": now, "isBuyer": buy, "isMaker": False, "isBestMatch": True,
            })
            self._next_trade_id += 1
        executed = Decimal(order["executedQty"]) + qty
        done = executed >= Decimal(order["origQty"])
        order.update(status="FILLED" if done else "PARTIALLY_FILLED", executedQty=_s(executed),
                     cummulativeQuoteQty=_s(Decimal(order["cummulativeQuoteQty"]) + cost), updateTime=now)
        if done:
            order["isWorking"] = False
        return fills

    def _query_order(self, p: dict) -> tuple[int, object]:
        cid, oid = p.get("origClientOrderId"), p.get("orderId")
        if cid in self.hide_orders:
            self.hide_orders.discard(cid)
            return 400, {"code": -2013, "msg": "Order does not exist."}
        for o in self.orders:
            if o["symbol"] == p.get("symbol") and (o["clientOrderId"] == cid or str(o["orderId"]) == oid):
                return 200, _public(o)
        return 400, {"code": -2013, "msg": "Order does not exist."}

    def _account(self) -> dict:
        return {
            "makerCommission": 10, "takerCommission": 10, "buyerCommission": 0, "sellerCommission": 0,
            "commissionRates": {"maker": "0.00100000", "taker": "0.00100000", "buyer": "0.00000000",
                                "seller": "0.00000000"},
            "canTrade": True, "canWithdraw": True, "canDeposit": True, "brokered": False,
            "requireSelfTradePrevention": False, "preventSor": False, "updateTime": int(time.time() * 1000),
            "accountType": "SPOT",
            "balances": [{"asset": a, "free": _s(v - self.locked[a]), "locked": _s(self.locked[a])}
                         for a, v in self.balances.items()],
            "permissions": ["SPOT"], "uid": 354937868,
        }

    def seed_open_order(self, *, client_id: str, side: str = "BUY", qty: str = "0.01000",
                        price: str = "90000.00") -> dict:
        """A resting LIMIT order placed outside this desk's ledger (or by a task whose record was lost)."""
        with self._lock:
            now = int(time.time() * 1000)
            order = {
                "symbol": "BTCUSDT", "orderId": self._next_order_id, "orderListId": -1, "clientOrderId": client_id,
                "price": _s(Decimal(price)), "origQty": _s(Decimal(qty)), "executedQty": "0.00000000",
                "cummulativeQuoteQty": "0.00000000", "status": "NEW", "timeInForce": "GTC", "type": "LIMIT",
                "side": side, "stopPrice": "0.00000000", "icebergQty": "0.00000000", "time": now, "updateTime": now,
                "isWorking": True, "workingTime": now, "origQuoteOrderQty": "0.00000000",
                "selfTradePreventionMode": "EXPIRE_MAKER",
            }
            self._next_order_id += 1
            self.used_client_ids.add(client_id)
            self.orders.append(order)
            return order
