"""Live trading, the exchange side: the ccxt client and orders on the exchange (no ledger writes here).

Live trading is split by job (issue 13): this module (configuration, the client, client order ids, placing and
looking up one order), `live_executor` (entries, exits and stop moves: what the desk sends), `live_records`
(the ledger writes of live fills and closes), `live_reconcile` (start-up and on-demand comparison with the
exchange) and `live_protect` (the protective stop resting on the exchange). Imports go one way:
client <- records <- protect <- executor <- reconcile, so no module of them imports one that imports it.

When it runs. Only with `HFT_LIVE_TRADING=1` AND the exchange's keys in the environment
(`HFT_<EXCHANGE>_API_KEY` and `HFT_<EXCHANGE>_SECRET`, e.g. `HFT_BINANCE_API_KEY`). Anything else raises
`LiveTradingRefused` with the names of what is missing (never their values). The keys are read from the
environment when the ccxt client is built and live only in that object: never in the database, a log line,
an audit row or a page. `set_sandbox_mode(True)` (the exchange's testnet) is on unless `HFT_LIVE_SANDBOX=0`;
an exchange without a sandbox in ccxt is refused while sandbox mode is on.

No second order on retry. The client order id is `hft-<signal id>-entry` / `-exit` (the paper ledger's
ids; OKX, whose clOrdId is alphanumeric only, gets the same id without hyphens). Before placing, the order
is looked up by that client id and, when the exchange has it, recorded instead of placing again: Binance
enforces `newClientOrderId` uniqueness only among OPEN orders, so a filled market order would NOT be
rejected by a retry, and the rejection alone is no protection. The duplicate rejection (Binance
`{"code": -2010, "msg": "Duplicate order sent."}`) still covers the race where two tasks both missed the
order in the lookup: the loser fetches the order by client id and records that. A network error while
placing is retried (lookup first, so an order whose response was lost is found, not repeated); after the
last attempt the signal stays pending and `reconcile` records the order if the exchange has it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from decimal import Decimal
from typing import Any

from django.conf import settings

from apps.trading.models import Order

log = logging.getLogger(__name__)
STEP = Decimal("0.00000001")  # the ledger's 1e-8 precision (price, quantity and money fields)
PLACE_ATTEMPTS = 3  # lookup + place rounds on network errors; backoff 0.5 s, 1 s (inside the 50 s task limit)
FILL_POLLS = (0.2, 0.5, 1.0)  # seconds between re-reads of a market order the exchange returned unfilled
CLIENT_ID_RE = re.compile(r"^hft-?(\d+)-?(entry|exit|stop\d+)$")
# ccxt logs every request's headers at DEBUG, and Binance's X-MBX-APIKEY header is the key. Live clients log
# through this logger, pinned at INFO so that LOG_LEVEL=DEBUG on the root never writes the key anywhere.
CCXT_LOG = logging.getLogger("apps.trading.live.ccxt")
CCXT_LOG.setLevel(logging.INFO)


class LiveTradingRefused(Exception):
    """Live trading was asked for but is not allowed or not configured. The message names what is
    missing (setting or environment variable names), never a secret."""


class LiveOrderUncertain(Exception):
    """The exchange could not be reached to place or find an order; nothing was recorded. `reconcile`
    records the order later if the exchange has it."""


# ---------------------------------------------------------------- configuration and the ccxt client


def credential_env_names(exchange_code: str) -> tuple[str, str]:
    """The environment variables holding an exchange's key and secret: HFT_<CODE>_API_KEY, HFT_<CODE>_SECRET."""
    code = re.sub(r"[^A-Z0-9]", "_", exchange_code.upper())
    return f"HFT_{code}_API_KEY", f"HFT_{code}_SECRET"


