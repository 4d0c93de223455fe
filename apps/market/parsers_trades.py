"""Loaders for the trade-level files of ../shared/data (pure: pandas/numpy only, no Django).

Each ``read_*`` returns a typed DataFrame, one row per file row, in file order and UNSANITISED: a value
that does not parse becomes NaN (numbers) / NaT-like -1 (ts) / "" (side), so a caller can count what it
drops; `sanitize_trades` / `sanitize_liquidations` drop bad rows and count them by reason. The replay feed
and the importer share these loaders.

Units everywhere: ``ts_ms`` int64 ms since epoch (UTC, exchange time); ``price`` quote per base (float64);
``amount`` BASE units (BTC for BTC/USDT and for the COIN-M BTCUSD_PERP); trade ``side`` is the TAKER side
("buy" | "sell"); liquidation ``side`` is the side LIQUIDATED ("long" = a long was forced to sell).

Formats (see ../shared/data/README.md):

* ``agg_trades``: data.binance.vision aggTrades zip/CSV, header ``agg_trade_id,price,quantity,first_trade_id,
  last_trade_id,transact_time,is_buyer_maker`` (older dumps have no header: same 7 columns). is_buyer_maker
  true = the taker SOLD. COIN-M (inverse) files - name ``<BASE>USD_PERP`` / ``<BASE>USD_<yymmdd>`` or a
  ``cm`` folder - count quantity in contracts of ``contract_usd`` USD (BTC 100, every other COIN-M
  contract 10, Binance's contract specs), so amount = quantity * contract_usd / price. USDT-M and spot
  files count base units already. `agg_trades_market` says which one a path is.
* ``liquidations``: recorder CSVs of Binance USDT-M ``!forceOrder@arr``: no header, 12 columns (13 with a
  trailing ``tier`` on some rows); the recorder stripped "USDT" from the symbol (``BTC`` = BTCUSDT, ccxt
  ``BTC/USDT:USDT``; ``BTC_250627`` = the BTCUSDT quarterly ``BTC/USDT:USDT-250627``; ``BTCUSDC`` kept its
  quote; ids may be non-ASCII: ``币安人生``). Junk text glued in front of the first symbol (``Hello Arbitrage
  Trading BotADA``) is cut off: a field holding spaces or lower-case ASCII keeps only its trailing run of
  ``[A-Z0-9_]``; `junk_prefix` holds what was cut. SELL = a long was
  liquidated. ``price`` is the liquidation ORDER price (always present); ``avg_price`` is NaN where the
  recorder wrote the literal ``None``; ``amount`` is accumulated_filled_quantity (base), the executed size.
* ``large_trades``: recorder CSVs of USDT-M ``<sym>@aggTrade`` that kept only trades over ~15k USD: no
  header, 7 columns ``event_time, symbol(leading space), agg_trade_id, price, quantity(base), trade_time,
  is_buyer_maker(True = taker sell)``, some rows with 2 more (usd_size, tier). Several symbols interleave
  (async streams), so the rows are not globally time-ordered: ts_ms is trade_time.
* ``public_trades``: ccxt/freqtrade trade lists with header ``,timestamp,id,type,side,price,amount,cost,date``
  (side is already the taker side; the pair is not in the file).
"""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

TRADE_COLUMNS = ["ts_ms", "price", "amount", "side", "id"]
LIQUIDATION_COLUMNS = [
    "ts_ms", "market_id", "symbol", "side", "price", "amount", "avg_price", "usd_size", "tier", "status",
]
LARGE_TRADE_COLUMNS = ["ts_ms", "event_ms", "market_id", "symbol", "price", "amount", "side", "id"]
AGG_COLUMNS = [
    "agg_trade_id", "price", "quantity", "first_trade_id", "last_trade_id", "transact_time", "is_buyer_maker",
]
FORCE_ORDER_COLUMNS = [
    "symbol", "side", "order_type", "time_in_force", "original_quantity", "price", "average_price",
    "order_status", "last_filled_quantity", "accumulated_filled_quantity", "order_trade_time", "usd_size", "tier",
]
LARGE_COLUMNS = [
    "event_time", "symbol", "agg_trade_id", "price", "quantity", "trade_time", "is_buyer_maker", "usd_size", "tier",
]
# COIN-M contract face value in USD: BTC contracts are 100 USD, every other COIN-M contract 10 USD.
COINM_CONTRACT_USD = {"BTC": 100.0}
COINM_DEFAULT_CONTRACT_USD = 10.0
_COINM_RE = re.compile(r"(?<![A-Z0-9])([A-Z0-9]{2,12})USD_(PERP|\d{6})(?![A-Z0-9])")
_SYMBOL_TAIL_RE = re.compile(r"[A-Z0-9_]+$")
_BOOL = {"true": True, "false": False}


