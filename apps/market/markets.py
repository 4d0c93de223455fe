"""ccxt markets: the exchange's list of tradable symbols and each one's trading rules, cached for offline use.

`markets_fetch` asks the exchange (ccxt's own `load_markets`, so its parsing of exchangeInfo / AssetPairs / ...
is the one used) and writes the markets to `<RUN_DIR>/markets/<exchange>.json`; `markets_cached` reads that
file back, so the Instruments page and the executors work with no network once it exists. The cache keeps
ccxt's market dicts as ccxt returns them minus `info` (the raw exchange body: most of the size, none of the
facts used here).

`market_facts` (pure) turns one ccxt market dict into the Instrument's rule fields; `instrument_apply_market`
writes them. ccxt's precision: every exchange this project uses reports `precision` as a TICK (precisionMode
TICK_SIZE: 0.01 means a step of 0.01); a DECIMAL_PLACES exchange (2 means 0.01) is converted; a
SIGNIFICANT_DIGITS one has no fixed step and leaves the step NULL.
"""

from __future__ import annotations

import difflib
import json
import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from apps.market.models import Instrument

# ccxt.base.decimal_to_precision's constants, repeated so the pure part imports nothing from ccxt
DECIMAL_PLACES, SIGNIFICANT_DIGITS, TICK_SIZE = 2, 3, 4
_PRICE_PLACES, _QTY_PLACES = 10, 12  # apps.common.fields price_field / qty_field decimal places
MARKET_TYPES = ("spot", "swap", "future")


class MarketError(ValueError):
    """The exchange or symbol cannot be used: the message says why, for the operator."""


@dataclass(frozen=True)
class Markets:
    exchange: str
    fetched_at: datetime
    precision_mode: int
    markets: dict[str, dict]  # ccxt unified symbol -> ccxt market dict (without `info`)

    def symbols(self, *, active_only: bool = True) -> list[str]:
        """Symbols an instrument can be added for: spot, swap and future markets (no options), active ones."""
        return sorted(s for s, m in self.markets.items()
                      if _market_type(m) in MARKET_TYPES and (not active_only or m.get("active") is not False))

    def market(self, symbol: str) -> dict:
        m = self.markets.get(symbol)
        if m is None:
            near = difflib.get_close_matches(symbol.upper(), list(self.markets), n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(near)}?" if near else ""
            raise MarketError(f"{symbol!r} is not a market of {self.exchange} (ccxt markets of "
                              f"{self.fetched_at:%Y-%m-%d %H:%M} UTC, {len(self.markets)} symbols){hint}")
        if _market_type(m) not in MARKET_TYPES:
            raise MarketError(f"{symbol} on {self.exchange} is a {m.get('type')} market; "
                              f"the desk trades spot, swap and future markets only")
        return m


def _market_type(m: dict) -> str | None:
    t = m.get("type")
    if t in MARKET_TYPES:
        return t
    if m.get("spot"):
        return "spot"
    if m.get("swap"):
        return "swap"
    if m.get("future"):
        return "future"
    return t


def _dec(x: Any, places: int) -> Decimal | None:
    """A ccxt number (float, int, numeric string or None) as a Decimal that fits `places` decimals, else None:
    a rule finer than the column can hold is not enforced rather than enforced wrongly (0 would refuse all)."""
    if x is None or x == "":
        return None
    try:
        d = Decimal(str(x))
    except (InvalidOperation, ValueError):
        return None
    if not d.is_finite() or d < 0:
        return None
    q = d.quantize(Decimal(1).scaleb(-places))
    return q if q == d else None


def _step(x: Any, precision_mode: int, places: int) -> Decimal | None:
    if x is None:
        return None
    if precision_mode == DECIMAL_PLACES:
        try:
            return _dec(Decimal(1).scaleb(-int(x)), places)
        except (TypeError, ValueError):
            return None
    if precision_mode == TICK_SIZE:
        d = _dec(x, places)
        return d if d else None  # a zero tick is no rule
    return None  # SIGNIFICANT_DIGITS: no fixed step


