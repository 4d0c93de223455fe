"""Local stand-ins for exchange REST endpoints, fed only with REAL recorded data (no invented candles).

ccxt's own request building, error mapping and parsing run unchanged; only the transport ends at
127.0.0.1 (the exchange's ``urls['api']`` entries are pointed here).

* Binance: ``GET /api/v3/exchangeInfo`` (a minimal body in Binance's documented format) and
  ``GET /api/v3/klines`` serving the data.binance.vision BTCUSDT 1m rows of 2020-01-01..03 in the REST
  shape (the same 12 columns: ints for times and trade count, decimal strings for the rest). It honours
  symbol, interval, startTime, endTime and limit like Binance (default 500, max 1000; with startTime the
  oldest rows, without it the newest). Knobs: `omit` (open times the server pretends it never had: a gap),
  `now_ms` (rows opening after it do not exist yet; the row opening at or before it is the forming one),
  `faults` (per klines request, in order: "ok" serves, "drop" closes the socket without a response).
* Kraken: ``/0/public/Assets`` and ``/0/public/AssetPairs`` (minimal bodies, values from the `info` of
  ccxt's kraken markets fixture) and ``/0/public/OHLC`` answering every request with ccxt's recorded
  fetchOHLCV httpResponse from ../shared/data/ccxt-static/response_kraken.json, as is.
"""

from __future__ import annotations

import csv
import io
import json
import threading
import zipfile
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from tests.datafiles import require

VISION_DAYS = [f"klines/binance_vision_spot_BTCUSDT_1m/BTCUSDT-1m-2020-01-0{d}.zip" for d in (1, 2, 3)]
KRAKEN_RESPONSES = "ccxt-static/response_kraken.json"


def vision_klines() -> list[list]:
    """The 4 320 real 1m rows of 2020-01-01..03 in Binance's REST kline shape."""
    rows = []
    for rel in VISION_DAYS:
        with zipfile.ZipFile(require(rel)) as z, z.open(z.namelist()[0]) as f:
            for r in csv.reader(io.TextIOWrapper(f)):
                rows.append([int(r[0]), *r[1:6], int(r[6]), r[7], int(r[8]), *r[9:12]])
    return rows


def kraken_ohlcv_case() -> dict:
    """ccxt's recorded kraken fetchOHLCV case: input, httpResponse (the raw body) and parsedResponse."""
    methods = json.loads(require(KRAKEN_RESPONSES).read_text())["methods"]
    return methods["fetchOHLCV"][0]


SPOT_EXCHANGE_INFO = {
    "timezone": "UTC",
    "symbols": [{
        "symbol": "BTCUSDT", "status": "TRADING", "baseAsset": "BTC", "baseAssetPrecision": 8,
        "quoteAsset": "USDT", "quotePrecision": 8, "quoteAssetPrecision": 8,
        "isSpotTradingAllowed": True, "isMarginTradingAllowed": True, "permissionSets": [["SPOT", "MARGIN"]],
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": "0.01000000", "maxPrice": "1000000.00000000",
             "tickSize": "0.01000000"},
            {"filterType": "LOT_SIZE", "minQty": "0.00001000", "maxQty": "9000.00000000", "stepSize": "0.00001000"},
        ],
    }],
}
KRAKEN_ASSETS = {"error": [], "result": {
    "XXBT": {"aclass": "currency", "altname": "XBT", "decimals": 10, "display_decimals": 5, "status": "enabled"},
    "USDT": {"aclass": "currency", "altname": "USDT", "decimals": 8, "display_decimals": 4, "status": "enabled"},
}}
KRAKEN_ASSET_PAIRS = {"error": [], "result": {"XBTUSDT": {
    "altname": "XBTUSDT", "wsname": "XBT/USDT", "aclass_base": "currency", "base": "XXBT",
    "aclass_quote": "currency", "quote": "USDT", "lot": "unit", "cost_decimals": 5, "pair_decimals": 1,
    "lot_decimals": 8, "lot_multiplier": 1, "leverage_buy": [2, 3], "leverage_sell": [2, 3],
    "fees": [[0, 0.26]], "fees_maker": [[0, 0.16]], "fee_volume_currency": "ZUSD", "margin_call": 80,
    "margin_stop": 40, "ordermin": "0.0001", "costmin": "0.5", "tick_size": "0.1", "status": "online",
}}}


class _Server:
    """A stdlib HTTP server in a thread (so sync ccxt can use it); subclasses answer route()."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict]] = []  # (path, query) per request, in order
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, like the real APIs

            def log_message(self, *args):
                pass

            def do_GET(self):
                url = urlparse(self.path)
                q = {k: v[0] for k, v in parse_qs(url.query).items()}
                fake.requests.append((url.path, q))
                try:
                    status, body = fake.route(url.path, q)
                    if status is None:  # "drop": hang up without any response
                        self.close_connection = True
                        return
                    data = json.dumps(body).encode()
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

    def route(self, path: str, q: dict) -> tuple[int | None, object]:
        raise NotImplementedError

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


class FakeBinanceRest(_Server):
    def __init__(self, klines: list[list]):
        super().__init__()
        self.klines = klines
        self.omit: set[int] = set()
        self.now_ms: int | None = None
        self.faults: deque[str] = deque()
        self.served: list[list[int]] = []  # open times of each klines response

    def urls(self) -> dict:
        return {"public": f"{self.base}/api/v3"}

    def kline_queries(self) -> list[dict]:
        return [q for p, q in self.requests if p == "/api/v3/klines"]

    def route(self, path: str, q: dict):
        if path == "/api/v3/exchangeInfo":
            return 200, SPOT_EXCHANGE_INFO
        if path != "/api/v3/klines":
            return 404, {"code": -1000, "msg": f"not faked: {path}"}
        if self.faults and self.faults.popleft() == "drop":
            return None, None
        if q.get("symbol") != "BTCUSDT":
            return 400, {"code": -1121, "msg": "Invalid symbol."}
        if q.get("interval") != "1m":
            return 400, {"code": -1120, "msg": "Invalid interval."}
        limit = min(int(q.get("limit", 500)), 1000)
        start, end = q.get("startTime"), q.get("endTime")
        rows = [k for k in self.klines
                if k[0] not in self.omit
                and (self.now_ms is None or k[0] <= self.now_ms)
                and (start is None or k[0] >= int(start)) and (end is None or k[0] <= int(end))]
        rows = rows[:limit] if start is not None else rows[-limit:]
        self.served.append([r[0] for r in rows])
        return 200, rows


class FakeKrakenRest(_Server):
    def __init__(self, ohlc_body: dict):
        super().__init__()
        self.ohlc_body = ohlc_body

    def urls(self) -> dict:
        return {"public": self.base}

    def route(self, path: str, q: dict):
        bodies = {"/0/public/Assets": KRAKEN_ASSETS, "/0/public/AssetPairs": KRAKEN_ASSET_PAIRS,
                  "/0/public/OHLC": self.ohlc_body}
        if path in bodies:
            return 200, bodies[path]
        return 404, {"error": [f"EGeneral:not faked {path}"]}