def _open_text(path: Path):
    """A text handle on a plain, .gz or single-member .zip CSV (pandas reads it; we peek the first line)."""
    path = Path(path)
    if path.name.lower().endswith(".zip"):
        zf = zipfile.ZipFile(path)
        members = [n for n in zf.namelist() if not n.endswith("/")]
        if len(members) != 1:
            raise ValueError(f"{path.name}: zip must hold exactly one CSV, found {len(members)} files")
        return io.TextIOWrapper(zf.open(members[0]), encoding="utf-8", errors="replace")
    if path.name.lower().endswith(".gz"):
        import gzip

        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def first_line(path: Path) -> str:
    with _open_text(path) as fh:
        return fh.readline().strip()


def _num(s: pd.Series) -> np.ndarray:
    return pd.to_numeric(s, errors="coerce").to_numpy(dtype="float64")


def _ts(s: pd.Series) -> np.ndarray:
    """ms epoch as int64; unparsable -> -1 (counted as bad_time by the sanitisers). µs values become ms."""
    x = _num(s)
    x = np.where(x >= 10**14, x / 1000.0, x)  # µs epoch (spot dumps since 2025) -> ms
    out = np.full(len(x), -1, dtype="int64")
    ok = np.isfinite(x) & (x > 0)
    out[ok] = x[ok].astype("int64")
    return out


def _bool(s: pd.Series) -> np.ndarray:
    """'true'/'True'/'false' -> 1/0, anything else -> -1 (bad side)."""
    return s.astype(str).str.strip().str.lower().map(_BOOL).fillna(-1).astype("int64").to_numpy()


def _taker_side(is_buyer_maker: np.ndarray) -> np.ndarray:
    # the buyer was the maker -> the taker sold
    return np.where(is_buyer_maker == 1, "sell", np.where(is_buyer_maker == 0, "buy", ""))


# -- aggTrades --------------------------------------------------------------------------------------------
def agg_trades_market(path: Path) -> tuple[str, float | None]:
    """('coinm', contract_usd) for a COIN-M aggTrades file, ('linear', None) otherwise (base-unit quantity).

    Told by the file name (``BTCUSD_PERP-aggTrades-...``, ``ETHUSD_250627-...``) or a ``cm`` folder.
    """
    path = Path(path)
    m = _COINM_RE.search(path.name) or _COINM_RE.search(path.parent.name)
    folders = {p.lower() for p in path.parts[:-1]}
    if m or "cm" in folders or re.search(r"(?:^|[_/])cm(?:[_/]|$)", path.parent.name.lower()):
        base = m.group(1) if m else ""
        return "coinm", COINM_CONTRACT_USD.get(base, COINM_DEFAULT_CONTRACT_USD)
    return "linear", None


