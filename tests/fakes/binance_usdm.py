"""A local stand-in for Binance USDⓈ-M futures' signed REST API (one perpetual, BTCUSDT), for ccxt's real
`binanceusdm` class: market orders, the conditional (algo) stop orders that protect a position, positions.

Built from Binance's USDⓈ-M documentation (https://developers.binance.com/docs/derivatives/usds-margined-futures)
and the response shapes ccxt 4.5.90 parses (its binance.py comments quote them):
- POST/GET/DELETE /fapi/v1/order: MARKET orders fill at once at `price` (newOrderRespType RESULT: status FILLED,
  avgPrice, executedQty, cumQuote); `reduceOnly=true` orders may only shrink the position, else -2022
  "ReduceOnly Order is rejected.". Commission `commission_rate` of the notional, in USDT (GET /fapi/v1/userTrades).
- Conditional orders go through the Algo Service since Binance moved them there (Dec 2025): POST /fapi/v1/algoOrder
  with algoType=CONDITIONAL, type STOP_MARKET, triggerPrice, quantity, reduceOnly and clientAlgoId; GET and DELETE
  /fapi/v1/algoOrder by algoId or clientAlgoId; GET /fapi/v1/openAlgoOrders. algoStatus NEW while it waits. A stop
  that would trigger at once is refused (-2021 "Order would immediately trigger."). `set_price(p)`: a SELL stop
  triggers at p <= triggerPrice (BUY at p >= triggerPrice); the Algo Service then places a MARKET order (reduceOnly
  as the stop was) in the matching engine, which fills at p, and the algo order becomes FINISHED with that order's
  id in `actualOrderId` (its fill is read from that order). A triggered reduce-only stop with no position left to
  reduce finishes with the actual order EXPIRED and nothing filled.
- Unknown orders: GET answers -2013 "Order does not exist.", DELETE -2011 "Unknown order sent." (HTTP 400).
- GET /fapi/v3/positionRisk (and v2): the one-way position (positionAmt signed, entryPrice).
Signed requests are checked like tests/trading/fake_binance.py (key header, timestamp, HMAC-SHA256 signature).

Simplifications: one-way mode only (positionSide BOTH), no margin or liquidation, no funding, the mark price is the
last price (workingType is accepted and ignored), one fill per market order.
"""

from __future__ import annotations

import threading
import time
from decimal import Decimal
from urllib.parse import parse_qsl

from tests.fakes.binance_http import BinanceJsonServer

SYMBOL = "BTCUSDT"
EXCHANGE_INFO = {
    "timezone": "UTC",
    "serverTime": 1767225600000,
    "futuresType": "U_MARGINED",
    "rateLimits": [],
    "exchangeFilters": [],
    "assets": [{"asset": "USDT", "marginAvailable": True, "autoAssetExchange": "-10000"}],
    "symbols": [{
        "symbol": SYMBOL, "pair": SYMBOL, "contractType": "PERPETUAL", "deliveryDate": 4133404800000,
        "onboardDate": 1569398400000, "status": "TRADING", "maintMarginPercent": "2.5000",
        "requiredMarginPercent": "5.0000", "baseAsset": "BTC", "quoteAsset": "USDT", "marginAsset": "USDT",
        "pricePrecision": 2, "quantityPrecision": 3, "baseAssetPrecision": 8, "quotePrecision": 8,
        "underlyingType": "COIN", "underlyingSubType": ["PoW"], "settlePlan": 0, "triggerProtect": "0.0500",
        "liquidationFee": "0.012500", "marketTakeBound": "0.05",
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": "261.10", "maxPrice": "809484", "tickSize": "0.10"},
            {"filterType": "LOT_SIZE", "minQty": "0.001", "maxQty": "1000", "stepSize": "0.001"},
            {"filterType": "MARKET_LOT_SIZE", "minQty": "0.001", "maxQty": "120", "stepSize": "0.001"},
            {"filterType": "MAX_NUM_ORDERS", "limit": 200},
            {"filterType": "MAX_NUM_ALGO_ORDERS", "limit": 10},
            {"filterType": "MIN_NOTIONAL", "notional": "100"},
            {"filterType": "PERCENT_PRICE", "multiplierUp": "1.0500", "multiplierDown": "0.9500",
             "multiplierDecimal": "4"},
        ],
        "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET",
                       "TRAILING_STOP_MARKET"],
        "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"],
    }],
}


def _s(x: Decimal, places: int = 8) -> str:
    return f"{x:.{places}f}"