def live_check(exchange_code: str) -> None:
    """Raise LiveTradingRefused unless live trading is switched on and the exchange's keys are present."""
    if not settings.HFT_LIVE_TRADING:
        raise LiveTradingRefused("live trading is off: set HFT_LIVE_TRADING=1 to trade live (paper is the default)")
    missing = [name for name in credential_env_names(exchange_code) if not os.environ.get(name, "").strip()]
    if missing:
        raise LiveTradingRefused(
            f"live trading refused for {exchange_code}: {' and '.join(missing)} not set in the environment "
            "(keys are read only from the environment, never from the database)"
        )


_CLIENTS: dict[tuple, Any] = {}


def live_clients_clear() -> None:
    """Forget cached ccxt clients (tests change the sandbox setting or the URLs between cases)."""
    _CLIENTS.clear()


def live_exchange(exchange_code: str, *, symbol: str | None = None):
    """A sync ccxt client with the environment's keys, in sandbox mode unless HFT_LIVE_SANDBOX=0, markets
    loaded. Cached per process: one client per exchange keeps ccxt's nonce, rate limiter and markets.

    `settings.HFT_LIVE_CCXT_CONFIG` is deep-merged over our options AFTER sandbox mode is applied (tests
    point `urls.api` at a local server there); keys in it are ignored: they come only from the environment.
    """
    import ccxt

    from apps.market.exchanges import _deep_merge, exchange_options

    live_check(exchange_code)
    extra = {k: v for k, v in (settings.HFT_LIVE_CCXT_CONFIG or {}).items()
             if k not in ("apiKey", "secret", "password", "uid", "privateKey")}
    sandbox = bool(settings.HFT_LIVE_SANDBOX)
    cache_key = (exchange_code, symbol, sandbox, json.dumps(extra, sort_keys=True, default=str))
    if cache_key in _CLIENTS:
        return _CLIENTS[cache_key]
    if exchange_code not in ccxt.exchanges:
        raise LiveTradingRefused(f"unknown ccxt exchange id {exchange_code!r}")
    key_name, secret_name = credential_env_names(exchange_code)
    options = exchange_options(exchange_code, symbol)
    # fetchOpenOrders without a symbol is heavier (Binance weight 80 instead of 6) but is what reconcile
    # needs: an order on a symbol this desk does not trade is still ours to report.
    options["warnOnFetchOpenOrdersWithoutSymbol"] = False
    urls = extra.pop("urls", None)
    config = _deep_merge({"enableRateLimit": True, "options": options}, extra)
    config |= {"apiKey": os.environ[key_name].strip(), "secret": os.environ[secret_name].strip()}
    ex = getattr(ccxt, exchange_code)(config)
    ex.logger = CCXT_LOG
    if sandbox:
        try:
            ex.set_sandbox_mode(True)
        except ccxt.NotSupported as exc:
            raise LiveTradingRefused(
                f"{exchange_code} has no sandbox/testnet in ccxt; live trading there needs HFT_LIVE_SANDBOX=0 "
                "(real money)"
            ) from exc
    if urls:
        ex.urls = _deep_merge(ex.urls, urls)
    ex.load_markets()
    _CLIENTS[cache_key] = ex
    return ex


# ---------------------------------------------------------------- client order ids


def client_order_id(signal_id: int, purpose: str) -> str:
    """The ledger's client order id (paper and live alike): hft-<signal id>-<entry|exit>."""
    return f"hft-{signal_id}-{purpose}"


def exchange_client_id(exchange_code: str, cid: str) -> str:
    """The id sent to the exchange. OKX's clOrdId allows letters and digits only (1-32 chars)."""
    return cid.replace("-", "") if exchange_code == "okx" else cid


def ledger_client_id(exchange_id: str) -> str:
    """The ledger's id of an order this desk sent (OKX's ids have no hyphens)."""
    m = CLIENT_ID_RE.match(exchange_id)
    return f"hft-{m.group(1)}-{m.group(2)}" if m else exchange_id


def parse_client_id(exchange_id: str | None) -> tuple[int, str] | None:
    """(signal id, purpose) for an id this desk sent, None for a foreign one (a manual order). A protective
    stop's id (hft-<signal id>-stop<n>, apps.trading.live_protect) has purpose "protect"."""
    m = CLIENT_ID_RE.match(exchange_id or "")
    if not m:
        return None
    return int(m.group(1)), Order.Purpose.PROTECT if m.group(2).startswith("stop") else m.group(2)