def read_agg_trades(path: Path, contract_usd: float | None = None) -> pd.DataFrame:
    """Binance Vision aggTrades -> DataFrame[ts_ms, price, amount (base), side (taker), id (agg_trade_id, str)]
    plus ``quantity`` (as in the file: contracts for COIN-M, base otherwise).

    `contract_usd` overrides the contract size told by `agg_trades_market` (None = from the name).
    """
    path = Path(path)
    has_header = first_line(path).lower().startswith("agg_trade_id")
    with _open_text(path) as fh:
        raw = pd.read_csv(fh, header=0 if has_header else None, names=AGG_COLUMNS, dtype=str, usecols=range(7))
    kind, size = agg_trades_market(path)
    if contract_usd is not None:
        size = float(contract_usd)
    price = _num(raw["price"])
    qty = _num(raw["quantity"])
    with np.errstate(invalid="ignore", divide="ignore"):
        amount = qty * size / price if size is not None else qty
        if size is not None:
            # price * (qty * size / price) can land one ulp below qty * size (100 contracts -> 99999.99999999999
            # USD): nudge amount up by one ulp there, so a notional test (the whale rule: price * amount >=
            # threshold) sees the contract value the file states. Volumes move by 1e-16 relative.
            low = price * amount < qty * size
            amount = np.where(low, np.nextafter(amount, np.inf), amount)
    return pd.DataFrame({
        "ts_ms": _ts(raw["transact_time"]),
        "price": price,
        "amount": amount,
        "side": _taker_side(_bool(raw["is_buyer_maker"])),
        "id": raw["agg_trade_id"].fillna("").str.strip().to_numpy(dtype=object),
        "quantity": qty,
    })


def read_public_trades(path: Path) -> pd.DataFrame:
    """ccxt/freqtrade trade list (timestamp, id, side, price, amount) -> DataFrame[ts_ms, price, amount, side, id]."""
    raw = pd.read_csv(path, dtype=str)
    return pd.DataFrame({
        "ts_ms": _ts(raw["timestamp"]),
        "price": _num(raw["price"]),
        "amount": _num(raw["amount"]),
        "side": raw["side"].fillna("").str.strip().str.lower().where(lambda s: s.isin(["buy", "sell"]), ""),
        "id": raw["id"].fillna("").str.strip().to_numpy(dtype=object),
    }).astype({"side": object})


# -- symbols ----------------------------------------------------------------------------------------------
def usdm_symbol(market_id: str) -> str:
    """Binance USDT-M market id -> ccxt unified symbol: BTCUSDT -> BTC/USDT:USDT, BTCUSDC -> BTC/USDC:USDC,
    BTCUSDT_250627 -> BTC/USDT:USDT-250627 (quarterly). '' when it is not such an id."""
    mid, _, expiry = market_id.partition("_")
    for quote in ("USDT", "USDC"):
        if mid.endswith(quote) and len(mid) > len(quote):
            sym = f"{mid[: -len(quote)]}/{quote}:{quote}"
            return f"{sym}-{expiry}" if expiry else sym
    return ""


def _recorder_market_id(sym: str) -> str:
    """forceOrder recorder symbol (USDT stripped) -> Binance market id: BTC -> BTCUSDT, BTC_250627 ->
    BTCUSDT_250627; a symbol still ending in USDC kept its quote."""
    base, sep, expiry = sym.partition("_")
    if base.endswith("USDC") and len(base) > 4:
        return sym
    return f"{base}USDT{sep}{expiry}"