def market_facts(market: dict, *, precision_mode: int = TICK_SIZE) -> dict[str, Any]:
    """The Instrument field values for one ccxt market dict (pure). Raises MarketError for an option or a
    market ccxt cannot classify."""
    kind = _market_type(market)
    if kind not in MARKET_TYPES:
        raise MarketError(f"{market.get('symbol')} is a {market.get('type')} market; "
                          f"the desk trades spot, swap and future markets only")
    precision = market.get("precision") or {}
    limits = market.get("limits") or {}
    contract = kind != "spot"
    size = _dec(market.get("contractSize"), _QTY_PLACES) if contract else None
    return {
        "base": str(market.get("base") or "")[:16],
        "quote": str(market.get("quote") or "")[:16],
        "market_type": kind,
        "inverse": bool(contract and market.get("inverse")),
        "settle": str(market.get("settle") or "")[:16] if contract else "",
        "contract_size": size if size else Decimal("1"),
        "price_tick": _step(precision.get("price"), precision_mode, _PRICE_PLACES),
        "amount_step": _step(precision.get("amount"), precision_mode, _QTY_PLACES),
        "min_amount": _dec((limits.get("amount") or {}).get("min"), _QTY_PLACES),
        "min_notional": _dec((limits.get("cost") or {}).get("min"), _PRICE_PLACES),
    }


def symbol_shape(symbol: str) -> dict[str, Any]:
    """What a ccxt unified symbol alone says (pure): BASE/QUOTE spot, BASE/QUOTE:SETTLE a perpetual (inverse when
    it settles in the base), BASE/QUOTE:SETTLE-YYMMDD a dated future. For instruments made before their ccxt
    market was looked up."""
    base, _, rest = symbol.partition("/")
    quote, _, settle_part = rest.partition(":")
    settle, _, expiry = settle_part.partition("-")
    if not settle:
        return {"base": base, "quote": quote, "market_type": "spot", "inverse": False, "settle": ""}
    return {"base": base, "quote": quote, "market_type": "future" if expiry else "swap",
            "inverse": settle == base, "settle": settle}


# -- the cache file and the exchange ------------------------------------------------------------------------


def markets_cache_path(exchange_code: str) -> Path:
    from django.conf import settings

    if not exchange_code.isascii() or not exchange_code.replace("_", "").isalnum():
        raise MarketError(f"{exchange_code!r} is not an exchange id")
    folder = getattr(settings, "HFT_MARKETS_DIR", None) or Path(settings.RUN_DIR) / "markets"
    return Path(folder) / f"{exchange_code}.json"


_PARSED: dict[Path, tuple[tuple[int, int, int], Markets]] = {}  # path -> (file version, parsed)


