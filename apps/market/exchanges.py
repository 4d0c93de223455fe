"""ccxt exchange construction and ccxt -> pipeline record conversion for the live feeds.

One factory (`exchange_build`) serves production (no overrides: the exchange's real public endpoints,
no API keys, since public market data needs none) and tests (`config` points `urls` at 127.0.0.1), so a
test cannot silently fall back to the real host and production cannot drift from what the tests build.

Per-exchange choices, and why:
- binance (spot): `fetchMarkets.types = ["spot"]` for a spot symbol: `load_markets` then asks for one
  `exchangeInfo` instead of three (spot + USDT-M + COIN-M). Trades come from `<symbol>@trade` (ccxt's
  default), whose ids are real trade ids.
- binanceusdm: trades from `<symbol>@aggTrade`, Binance's documented USDT-M trade stream; its ids are
  the same aggregate ids the REST `aggTrades` endpoint returns, so REST polling and websocket agree.
- binance, binanceusdm: one websocket per market type (`streamLimits` 1), so trades and liquidations of a
  feed arrive on one connection in the exchange's order.
- okx, kraken, bybit: ccxt defaults.

Units: a Trade's amount and a Liquidation's amount are BASE units (BTC for BTC/USDT, BTC/USDT:USDT and
BTC/USD:BTC). Linear contracts are `amount * contractSize`; inverse contracts (COIN-M, 100 USD each) are
`amount * contractSize / price`.
"""

from __future__ import annotations

import copy
import math
from typing import Any

from apps.market.bar_builder import Liquidation, Trade

LIVE_EXCHANGES = ("binance", "binanceusdm", "okx", "kraken", "bybit")

# Exchanges whose unified liquidation `side` is the liquidated POSITION's side ("buy" = a long was
# liquidated: Bybit v5 allLiquidation "S"), not the side of the forced order as on Binance and OKX.
POSITION_SIDE_LIQUIDATIONS = frozenset({"bybit"})


def _deep_merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in extra.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def exchange_options(code: str, symbol: str | None = None) -> dict[str, Any]:
    """ccxt `options` this project sets for an exchange (see the module docstring for the reasons).

    `tradesLimit`: ccxt.pro keeps the trades received since the last `watch_trades` call in a ring of
    this size (default 1000); a burst larger than that between two calls would silently lose trades."""
    options: dict[str, Any] = {"tradesLimit": 10_000}
    if code in ("binance", "binanceusdm"):
        # One socket per market type: a feed's trade and forceOrder streams then share one connection, whose
        # messages Binance sends in event order, so a liquidation cannot overtake the trades before it
        # (ccxt would otherwise spread them over sockets 0 and 1 and their relative order is lost).
        options["streamLimits"] = {t: 1 for t in ("spot", "margin", "linear", "inverse")}
    if code == "binance":
        types = ["spot"] if symbol is None or ":" not in symbol else ["linear", "inverse"]
        options["fetchMarkets"] = {"types": types}
    if code == "binanceusdm":
        options["watchTrades"] = {"name": "aggTrade"}
    return options


def exchange_build(code: str, *, symbol: str | None = None, websocket: bool = True, config: dict | None = None):
    """An async ccxt exchange for public market data: ccxt.pro when `websocket` and the exchange has a
    ccxt.pro class, else ccxt.async_support (REST only). `config` is deep-merged over our defaults
    (tests put `urls` there). The caller must `await ex.close()`."""
    import ccxt.async_support
    import ccxt.pro

    if code not in ccxt.exchanges:
        raise ValueError(f"unknown ccxt exchange id {code!r}; live feeds support {', '.join(LIVE_EXCHANGES)}")
    cls = getattr(ccxt.pro, code, None) if websocket else None
    if cls is None:
        cls = getattr(ccxt.async_support, code)
    merged = _deep_merge({"enableRateLimit": True, "options": exchange_options(code, symbol)}, config or {})
    return cls(merged)


def streams_trades(ex: Any) -> bool:
    """True when the exchange object can stream trades over a websocket (a ccxt.pro class with watchTrades)."""
    return bool(ex.has.get("watchTrades")) and type(ex).__module__.startswith("ccxt.pro")


def streams_liquidations(ex: Any, symbol: str) -> bool:
    """Liquidations exist only for derivatives (unified symbols with a settle currency, "BTC/USDT:USDT"),
    and only exchanges with watchLiquidations (native or emulated) stream them."""
    return ":" in symbol and bool(ex.has.get("watchLiquidations")) and streams_trades(ex)


def _num(x: Any) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan  # the sanitiser rejects it as non_finite, counted


def _to_base(amount: float, price: float, market: dict | None) -> float:
    if not market or not market.get("contract"):
        return amount
    size = _num(market.get("contractSize") or 1.0)
    if market.get("inverse"):
        return amount * size / price if price else math.nan
    return amount * size


def trade_from_ccxt(t: dict, market: dict | None = None) -> Trade:
    """A unified ccxt trade -> Trade (ms timestamp, price, base amount, TAKER side, id as text).

    Missing or malformed values become NaN / "" so that the sanitiser counts and rejects them instead of
    this function raising in the middle of a batch."""
    price = _num(t.get("price"))
    ts = t.get("timestamp")
    return Trade(
        ts_ms=int(ts) if isinstance(ts, int | float) and math.isfinite(ts) else 0,
        price=price,
        amount=_to_base(_num(t.get("amount")), price, market),
        side=str(t.get("side") or ""),
        id="" if t.get("id") is None else str(t["id"]),
    )


def liquidation_from_ccxt(liq: dict, market: dict | None = None, exchange_code: str = "") -> Liquidation:
    """A unified ccxt liquidation -> Liquidation (side = the liquidated position, amount in base units).

    Binance forceOrder: ccxt 4.5.90 puts `l` (the LAST fill) in `contracts` and leaves contractSize None;
    the liquidated quantity is `z` (accumulated filled quantity of the forced order), taken from `info`.
    """
    price = _num(liq.get("price"))
    info = liq.get("info") if isinstance(liq.get("info"), dict) else {}
    qty = _num(info["z"]) if exchange_code.startswith("binance") and "z" in info else _num(liq.get("contracts"))
    side = str(liq.get("side") or "").lower()
    if exchange_code in POSITION_SIDE_LIQUIDATIONS:
        liq_side = {"buy": "long", "sell": "short"}.get(side, "")
    else:  # the forced order's side: a SELL closes a long
        liq_side = {"sell": "long", "buy": "short"}.get(side, "")
    ts = liq.get("timestamp")
    return Liquidation(
        ts_ms=int(ts) if isinstance(ts, int | float) and math.isfinite(ts) else 0,
        side=liq_side,
        price=price,
        amount=_to_base(qty, price, market),
    )