# ---------------------------------------------------------------- orders on the exchange


def _is_duplicate(exc: Exception) -> bool:
    import ccxt

    # ccxt 4.5.90 maps Binance -2010 (NEW_ORDER_REJECTED, shared with e.g. insufficient balance) to
    # InvalidOrder; only the message tells a duplicate client id apart.
    return isinstance(exc, ccxt.DuplicateOrderId) or "duplicate" in str(exc).lower()


def order_fetch_by_client_id(ex, symbol: str, ecid: str, params: dict | None = None) -> dict | None:
    """The exchange's order with this client id, or None when it has none (Binance -2013). `params`: ccxt's
    extras, e.g. {"trigger": True} for a conditional order on Binance futures (its Algo Service's own ids)."""
    import ccxt

    try:
        return ex.fetch_order(None, symbol, {"clientOrderId": ecid, **(params or {})})
    except ccxt.OrderNotFound:
        return None


def order_place_market(ex, *, symbol: str, side: str, amount: float, ecid: str,
                       reduce_only: bool = False) -> tuple[dict, str]:
    """Exactly one market order with client id `ecid`, however often this is called: returns the ccxt order
    and how it was obtained ("placed", "found" by the lookup before placing, "duplicate" after the
    exchange rejected our id as already used). Raises LiveOrderUncertain after PLACE_ATTEMPTS network errors.
    """
    return order_place(ex, symbol=symbol, kind="market", side=side, amount=amount, ecid=ecid,
                       params={"reduceOnly": True} if reduce_only else None)


def order_place(ex, *, symbol: str, kind: str, side: str, amount: float, ecid: str, price: float | None = None,
                params: dict | None = None, lookup: dict | None = None) -> tuple[dict, str]:
    """Exactly one order of ccxt type `kind` with client id `ecid` (see order_place_market); `params` are
    ccxt's unified extras (a protective stop's stopLossPrice), `lookup` the extras that find it again
    (order_fetch_by_client_id). Exchange refusals other than a duplicate id are raised as ccxt gives them."""
    import ccxt

    params = {**(params or {}), "clientOrderId": ecid}
    last_error: Exception | None = None
    for attempt in range(PLACE_ATTEMPTS):
        if attempt:
            time.sleep(0.5 * 2 ** (attempt - 1))
        try:
            existing = order_fetch_by_client_id(ex, symbol, ecid, lookup)
            if existing is not None:
                return existing, "found"
            try:
                return ex.create_order(symbol, kind, side, amount, price, params), "placed"
            except ccxt.ExchangeError as exc:
                if not _is_duplicate(exc):
                    raise
                log.warning("exchange rejected client id %s as a duplicate; fetching the existing order", ecid)
                existing = order_fetch_by_client_id(ex, symbol, ecid, lookup)
                if existing is None:
                    raise
                return existing, "duplicate"
        except ccxt.NetworkError as exc:  # includes RequestTimeout: the order may or may not exist
            last_error = exc
            log.warning("network error placing %s (attempt %d/%d): %s", ecid, attempt + 1, PLACE_ATTEMPTS,
                        type(exc).__name__)
    raise LiveOrderUncertain(f"could not place or find order {ecid}: {last_error!r}")


def order_settled(ex, symbol: str, order: dict, ecid: str) -> dict:
    """A market order with its fill: futures answer NEW with nothing filled yet, so re-read it briefly."""
    for pause in FILL_POLLS:
        if (order.get("filled") or 0) > 0 and order.get("status") != "open":
            return order
        time.sleep(pause)
        order = order_fetch_by_client_id(ex, symbol, ecid) or order
    return order



def to_step(x: Any) -> Decimal:
    """An exchange figure (float or string) as a ledger Decimal at the ledger's 1e-8 step."""
    return Decimal(repr(float(x))).quantize(STEP)