class FakeBinanceUsdm(BinanceJsonServer):
    """with FakeBinanceUsdm(price=Decimal("95000")) as fake: config {"urls": {"api": fake.urls()}}."""

    _MISSING = (-1102, "Mandatory parameter 'timestamp' or 'signature' was not sent.")
    SIGNING_ERRORS = {"key": (-2015, "Invalid API-key, IP, or permissions for action."), "timestamp": _MISSING,
                      "signature": _MISSING, "bad": (-1022, "Signature for this request is not valid.")}
    POST_QUERY_FALLBACK = True

    def __init__(self, *, price: Decimal = Decimal("95000.00"), commission_rate: Decimal = Decimal("0.0005")):
        self.price = price
        self.commission_rate = commission_rate
        self.wallet = Decimal("100000")  # USDT
        self.position = Decimal(0)  # BTC, signed (one-way mode)
        self.entry_price = Decimal(0)
        self.orders: list[dict] = []  # the matching engine's orders, query-order shape
        self.algo_orders: list[dict] = []  # the Algo Service's conditional orders
        self.trades: list[dict] = []
        self.requests: list[tuple[str, str, dict]] = []
        self.used_client_ids: set[str] = set()
        self._next_id = 7000
        self._lock = threading.Lock()
        super().__init__()

    # ------------------------------------------------------------------ plumbing

    def urls(self) -> dict:
        base = f"{self.base_url}/fapi"
        return {"fapiPublic": f"{base}/v1", "fapiPublicV2": f"{base}/v2", "fapiPublicV3": f"{base}/v3",
                "fapiPrivate": f"{base}/v1", "fapiPrivateV2": f"{base}/v2", "fapiPrivateV3": f"{base}/v3"}

    def posted(self, path: str) -> list[dict]:
        return [p for m, pth, p in self.requests if m == "POST" and pth == path]

    def algo_by_client_id(self, client_id: str) -> dict:
        return next(a for a in self.algo_orders if a["clientAlgoId"] == client_id)

    def working_stops(self) -> list[dict]:
        return [a for a in self.algo_orders if a["algoStatus"] == "NEW"]

    def set_price(self, price: Decimal, *, stall: bool = False) -> list[dict]:
        """The market trades at `price`: stops whose trigger it reaches fire (see the module docstring).
        Returns the algo orders that triggered. `stall`: they stay in TRIGGERING and place no order (what Binance's
        demo venue has done: nautilus_trader discussion #5378)."""
        with self._lock:
            self.price = price
            fired = []
            for a in self.algo_orders:
                if a["algoStatus"] != "NEW":
                    continue
                trigger = Decimal(a["triggerPrice"])
                if (price > trigger) if a["side"] == "SELL" else (price < trigger):
                    continue
                now = int(time.time() * 1000)
                if stall:
                    a.update(algoStatus="TRIGGERING", triggerTime=now, updateTime=now)
                    fired.append(a)
                    continue
                order = self._market(side=a["side"], qty=Decimal(a["quantity"]), reduce_only=a["reduceOnly"],
                                     client_id=f"autoclose-{a['algoId']}", orig_type="STOP_MARKET")
                a.update(algoStatus="FINISHED", triggerTime=now, updateTime=now, actualOrderId=str(order["orderId"]),
                         actualPrice=order["avgPrice"])
                fired.append(a)
            return fired

    # ------------------------------------------------------------------ routing

    def route(self, method: str, path: str, query: str, headers) -> tuple[int, object]:
        params = dict(parse_qsl(query, keep_blank_values=True))
        self.requests.append((method, path, {k: v for k, v in params.items() if k != "signature"}))
        if (method, path) == ("GET", "/fapi/v1/exchangeInfo"):
            return 200, EXCHANGE_INFO
        if (method, path) == ("GET", "/fapi/v1/time"):
            return 200, {"serverTime": int(time.time() * 1000)}
        error = self._check_signed(query, params, headers)
        if error:
            return 400, error
        with self._lock:
            if path == "/fapi/v1/order":
                return {"POST": self._new_order, "GET": self._query_order, "DELETE": self._cancel_order}[method](params)
            if path == "/fapi/v1/algoOrder":
                return {"POST": self._new_algo, "GET": self._query_algo, "DELETE": self._cancel_algo}[method](params)
            if (method, path) == ("GET", "/fapi/v1/openOrders"):
                return 200, [o for o in self.orders if o["status"] == "NEW"]
            if (method, path) == ("GET", "/fapi/v1/openAlgoOrders"):
                return 200, self.working_stops()
            if (method, path) == ("GET", "/fapi/v1/allOrders"):
                start = int(params.get("startTime", 0))
                return 200, [o for o in self.orders if o["time"] >= start]
            if (method, path) == ("GET", "/fapi/v1/userTrades"):
                oid = params.get("orderId")
                return 200, [t for t in self.trades if oid in (None, str(t["orderId"]))]
            if method == "GET" and path in ("/fapi/v2/positionRisk", "/fapi/v3/positionRisk"):
                return 200, [self._position_risk()]
            if (method, path) == ("GET", "/fapi/v1/leverageBracket"):
                return 200, [{"symbol": SYMBOL, "brackets": [{"bracket": 1, "initialLeverage": 125,
                                                              "notionalCap": 50000, "notionalFloor": 0,
                                                              "maintMarginRatio": 0.004, "cum": 0.0}]}]
        return 404, {"code": -1000, "msg": f"not faked: {method} {path}"}


    # ------------------------------------------------------------------ the matching engine

    def _market(self, *, side: str, qty: Decimal, reduce_only: bool, client_id: str, orig_type: str = "MARKET"
                ) -> dict:
        """A MARKET order filled at the current price (a reduce-only one capped at the position, EXPIRED with
        nothing filled when there is none to reduce)."""
        sign = 1 if side == "BUY" else -1
        if reduce_only:
            reducible = -self.position if sign > 0 else self.position
            qty = min(qty, max(reducible, Decimal(0)))
        now = int(time.time() * 1000)
        order = {
            "orderId": self._next_id, "symbol": SYMBOL, "status": "FILLED" if qty > 0 else "EXPIRED",
            "clientOrderId": client_id, "price": "0.00", "avgPrice": _s(self.price if qty > 0 else Decimal(0), 2),
            "origQty": _s(qty, 3), "executedQty": _s(qty, 3), "cumQuote": _s(qty * self.price, 5),
            "timeInForce": "GTC", "type": "MARKET", "reduceOnly": reduce_only, "closePosition": False, "side": side,
            "positionSide": "BOTH", "stopPrice": "0.00", "workingType": "CONTRACT_PRICE", "priceProtect": False,
            "origType": orig_type, "priceMatch": "NONE", "selfTradePreventionMode": "EXPIRE_MAKER",
            "goodTillDate": 0, "time": now, "updateTime": now,
        }
        self._next_id += 1
        self.orders.append(order)
        if qty > 0:
            self._fill(order, sign, qty)
        return order

    def _fill(self, order: dict, sign: int, qty: Decimal) -> None:
        px, notional = self.price, qty * self.price
        commission = notional * self.commission_rate
        realized = Decimal(0)
        if self.position * sign < 0:  # reduces: realise P&L on the closed part
            closed = min(qty, abs(self.position))
            realized = (px - self.entry_price) * closed * (1 if self.position > 0 else -1)
        new = self.position + sign * qty
        if new == 0:
            self.entry_price = Decimal(0)
        elif self.position * sign >= 0:  # opens or adds: average entry
            self.entry_price = (self.entry_price * abs(self.position) + px * qty) / abs(new)
        self.position = new
        self.wallet += realized - commission
        self.trades.append({
            "symbol": SYMBOL, "id": self._next_id, "orderId": order["orderId"], "side": order["side"],
            "price": _s(px, 2), "qty": _s(qty, 3), "realizedPnl": _s(realized), "quoteQty": _s(notional, 5),
            "commission": _s(commission), "commissionAsset": "USDT", "time": order["time"], "positionSide": "BOTH",
            "buyer": sign > 0, "maker": False,
        })
        self._next_id += 1

    def _new_order(self, p: dict) -> tuple[int, object]:
        if p.get("symbol") != SYMBOL:
            return 400, {"code": -1121, "msg": "Invalid symbol."}
        if p.get("type") != "MARKET":
            return 400, {"code": -1116, "msg": "Invalid orderType."}  # conditional types: the algo endpoint
        cid = p.get("newClientOrderId") or f"fake-{self._next_id}"
        if any(o["clientOrderId"] == cid and o["status"] == "NEW" for o in self.orders):
            return 400, {"code": -4015, "msg": "Client order id is not valid."}
        qty, sign = Decimal(p["quantity"]), 1 if p["side"] == "BUY" else -1
        reduce_only = p.get("reduceOnly") == "true"
        if reduce_only and (self.position == 0 or self.position * sign > 0):
            return 400, {"code": -2022, "msg": "ReduceOnly Order is rejected."}
        return 200, self._market(side=p["side"], qty=qty, reduce_only=reduce_only, client_id=cid)

    def _find(self, p: dict) -> dict | None:
        cid, oid = p.get("origClientOrderId"), p.get("orderId")
        for o in reversed(self.orders):
            if (cid is not None and o["clientOrderId"] == cid) or (oid is not None and str(o["orderId"]) == oid):
                return o
        return None

    def _query_order(self, p: dict) -> tuple[int, object]:
        order = self._find(p)
        return (200, order) if order else (400, {"code": -2013, "msg": "Order does not exist."})

    def _cancel_order(self, p: dict) -> tuple[int, object]:
        order = self._find(p)
        if order is None or order["status"] != "NEW":
            return 400, {"code": -2011, "msg": "Unknown order sent."}
        order["status"] = "CANCELED"
        return 200, order

    # ------------------------------------------------------------------ the Algo Service

    def _new_algo(self, p: dict) -> tuple[int, object]:
        if p.get("algoType") != "CONDITIONAL" or p.get("type") != "STOP_MARKET":
            return 400, {"code": -1116, "msg": "Invalid orderType."}  # the only kind this fake takes
        for name in ("quantity", "triggerPrice", "side"):
            if not p.get(name):
                return 400, {"code": -1102, "msg": f"Mandatory parameter '{name}' was not sent, was empty/null, "
                                                   "or malformed."}
        cid = p.get("clientAlgoId") or f"fake-algo-{self._next_id}"
        if cid in self.used_client_ids:
            return 400, {"code": -4116, "msg": "ClientOrderId is duplicated."}
        trigger = Decimal(p["triggerPrice"])
        if (self.price <= trigger) if p["side"] == "SELL" else (self.price >= trigger):
            return 400, {"code": -2021, "msg": "Order would immediately trigger."}
        now = int(time.time() * 1000)
        algo = {
            "algoId": self._next_id, "clientAlgoId": cid, "algoType": "CONDITIONAL", "orderType": "STOP_MARKET",
            "symbol": SYMBOL, "side": p["side"], "positionSide": p.get("positionSide", "BOTH"),
            "timeInForce": p.get("timeInForce", "GTC"), "quantity": _s(Decimal(p["quantity"]), 3), "algoStatus": "NEW",
            "triggerPrice": _s(trigger, 2), "price": "0.00", "icebergQuantity": None,
            "selfTradePreventionMode": "EXPIRE_MAKER", "workingType": p.get("workingType", "CONTRACT_PRICE"),
            "priceMatch": "NONE", "closePosition": False, "priceProtect": False,
            "reduceOnly": p.get("reduceOnly") == "true", "createTime": now, "updateTime": now, "triggerTime": 0,
            "goodTillDate": 0, "actualOrderId": "", "actualPrice": "",
        }
        self._next_id += 1
        self.used_client_ids.add(cid)
        self.algo_orders.append(algo)
        return 200, algo

    def _find_algo(self, p: dict) -> dict | None:
        cid, aid = p.get("clientAlgoId"), p.get("algoId")
        for a in self.algo_orders:
            if (cid is not None and a["clientAlgoId"] == cid) or (aid is not None and str(a["algoId"]) == aid):
                return a
        return None

    def _query_algo(self, p: dict) -> tuple[int, object]:
        algo = self._find_algo(p)
        return (200, algo) if algo else (400, {"code": -2013, "msg": "Order does not exist."})

    def _cancel_algo(self, p: dict) -> tuple[int, object]:
        algo = self._find_algo(p)
        if algo is None or algo["algoStatus"] != "NEW":
            return 400, {"code": -2011, "msg": "Unknown order sent."}
        algo.update(algoStatus="CANCELED", updateTime=int(time.time() * 1000))
        return 200, {"algoId": algo["algoId"], "clientAlgoId": algo["clientAlgoId"], "code": "200", "msg": "success"}

    def _position_risk(self) -> dict:
        unrealized = (self.price - self.entry_price) * self.position if self.position else Decimal(0)
        return {
            "symbol": SYMBOL, "positionSide": "BOTH", "positionAmt": _s(self.position, 3),
            "entryPrice": _s(self.entry_price), "breakEvenPrice": _s(self.entry_price), "markPrice": _s(self.price),
            "unRealizedProfit": _s(unrealized), "liquidationPrice": "0", "isolatedMargin": "0",
            "notional": _s(self.position * self.price), "marginAsset": "USDT", "isolatedWallet": "0",
            "initialMargin": "0", "maintMargin": "0", "positionInitialMargin": "0", "openOrderInitialMargin": "0",
            "adl": 0, "bidNotional": "0", "askNotional": "0", "updateTime": int(time.time() * 1000),
            "leverage": "20", "marginType": "cross", "isAutoAddMargin": "false", "maxNotionalValue": "50000",
        }
