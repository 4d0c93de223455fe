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

Reading (`read_bytes`, `split_table`; every loader and `importers.read_klines` go through them): the whole
file is decompressed and checked first. A file that cannot be read as a whole - empty, not the gzip/zip its
name says, a zip that does not hold exactly one file, a truncated gzip, a corrupt archive (its CRC or its
deflate stream fails) - raises `BadFile`, whose one-line message names the file and, where it is known, the
line; nothing of such a file may be stored (a truncated gzip's data cannot be checked: its CRC is in the
missing end). Then each line is split on commas (the formats have no quoting): a line whose field count is
not the format's is left out and counted as ``wrong_column_count``. The ``load_*`` functions return the
frame with the file line of each row (1-based, header included) and those counts (`Loaded`); the
``read_*`` functions return just the frame.

Times: a ts that does not parse, is not positive, or lies outside what a datetime64[ns] holds (1677..2262)
is -1 (``bad_time``). The sanitisers also refuse times before `EARLIEST_MS` (``too_old``: 2009-01-03, the
first bitcoin block; no market existed, usually seconds read as ms) and after now + `FUTURE_TOLERANCE_MS`
(``future``: the caller's clock, the wall clock by default). Their ``first`` argument collects the first
bad row per reason (its ``line`` column when the frame has one, else its position).
"""

from __future__ import annotations

import csv
import io
import re
import time
import zipfile
import zlib
from collections.abc import Collection
from dataclasses import dataclass, field
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
AGG_WIDE_COLUMNS = [*AGG_COLUMNS, "is_best_match"]  # header-less spot dumps carry an 8th column

EARLIEST_MS = 1_230_940_800_000  # 2009-01-03 00:00 UTC, the first bitcoin block: no market before it
FUTURE_TOLERANCE_MS = 5_000  # the live Sanitiser's default: rows beyond now + this are refused as "future"
MAX_MS = int(pd.Timestamp.max.timestamp() * 1000)  # 2262-04-11: the end of datetime64[ns]
_CHUNK = 1 << 16


def wall_clock_ms() -> int:
    return int(time.time() * 1000)


# -- reading whole files ----------------------------------------------------------------------------------
class BadFile(ValueError):
    """A file that cannot be imported at all; str() is one line naming the file (and the line, when known)."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason


@dataclass
class Loaded:
    """What a ``load_*`` made of a file: the typed frame (one row per well-formed line, file order), the file
    line of each row (1-based, the header is line 1), and the lines left out by reason with the first one."""

    frame: pd.DataFrame
    lines: np.ndarray
    skipped: dict[str, int] = field(default_factory=dict)
    first: dict[str, int] = field(default_factory=dict)

    @property
    def read(self) -> int:
        """Data lines in the file: the rows plus the lines left out."""
        return len(self.frame) + sum(self.skipped.values())


@dataclass
class Table:
    rows: pd.DataFrame  # str columns (NaN where a field is empty)
    lines: np.ndarray
    skipped: dict[str, int]
    first: dict[str, int]


def _line_count(parts: list[bytes]) -> int:
    return sum(p.count(b"\n") for p in parts)


def _gunzip(raw: bytes, name: str) -> bytes:
    if raw[:2] != b"\x1f\x8b":
        raise BadFile(name, "not a gzip file")
    out: list[bytes] = []
    rest = raw
    while rest:
        d = zlib.decompressobj(wbits=31)
        pos = 0
        try:
            while pos < len(rest) and not d.eof:
                out.append(d.decompress(rest[pos : pos + _CHUNK]))
                pos += _CHUNK
        except zlib.error as exc:
            raise BadFile(name, f"corrupt gzip ({exc}) after line {_line_count(out)}") from None
        if not d.eof:
            done = _line_count(out)
            raise BadFile(name, f"truncated gzip: the data ends inside line {done + 1} ({done} complete lines, "
                          "unchecked: the CRC is in the missing end)")
        rest = d.unused_data + rest[pos:]
        if rest[:2] != b"\x1f\x8b":  # another gzip member follows, or the end (zero padding is tolerated)
            if rest.strip(b"\x00"):
                raise BadFile(name, f"corrupt gzip: {len(rest)} bytes of junk after its end (after line "
                              f"{_line_count(out)})")
            break
    return b"".join(out)


def _zip_member(path: Path, name: str, *, first_chunk: bool = False) -> bytes:
    """The single member of a zip, read whole and CRC-checked (or only its first chunk, for format detection)."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, EOFError, ValueError):
        raise BadFile(name, "not a zip archive (or a truncated one: its directory is missing)") from None
    with zf:
        members = [m for m in zf.infolist() if not m.is_dir()]
        if len(members) != 1:
            raise BadFile(name, f"zip must hold exactly one CSV, found {len(members)} files")
        out: list[bytes] = []
        try:
            with zf.open(members[0]) as fh:
                while chunk := fh.read(_CHUNK):
                    out.append(chunk)
                    if first_chunk:
                        break
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError) as exc:
            raise BadFile(name, f"corrupt zip member {members[0].filename} ({exc}) after line "
                          f"{_line_count(out)}") from None
    return b"".join(out)


def read_bytes(path: Path) -> bytes:
    """The whole content of a plain, .gz or single-member .zip file, decompressed and checked end to end
    (gzip and zip CRCs); BadFile when it is empty, not the archive its name says, truncated or corrupt."""
    path = Path(path)
    low = path.name.lower()
    try:
        data = _zip_member(path, path.name) if low.endswith(".zip") else path.read_bytes()
    except OSError as exc:
        raise BadFile(path.name, f"cannot read ({exc.strerror or exc})") from None
    if low.endswith(".gz") and data:
        data = _gunzip(data, path.name)
    if not data.strip():
        raise BadFile(path.name, "empty file")
    return data


def split_table(data: bytes, name: str, *, names: list[str], widths: Collection[int], header: bool,
                **read_csv) -> Table:
    """Split CSV bytes into str columns `names`, one row per line whose comma-separated field count is in
    `widths` (fewer fields than names: NaN on the right); other non-blank lines are counted as
    wrong_column_count, never parsed. `header`: line 1 is a header (not a row)."""
    data = data.replace(b"\r\n", b"\n")
    buf = np.frombuffer(data, dtype=np.uint8)
    nl = np.flatnonzero(buf == 10)
    starts = np.concatenate(([0], nl + 1))
    ends = np.concatenate((nl, [len(buf)]))
    if starts[-1] == len(buf):  # the data ends with a newline: no line after it
        starts, ends = starts[:-1], ends[:-1]
    commas = np.flatnonzero(buf == 44)
    fields = np.searchsorted(commas, ends) - np.searchsorted(commas, starts) + 1
    rows = ends > starts  # blank lines are nothing (as pandas skips them)
    if header and len(rows):
        rows[0] = False
    ok = rows & np.isin(fields, np.fromiter(widths, dtype="int64"))
    bad = rows & ~ok
    skipped, first = {}, {}
    if bad.any():
        skipped["wrong_column_count"] = int(bad.sum())
        first["wrong_column_count"] = int(np.flatnonzero(bad)[0]) + 1
        body = b"\n".join(data[a:b] for a, b in zip(starts[ok].tolist(), ends[ok].tolist(), strict=True))
    else:
        body = data[starts[1]:] if header and len(starts) > 1 else (b"" if header else data)
    if ok.any():
        table = pd.read_csv(io.BytesIO(body), header=None, names=names, dtype=str, quoting=csv.QUOTE_NONE,
                            lineterminator="\n", encoding="utf-8", encoding_errors="replace", **read_csv)
    else:
        table = pd.DataFrame({n: pd.Series([], dtype=object) for n in names})
    if len(table) != int(ok.sum()):  # a safety net: the line split and the CSV parser disagree
        raise BadFile(name, f"cannot be split into rows consistently ({len(table)} parsed, {int(ok.sum())} lines)")
    return Table(rows=table, lines=np.flatnonzero(ok) + 1, skipped=skipped, first=first)


def header_names(line: str) -> list[str]:
    """Column names of a header line; blank or repeated names get unique placeholders (pandas needs them)."""
    out: list[str] = []
    for i, n in enumerate(c.strip() for c in line.split(",")):
        out.append(n if n and n not in out else f"unnamed_{i}")
    return out


def first_line_of(data: bytes) -> str:
    return data.split(b"\n", 1)[0].decode("utf-8", errors="replace").strip()


def first_line(path: Path) -> str:
    """The first line of a plain, .gz or single-member .zip file (for format detection: only the start is
    read). BadFile when the file is empty, or not the archive its name says, or its start is corrupt."""
    path = Path(path)
    low = path.name.lower()
    try:
        if low.endswith(".zip"):
            head = _zip_member(path, path.name, first_chunk=True)
        else:
            with open(path, "rb") as fh:
                head = fh.read(_CHUNK)
            if low.endswith(".gz") and head:
                if head[:2] != b"\x1f\x8b":
                    raise BadFile(path.name, "not a gzip file")
                try:
                    head = zlib.decompressobj(wbits=31).decompress(head)
                except zlib.error as exc:
                    raise BadFile(path.name, f"corrupt gzip ({exc}) after line 0") from None
    except OSError as exc:
        raise BadFile(path.name, f"cannot read ({exc.strerror or exc})") from None
    if not head.strip():
        raise BadFile(path.name, "empty file")
    return first_line_of(head)


def _num(s: pd.Series) -> np.ndarray:
    return pd.to_numeric(s, errors="coerce").to_numpy(dtype="float64")


def _ts(s: pd.Series) -> np.ndarray:
    """ms epoch as int64; unparsable, not positive or past datetime64[ns] (2262) -> -1 (counted as bad_time by
    the sanitisers). µs values become ms."""
    x = _num(s)
    x = np.where(x >= 10**14, x / 1000.0, x)  # µs epoch (spot dumps since 2025) -> ms
    out = np.full(len(x), -1, dtype="int64")
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(x) & (x > 0) & (x <= MAX_MS)
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


def _loaded(frame: pd.DataFrame, table: Table) -> Loaded:
    return Loaded(frame=frame, lines=table.lines, skipped=table.skipped, first=table.first)


def read_agg_trades(path: Path, contract_usd: float | None = None) -> pd.DataFrame:
    """Binance Vision aggTrades -> DataFrame[ts_ms, price, amount (base), side (taker), id (agg_trade_id, str)]
    plus ``quantity`` (as in the file: contracts for COIN-M, base otherwise). See `load_agg_trades`."""
    return load_agg_trades(path, contract_usd).frame


def load_agg_trades(path: Path, contract_usd: float | None = None) -> Loaded:
    """`read_agg_trades` with the file line of each row and the lines left out (wrong column count).

    `contract_usd` overrides the contract size told by `agg_trades_market` (None = from the name). A file
    with a header has its header's column count; a header-less dump 7 or 8 (spot adds is_best_match).
    """
    path = Path(path)
    data = read_bytes(path)
    head = first_line_of(data)
    if head.lower().startswith("agg_trade_id"):
        n = len(head.split(","))
        names = [*AGG_COLUMNS, *(f"extra_{i}" for i in range(7, n))][: max(n, 7)]
        table = split_table(data, path.name, names=names, widths={n}, header=True)
    else:
        table = split_table(data, path.name, names=AGG_WIDE_COLUMNS, widths={7, 8}, header=False)
    raw = table.rows
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
    return _loaded(pd.DataFrame({
        "ts_ms": _ts(raw["transact_time"]),
        "price": price,
        "amount": amount,
        "side": _taker_side(_bool(raw["is_buyer_maker"])),
        "id": raw["agg_trade_id"].fillna("").str.strip().to_numpy(dtype=object),
        "quantity": qty,
    }), table)


def read_public_trades(path: Path) -> pd.DataFrame:
    """ccxt/freqtrade trade list (timestamp, id, side, price, amount) -> DataFrame[ts_ms, price, amount, side, id]."""
    return load_public_trades(path).frame


def load_public_trades(path: Path) -> Loaded:
    """`read_public_trades` with file lines; rows must have the header's column count."""
    path = Path(path)
    data = read_bytes(path)
    names = header_names(first_line_of(data))
    for need in ("timestamp", "id", "side", "price", "amount"):
        if need not in names:
            raise BadFile(path.name, f"public trade list without a {need!r} column (header {names!r})")
    table = split_table(data, path.name, names=names, widths={len(names)}, header=True)
    raw = table.rows
    return _loaded(pd.DataFrame({
        "ts_ms": _ts(raw["timestamp"]),
        "price": _num(raw["price"]),
        "amount": _num(raw["amount"]),
        "side": raw["side"].fillna("").str.strip().str.lower().where(lambda s: s.isin(["buy", "sell"]), ""),
        "id": raw["id"].fillna("").str.strip().to_numpy(dtype=object),
    }).astype({"side": object}), table)


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
    return load_liquidations(path).frame


def load_liquidations(path: Path) -> Loaded:
    """`read_liquidations` with file lines; a row has 12 or 13 (tier) columns."""
    path = Path(path)
    table = split_table(read_bytes(path), path.name, names=FORCE_ORDER_COLUMNS, widths={12, 13}, header=False,
                        skipinitialspace=True)
    raw = table.rows
    sym_field = raw["symbol"].fillna("").str.strip()
    # Only a field with spaces or lower-case ASCII carries junk; real ids may be non-ASCII (币安人生USDT).
    glued = sym_field.str.contains(r"[\sa-z]", regex=True)
    tail = sym_field.str.extract(r"([A-Z0-9_]+)$", expand=False).fillna("")
    raw_symbol = sym_field.where(~glued, tail)
    junk = np.array([f[: len(f) - len(s)] for f, s in zip(sym_field.tolist(), raw_symbol.tolist(), strict=True)],
                    dtype=object)
    market_id = np.array([_recorder_market_id(s) if s else "" for s in raw_symbol.tolist()], dtype=object)
    side = raw["side"].fillna("").str.strip().str.upper().map({"SELL": "long", "BUY": "short"}).fillna("")
    return _loaded(pd.DataFrame({
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
    }), table)


# -- large-trade recordings -------------------------------------------------------------------------------
def read_large_trades(path: Path) -> pd.DataFrame:
    """Large-aggTrade recorder CSV -> DataFrame[ts_ms (trade time), event_ms, market_id, symbol (ccxt USDT-M),
    price, amount (base), side (taker), id (agg_trade_id, str)] plus ``usd_size``/``tier`` (NaN when absent)."""
    return load_large_trades(path).frame


def load_large_trades(path: Path) -> Loaded:
    """`read_large_trades` with file lines; a row has 7 or 9 (usd_size, tier) columns."""
    path = Path(path)
    table = split_table(read_bytes(path), path.name, names=LARGE_COLUMNS, widths={7, 9}, header=False,
                        skipinitialspace=True)
    raw = table.rows
    market_id = raw["symbol"].fillna("").str.strip().str.upper()
    return _loaded(pd.DataFrame({
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
    }), table)


# -- format detection -------------------------------------------------------------------------------------
def detect_trade_format(path: Path) -> str | None:
    """'agg_trades' | 'liquidations' | 'large_trades' | 'public_trades', or None (not a trade-level file)."""
    try:
        line = first_line(path)
    except BadFile:
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
def _note_first(first: dict[str, int] | None, reason: str, df: pd.DataFrame, mask: np.ndarray) -> None:
    """first[reason] = the line (the frame's "line" column, else the position) of the first row in `mask`."""
    if first is not None and reason not in first:
        i = int(np.flatnonzero(mask)[0])
        first[reason] = int(df["line"].iat[i]) if "line" in df else i


def apply_checks(df: pd.DataFrame, checks: list[tuple[str, np.ndarray]], dup_cols: list[str] | None,
                 first: dict[str, int] | None = None) -> tuple[pd.DataFrame, dict[str, int]]:
    """Drop the rows any check flags, each counted once under its FIRST failing check (checks in order),
    then repeats of `dup_cols` (kept: the first) as "duplicate_in_file". Shared by every file sanitiser.
    `first` (optional) gets the first bad row of each reason (see the module docstring)."""
    skipped: dict[str, int] = {}
    bad = np.zeros(len(df), dtype=bool)
    for reason, mask in checks:
        new = mask & ~bad
        if new.any():
            skipped[reason] = int(new.sum())
            _note_first(first, reason, df, new)
            bad |= new
    df = df[~bad]
    if dup_cols:
        dup = df.duplicated(subset=dup_cols, keep="first").to_numpy()
        if dup.any():
            skipped["duplicate_in_file"] = int(dup.sum())
            _note_first(first, "duplicate_in_file", df, dup)
            df = df[~dup]
    return df.reset_index(drop=True), skipped


def _time_checks(ts: np.ndarray, now_ms: int | None) -> list[tuple[str, np.ndarray]]:
    now = wall_clock_ms() if now_ms is None else int(now_ms)
    return [("too_old", ts < EARLIEST_MS), ("future", ts > now + FUTURE_TOLERANCE_MS)]


def sanitize_trades(frame: pd.DataFrame, *, now_ms: int | None = None,
                    first: dict[str, int] | None = None) -> tuple[pd.DataFrame, dict[str, int]]:
    """(clean trades, skipped count by reason). Each bad row counts once, under its first failing check:
    bad_time, non_finite, non_positive (price or amount), bad_side, too_old (before 2009-01-03), future
    (after now_ms + 5 s; now_ms defaults to the wall clock), then duplicate_in_file (same id, per market_id
    when the frame has one; id-less rows are never duplicates). File order is kept: time order is the live
    sanitiser's business, and a row beyond now never reaches it (it would become its "newest" trade and
    make every good trade after it "out of order")."""
    df = frame.reset_index(drop=True)
    p = df["price"].to_numpy(dtype="float64")
    a = df["amount"].to_numpy(dtype="float64")
    with np.errstate(invalid="ignore"):
        checks = [
            ("bad_time", df["ts_ms"].to_numpy() <= 0),
            ("non_finite", ~np.isfinite(p) | ~np.isfinite(a)),
            ("non_positive", (p <= 0) | (a <= 0)),
            ("bad_side", ~df["side"].isin(["buy", "sell"]).to_numpy()),
            *_time_checks(df["ts_ms"].to_numpy(), now_ms),
        ]
    clean, skipped = apply_checks(df, checks, None, first)
    ids = clean["id"].astype(str)
    # ids are per market: a multi-symbol recording repeats an id only when it wrote the same trade twice
    key = clean[["market_id", "id"]].astype(str) if "market_id" in clean else ids
    dup = (key.duplicated(keep="first") & (ids != "")).to_numpy()
    if dup.any():
        skipped["duplicate_in_file"] = int(dup.sum())
        _note_first(first, "duplicate_in_file", clean, dup)
        clean = clean[~dup].reset_index(drop=True)
    return clean, skipped


def sanitize_liquidations(frame: pd.DataFrame, *, now_ms: int | None = None,
                          first: dict[str, int] | None = None) -> tuple[pd.DataFrame, dict[str, int]]:
    """(clean liquidations, skipped count by reason): bad_time, bad_symbol, bad_side, non_finite, non_positive
    (price or amount), too_old, future (as `sanitize_trades`), then duplicate_in_file (same symbol, ts, side,
    price, amount: the DB's unique key)."""
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
            *_time_checks(df["ts_ms"].to_numpy(), now_ms),
        ]
    return apply_checks(df, checks, ["symbol", "ts_ms", "side", "price", "amount"], first)


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