# -- liquidations -----------------------------------------------------------------------------------------
def read_liquidations(path: Path) -> pd.DataFrame:
    """forceOrder recorder CSV -> DataFrame[ts_ms, market_id, symbol (ccxt), side (long/short = LIQUIDATED),
    price (order price), amount (base, filled), avg_price (NaN for None), usd_size, tier (NaN when absent),
    status] plus ``junk_prefix`` (text cut off the front of the symbol, '' normally) and ``raw_symbol``."""
    raw = pd.read_csv(path, header=None, names=FORCE_ORDER_COLUMNS, dtype=str, skipinitialspace=True)
    sym_field = raw["symbol"].fillna("").str.strip()
    # Only a field with spaces or lower-case ASCII carries junk; real ids may be non-ASCII (币安人生USDT).
    glued = sym_field.str.contains(r"[\sa-z]", regex=True)
    tail = sym_field.str.extract(r"([A-Z0-9_]+)$", expand=False).fillna("")
    raw_symbol = sym_field.where(~glued, tail)
    junk = np.array([f[: len(f) - len(s)] for f, s in zip(sym_field.tolist(), raw_symbol.tolist(), strict=True)],
                    dtype=object)
    market_id = np.array([_recorder_market_id(s) if s else "" for s in raw_symbol.tolist()], dtype=object)
    side = raw["side"].fillna("").str.strip().str.upper().map({"SELL": "long", "BUY": "short"}).fillna("")
    return pd.DataFrame({
        "ts_ms": _ts(raw["order_trade_time"]),
        "market_id": market_id,
        "symbol": np.array([usdm_symbol(m) if m else "" for m in market_id], dtype=object),
        "side": side.to_numpy(dtype=object),
        "price": _num(raw["price"]),
        "amount": _num(raw["accumulated_filled_quantity"]),
        "avg_price": _num(raw["average_price"]),  # the literal None -> NaN
        "usd_size": _num(raw["usd_size"]),
        "tier": _num(raw["tier"]),
        "status": raw["order_status"].fillna("").str.strip().to_numpy(dtype=object),
        "junk_prefix": junk,
        "raw_symbol": raw_symbol.to_numpy(dtype=object),
    })


# -- large-trade recordings -------------------------------------------------------------------------------
def read_large_trades(path: Path) -> pd.DataFrame:
    """Large-aggTrade recorder CSV -> DataFrame[ts_ms (trade time), event_ms, market_id, symbol (ccxt USDT-M),
    price, amount (base), side (taker), id (agg_trade_id, str)] plus ``usd_size``/``tier`` (NaN when absent)."""
    with _open_text(path) as fh:
        raw = pd.read_csv(fh, header=None, names=LARGE_COLUMNS, dtype=str, skipinitialspace=True)
    market_id = raw["symbol"].fillna("").str.strip().str.upper()
    return pd.DataFrame({
        "ts_ms": _ts(raw["trade_time"]),
        "event_ms": _ts(raw["event_time"]),
        "market_id": market_id.to_numpy(dtype=object),
        "symbol": np.array([usdm_symbol(m) for m in market_id.tolist()], dtype=object),
        "price": _num(raw["price"]),
        "amount": _num(raw["quantity"]),
        "side": _taker_side(_bool(raw["is_buyer_maker"])).astype(object),
        "id": raw["agg_trade_id"].fillna("").str.strip().to_numpy(dtype=object),
        "usd_size": _num(raw["usd_size"]),
        "tier": _num(raw["tier"]),
    })


# -- format detection -------------------------------------------------------------------------------------
def detect_trade_format(path: Path) -> str | None:
    """'agg_trades' | 'liquidations' | 'large_trades' | 'public_trades', or None (not a trade-level file)."""
    try:
        line = first_line(path)
    except (OSError, EOFError, ValueError, zipfile.BadZipFile):
        return None
    head = [c.strip() for c in line.split(",")]
    low = [c.lower() for c in head]
    if low[:7] == AGG_COLUMNS:
        return "agg_trades"
    if low[1:7] == ["timestamp", "id", "type", "side", "price", "amount"]:
        return "public_trades"
    if len(head) in (12, 13) and head[1].upper() in ("BUY", "SELL") and head[2].upper() in ("LIMIT", "MARKET"):
        return "liquidations"
    numeric = [re.fullmatch(r"-?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?", c) is not None for c in head]
    if len(head) == 7 and all(numeric[:6]) and low[6] in _BOOL:
        return "agg_trades"  # a header-less Binance Vision aggTrades dump
    if len(head) in (7, 9) and numeric[0] and re.fullmatch(r"[A-Z0-9]*[A-Z][A-Z0-9]*", head[1]) and low[6] in _BOOL:
        return "large_trades"
    return None