def markets_cached(exchange_code: str) -> Markets | None:
    """The cached markets of an exchange, or None when never fetched (or the file is unreadable).

    Parsed once per process and file version (a big exchange's file is megabytes of JSON; the page reads it on
    every view): a new fetch replaces the file (os.replace), a new inode and mtime, so it is read again."""
    path = markets_cache_path(exchange_code)
    try:
        st = path.stat()
        key = (st.st_ino, st.st_mtime_ns, st.st_size)  # os.replace gives the new file a new inode
        hit = _PARSED.get(path)
        if hit is not None and hit[0] == key:
            return hit[1]
        doc = json.loads(path.read_text())
        got = Markets(exchange=doc["exchange"], fetched_at=datetime.fromisoformat(doc["fetched_at"]),
                      precision_mode=int(doc["precision_mode"]), markets=dict(doc["markets"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    _PARSED[path] = (key, got)
    return got


def markets_store(exchange_code: str, markets: dict[str, dict], *, precision_mode: int,
                  fetched_at: datetime | None = None) -> Markets:
    """Write ccxt markets to the cache (atomically: a reader never sees half a file) and return them."""
    slim = {s: {k: v for k, v in m.items() if k != "info"} for s, m in markets.items()}
    row = Markets(exchange=exchange_code, fetched_at=fetched_at or datetime.now(UTC),
                  precision_mode=precision_mode, markets=slim)
    path = markets_cache_path(exchange_code)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{exchange_code}.", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump({"exchange": exchange_code, "fetched_at": row.fetched_at.isoformat(),
                   "precision_mode": precision_mode, "markets": slim}, f, default=str)
    os.replace(tmp, path)
    return row


def markets_fetch(exchange_code: str, *, config: dict | None = None) -> Markets:
    """ccxt's `load_markets` for the exchange (public endpoints, no keys), written to the cache. `config` is
    merged into the ccxt constructor's (tests point `urls` at a local server). Raises MarketError with ccxt's
    reason when the exchange is unknown or cannot be reached."""
    import ccxt

    from apps.market.exchanges import _deep_merge, exchange_options

    if exchange_code not in ccxt.exchanges:
        raise MarketError(f"{exchange_code!r} is not a ccxt exchange id (e.g. binance, binanceusdm, kraken, okx)")
    cls = getattr(ccxt, exchange_code)
    ex = cls(_deep_merge({"enableRateLimit": True, "timeout": 20_000,
                          "options": exchange_options(exchange_code)}, config or {}))
    try:
        markets = ex.load_markets()
    except ccxt.BaseError as exc:
        raise MarketError(f"loading {exchange_code}'s markets failed: {type(exc).__name__}: {str(exc)[:300]}") from exc
    return markets_store(exchange_code, markets, precision_mode=int(ex.precisionMode))


def markets_get(exchange_code: str, *, refresh: bool = False, config: dict | None = None) -> Markets:
    """The cached markets, fetched first when there is no cache or `refresh`."""
    cached = None if refresh else markets_cached(exchange_code)
    return cached if cached is not None else markets_fetch(exchange_code, config=config)


def instrument_apply_market(instrument: Instrument, market: dict, *, precision_mode: int = TICK_SIZE) -> list[str]:
    """Write the ccxt market's rules onto the instrument (saved); returns the fields that changed."""
    from django.utils import timezone

    facts = market_facts(market, precision_mode=precision_mode)
    if not facts["base"] or not facts["quote"]:
        facts.pop("base"), facts.pop("quote")
    changed = [k for k, v in facts.items() if getattr(instrument, k) != v]
    for k in changed:
        setattr(instrument, k, facts[k])
    instrument.markets_checked_at = timezone.now()
    instrument.save(update_fields=[*changed, "markets_checked_at"])
    return changed


# -- loading markets from the browser: a task on the default queue (the exchange may take seconds to answer) ----
FETCH_STATE_TTL = 3600  # s the Instruments page shows a load's outcome


def _fetch_state_key(exchange_code: str) -> str:
    return f"markets-fetch:{exchange_code}"


def markets_fetch_state(exchange_code: str) -> dict | None:
    """The last requested load of an exchange's markets: {"state": queued|loading|done|failed, "at", "error"}."""
    from django.core.cache import cache

    try:
        return cache.get(_fetch_state_key(exchange_code))
    except Exception:  # Redis down: the page shows the cache file's own date only
        return None


def markets_fetch_state_set(exchange_code: str, state: str, **extra: Any) -> None:
    from django.core.cache import cache

    cache.set(_fetch_state_key(exchange_code), {"state": state, "at": datetime.now(UTC).isoformat(), **extra},
              FETCH_STATE_TTL)


@dataclass(frozen=True)
class ExchangeMarkets:
    """What a markets load is about, for its audit row (the exchange may have no Exchange row yet)."""

    pk: str  # the ccxt exchange id


def markets_fetch_queue(exchange_code: str, *, actor: Any = None) -> None:
    """Ask a worker to load the exchange's markets (after the request's transaction commits); audited."""
    import ccxt
    from django.db import transaction

    from apps.audit.services import audit_record

    if exchange_code not in ccxt.exchanges:
        raise MarketError(f"{exchange_code!r} is not a ccxt exchange id (e.g. binance, binanceusdm, kraken, okx)")
    with transaction.atomic():
        audit_record(actor=actor, action="markets.load_requested", obj=ExchangeMarkets(pk=exchange_code),
                     after={"exchange": exchange_code})
    markets_fetch_state_set(exchange_code, "queued")

    def send() -> None:
        from hftweb.celery import app

        app.send_task("apps.market.markets_tasks.markets_fetch_task", args=[exchange_code], expires=300)

    transaction.on_commit(send)