# -- sanitising -------------------------------------------------------------------------------------------
def apply_checks(df: pd.DataFrame, checks: list[tuple[str, np.ndarray]],
                 dup_cols: list[str] | None) -> tuple[pd.DataFrame, dict[str, int]]:
    """Drop the rows any check flags, each counted once under its FIRST failing check (checks in order),
    then repeats of `dup_cols` (kept: the first) as "duplicate_in_file". Shared by every file sanitiser."""
    skipped: dict[str, int] = {}
    bad = np.zeros(len(df), dtype=bool)
    for reason, mask in checks:
        new = mask & ~bad
        if new.any():
            skipped[reason] = int(new.sum())
            bad |= new
    df = df[~bad]
    if dup_cols:
        dup = df.duplicated(subset=dup_cols, keep="first").to_numpy()
        if dup.any():
            skipped["duplicate_in_file"] = int(dup.sum())
            df = df[~dup]
    return df.reset_index(drop=True), skipped


def sanitize_trades(frame: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """(clean trades, skipped count by reason). Each bad row counts once, under its first failing check:
    bad_time, non_finite, non_positive (price or amount), bad_side, then duplicate_in_file (same id, per
    market_id when the frame has one; id-less rows are never duplicates). File order is kept: time order
    is the live sanitiser's business."""
    df = frame.reset_index(drop=True)
    p = df["price"].to_numpy(dtype="float64")
    a = df["amount"].to_numpy(dtype="float64")
    with np.errstate(invalid="ignore"):
        checks = [
            ("bad_time", df["ts_ms"].to_numpy() <= 0),
            ("non_finite", ~np.isfinite(p) | ~np.isfinite(a)),
            ("non_positive", (p <= 0) | (a <= 0)),
            ("bad_side", ~df["side"].isin(["buy", "sell"]).to_numpy()),
        ]
    clean, skipped = apply_checks(df, checks, None)
    ids = clean["id"].astype(str)
    # ids are per market: a multi-symbol recording repeats an id only when it wrote the same trade twice
    key = clean[["market_id", "id"]].astype(str) if "market_id" in clean else ids
    dup = (key.duplicated(keep="first") & (ids != "")).to_numpy()
    if dup.any():
        skipped["duplicate_in_file"] = int(dup.sum())
        clean = clean[~dup].reset_index(drop=True)
    return clean, skipped


def sanitize_liquidations(frame: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """(clean liquidations, skipped count by reason): bad_time, bad_symbol, bad_side, non_finite, non_positive
    (price or amount), then duplicate_in_file (same symbol, ts, side, price, amount: the DB's unique key)."""
    df = frame.reset_index(drop=True)
    p = df["price"].to_numpy(dtype="float64")
    a = df["amount"].to_numpy(dtype="float64")
    with np.errstate(invalid="ignore"):
        checks = [
            ("bad_time", df["ts_ms"].to_numpy() <= 0),
            ("bad_symbol", (df["symbol"] == "").to_numpy()),
            ("bad_side", ~df["side"].isin(["long", "short"]).to_numpy()),
            ("non_finite", ~np.isfinite(p) | ~np.isfinite(a)),
            ("non_positive", (p <= 0) | (a <= 0)),
        ]
    return apply_checks(df, checks, ["symbol", "ts_ms", "side", "price", "amount"])


def trades_from_frame(frame: pd.DataFrame):
    """Iterate a trades frame as apps.market.bar_builder.Trade records (what the live pipeline consumes)."""
    from apps.market.bar_builder import Trade

    for ts, price, amount, side, ident in zip(
        frame["ts_ms"].tolist(), frame["price"].tolist(), frame["amount"].tolist(), frame["side"].tolist(),
        frame["id"].astype(str).tolist(), strict=True,
    ):
        yield Trade(ts_ms=ts, price=price, amount=amount, side=side, id=ident)


def liquidations_from_frame(frame: pd.DataFrame):
    """Iterate a liquidations frame as apps.market.bar_builder.Liquidation records."""
    from apps.market.bar_builder import Liquidation

    for ts, side, price, amount in zip(
        frame["ts_ms"].tolist(), frame["side"].tolist(), frame["price"].tolist(), frame["amount"].tolist(),
        strict=True,
    ):
        yield Liquidation(ts_ms=ts, side=side, price=price, amount=amount)
