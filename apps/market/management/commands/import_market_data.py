"""`python manage.py import_market_data PATH...`: every file format of ../shared/data into the database.

* kline files (Binance Vision zip/CSV in ms or µs, Binance API CSV, freqtrade OHLCV) -> Candle;
* aggTrades (Binance Vision zip/CSV) and ccxt trade lists -> 1m Candle through the live Sanitiser and
  BarBuilder (exact taker split, trade count, whale volume by the instrument's rule) + LargeTrade rows for
  the whale trades. COIN-M files (BTCUSD_PERP...) go to binancecoinm ``BTC/USD:BTC`` with quantities turned
  from 100 USD contracts into BTC; USDT-M (a ``um`` folder or ``usdm`` in the name) to binanceusdm, else
  binance spot;
* large-trade recordings -> LargeTrade rows, one binanceusdm instrument per symbol (no bars: they hold
  the large trades only);
* forceOrder liquidation recordings -> LiquidationEvent rows (by default for BTC/USDT:USDT, ETH/USDT:USDT
  and the binanceusdm instruments already in the database; ``--liq-symbols all`` takes the ~250 symbols),
  then the liq volumes of stored 1m candles in the minutes the recording covers
  (services.candles_liquidations_apply). Liquidation files are processed last, so candles imported in the
  same run get their liquidation volumes.

Idempotent: every write is insert-or-ignore on the model's unique key. Each file reports rows read, stored
and skipped by reason, and the first bad line of each reason (lines count from 1, the header included).

Bad files never end in a traceback and never store anything wrong:
* a file that cannot be read as a whole (empty, not the zip/gzip its name says, a zip not holding exactly
  one file, truncated, corrupt, an unknown format, a market the name does not tell) is refused: nothing of
  it is stored, the other files of the run are imported, and the command ends in a CommandError with one
  line per refused file naming it (and the line, when the damage has one);
* a bad row is skipped and counted: wrong column count, a time that does not parse or lies outside
  2009-01-03 .. now + 5 s (a candle must also have closed by then; an aggTrade beyond now never becomes the
  aggregation's newest trade, so the good trades after it are kept), values the sanitisers refuse;
* a file with no good row (a header-only file) stores nothing and creates no instrument.
"""

import time
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from apps.market import importers
from apps.market import parsers_trades as pt
from apps.market.models import Instrument
from apps.market.services import (
    candles_from_trades_store,
    candles_import,
    candles_liquidations_apply,
    instrument_ensure,
    large_trades_store,
    liquidations_store,
    recording_segments,
)

__all__ = ["Command", "instrument_ensure"]
DEFAULT_LIQ_SYMBOLS = ("BTC/USDT:USDT", "ETH/USDT:USDT")
_ORDER = {"klines": 0, "agg_trades": 1, "public_trades": 1, "large_trades": 2, "liquidations": 3}


_NOT_BAD = {"symbol_not_selected"}  # rows left out by choice, not for being wrong: no line to point at


def _reasons(skipped: dict[str, int], first: dict[str, int] | None = None) -> str:
    """``skipped N (reason=count, ...)``, then ``; first bad line: reason=line, ...`` when lines are known."""
    n = sum(skipped.values())
    text = f"skipped {n} ({', '.join(f'{k}={v}' for k, v in sorted(skipped.items())) or 'none'})"
    lines = {k: v for k, v in (first or {}).items() if k in skipped and k not in _NOT_BAD}
    if lines:
        text += f"; first bad line: {', '.join(f'{k}={v}' for k, v in sorted(lines.items()))}"
    return text


def _refusal(exc: pt.BadFile) -> str:
    return f"{exc.name}: refused, {exc.reason}; nothing stored"


def _with_lines(loaded: pt.Loaded):
    """The loaded frame with its file lines as a "line" column (the sanitisers name bad rows by it)."""
    return loaded.frame.assign(line=loaded.lines)


def _merge(*dicts: dict[str, int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for d in dicts:
        for k, v in d.items():
            out[k] = out.get(k, 0) + int(v)
    return out


def trade_market(path: Path, exchange: str | None, symbol: str | None) -> tuple[str | None, str | None, float | None]:
    """(exchange code, ccxt symbol, COIN-M contract USD or None) of an aggTrades file, flags first."""
    kind, contract = pt.agg_trades_market(path)
    if kind == "coinm":
        m = pt._COINM_RE.search(path.name) or pt._COINM_RE.search(path.parent.name)
        base, expiry = (m.group(1), m.group(2)) if m else ("BTC", "PERP")
        sym = f"{base}/USD:{base}" + ("" if expiry == "PERP" else f"-{expiry}")
        return exchange or "binancecoinm", symbol or sym, contract
    info = importers.infer_file_info(path)
    # <SYMBOL>-aggTrades-<date> is data.binance.vision's naming: spot unless a um/usdm folder or name says so
    vision = "binance" if "-aggtrades-" in path.name.lower() else None
    return exchange or info.exchange or vision, symbol or info.symbol, None


class Command(BaseCommand):
    help = (
        "Import market data files: klines (Binance Vision zip/CSV, Binance API CSV, freqtrade OHLCV CSV[.gz]) "
        "-> candles; aggTrades zip/CSV and ccxt trade lists -> 1m candles + large trades; large-trade "
        "recordings -> large trades; forceOrder liquidation recordings -> liquidation events + candle liq "
        "volumes. Idempotent. Exchange, symbol and timeframe come from the file name unless given."
    )

    def add_arguments(self, parser):
        parser.add_argument("paths", nargs="+", metavar="PATH")
        parser.add_argument("--exchange", help="ccxt exchange id, e.g. binance, binanceusdm (single-market files)")
        parser.add_argument("--symbol", help="ccxt unified symbol, e.g. BTC/USDT or BTC/USDT:USDT")
        parser.add_argument("--timeframe", help="bar timeframe of a kline file, e.g. 1m, 1h (default: file name)")
        parser.add_argument(
            "--liq-symbols",
            default="",
            help="liquidations: 'all', or ccxt symbols comma-separated (default: BTC/USDT:USDT, ETH/USDT:USDT "
            "and every binanceusdm instrument already stored)",
        )

    def handle(self, *args, paths, exchange=None, symbol=None, timeframe=None, liq_symbols="", **options):
        for raw in paths:
            if not Path(raw).is_file():
                raise CommandError(f"{raw}: no such file")
        jobs, refused = [], []
        for raw in paths:
            path = Path(raw)
            try:
                kind = pt.detect_trade_format(path)
                if kind is None:
                    importers.detect_format(path)
                    kind = "klines"
            except pt.BadFile as exc:
                refused.append(_refusal(exc))
                continue
            jobs.append((_ORDER[kind], len(jobs), kind, path))
        for _, _, kind, path in sorted(jobs):
            started = time.perf_counter()
            try:
                if kind == "klines":
                    line = self._klines(path, exchange, symbol, timeframe)
                elif kind in ("agg_trades", "public_trades"):
                    line = self._trades(path, kind, exchange, symbol)
                elif kind == "large_trades":
                    line = self._large_trades(path)
                else:
                    line = self._liquidations(path, liq_symbols)
            except pt.BadFile as exc:
                refused.append(_refusal(exc))
                continue
            self.stdout.write(f"{line}, {time.perf_counter() - started:.2f}s")
        if refused:
            if len(paths) == 1:
                raise CommandError(refused[0])
            raise CommandError(f"{len(refused)} of {len(paths)} files refused:\n" + "\n".join(refused))

    # -- klines ----------------------------------------------------------------------------------------
    def _klines(self, path: Path, exchange, symbol, timeframe) -> str:
        fmt = importers.detect_format(path)
        loaded = importers.load_klines(path, fmt)
        frame = _with_lines(loaded)
        info = importers.infer_file_info(path)
        ex_code = exchange or info.exchange
        sym = symbol or info.symbol
        tf = timeframe or info.timeframe or importers.timeframe_from_spacing(frame)
        missing = [name for name, v in (("--exchange", ex_code), ("--symbol", sym), ("--timeframe", tf)) if not v]
        if missing:
            raise pt.BadFile(path.name, f"cannot tell {', '.join(missing)} from the file name; pass it")
        first = dict(loaded.first)
        clean, skipped = importers.sanitize(frame, timeframe=tf, first=first)
        skipped = _merge(loaded.skipped, skipped)
        head = f"{path.name} [{fmt}] -> {ex_code}:{sym} {tf}: read {loaded.read}"
        if clean.empty:
            return f"{head}, stored 0, {_reasons(skipped, first)}; no good row: no instrument created"
        inst = instrument_ensure(exchange_code=ex_code, symbol=sym)
        report = candles_import(instrument=inst, frame=clean, timeframe=tf)
        return f"{head}, stored {report.stored}, {_reasons(_merge(skipped, report.skipped), first)}"

    # -- trades -> bars --------------------------------------------------------------------------------
    def _trades(self, path: Path, kind: str, exchange, symbol) -> str:
        if kind == "agg_trades":
            ex_code, sym, contract = trade_market(path, exchange, symbol)
            label = f"agg_trades, COIN-M {contract:g} USD contracts -> base" if contract else "agg_trades"
        else:
            ex_code, sym, label, contract = exchange, symbol, "public_trades", None
        if not (ex_code and sym):
            raise pt.BadFile(path.name, "cannot tell the market from the file name; pass --exchange and --symbol")
        loaded = (pt.load_agg_trades(path, contract_usd=contract) if kind == "agg_trades"
                  else pt.load_public_trades(path))
        frame = _with_lines(loaded)
        first = dict(loaded.first)
        clean, skipped = pt.sanitize_trades(frame, first=first)
        skipped = _merge(loaded.skipped, skipped)
        head = f"{path.name} [{label}] -> {ex_code}:{sym} 1m: trades read {loaded.read}"
        if clean.empty:
            return f"{head}, aggregated 0, {_reasons(skipped, first)}; no good row: no instrument created"
        inst = instrument_ensure(exchange_code=ex_code, symbol=sym)
        t0 = time.perf_counter()
        built = importers.bars_from_trades(
            clean,
            whale_notional=float(inst.whale_notional),
            whale_median_multiple=float(inst.whale_median_multiple),
        )
        first.update({k: v for k, v in built.first.items() if k not in first})
        rate = len(clean) / max(time.perf_counter() - t0, 1e-9)
        stored = candles_from_trades_store(instrument=inst, bars=built.bars, timeframe="1m")
        large = large_trades_store(instrument=inst, trades=built.large, source=path.name)
        rule = f">= {inst.whale_notional:f} {inst.quote}".replace(".00 ", " ")
        if inst.whale_median_multiple > 0:
            rule += f" and >= {inst.whale_median_multiple:f}x rolling median size"
        reanchored = f"; price band re-anchored on {built.reanchored} trade(s)" if built.reanchored else ""
        return (
            f"{head}, aggregated {built.accepted}, {_reasons(_merge(skipped, built.rejected), first)}{reanchored}; "
            f"bars built {len(built.bars)}, stored {stored}; "
            f"large trades ({rule}) {len(built.large)}, stored {large}; aggregation {rate:,.0f} trades/s"
        )

    # -- large-trade recordings ------------------------------------------------------------------------
    def _large_trades(self, path: Path) -> str:
        loaded = pt.load_large_trades(path)
        first = dict(loaded.first)
        clean, skipped = pt.sanitize_trades(_with_lines(loaded), first=first)
        skipped = _merge(loaded.skipped, skipped)
        bad = (clean["symbol"] == "").to_numpy()
        if bad.any():
            skipped = _merge(skipped, {"bad_symbol": int(bad.sum())})
            first.setdefault("bad_symbol", int(clean["line"].to_numpy()[bad][0]))
            clean = clean[~bad]
        parts, stored = [], 0
        for sym, rows in clean.groupby("symbol", sort=True):
            inst = instrument_ensure(exchange_code="binanceusdm", symbol=sym)
            n = large_trades_store(instrument=inst, trades=rows, source=path.name)
            stored += n
            parts.append(f"{sym} {n}/{len(rows)}")
        return (
            f"{path.name} [large_trades] -> binanceusdm: read {loaded.read}, stored {stored}, "
            f"{_reasons(skipped, first)}; per symbol stored/clean: {', '.join(parts) or 'none'}"
        )

    # -- liquidation recordings ------------------------------------------------------------------------
    def _liquidations(self, path: Path, liq_symbols: str) -> str:
        loaded = pt.load_liquidations(path)
        frame = loaded.frame
        first = dict(loaded.first)
        clean, skipped = pt.sanitize_liquidations(_with_lines(loaded), first=first)
        skipped = _merge(loaded.skipped, skipped)
        junk = int((frame["junk_prefix"] != "").sum())
        if liq_symbols.strip().lower() != "all":
            wanted = {s.strip() for s in liq_symbols.split(",") if s.strip()} or set(DEFAULT_LIQ_SYMBOLS)
            if not liq_symbols.strip():
                wanted |= set(
                    Instrument.objects.filter(exchange__code="binanceusdm").values_list("symbol", flat=True)
                )
            keep = clean["symbol"].isin(wanted).to_numpy()
            if (~keep).any():
                skipped = _merge(skipped, {"symbol_not_selected": int((~keep).sum())})
            selected = clean[keep]
        else:
            selected = clean
        # the recording's coverage is told by every symbol's events, imported or not
        segments = recording_segments(clean["ts_ms"].to_numpy())
        stored, parts, liq_set = 0, [], 0
        for sym, rows in selected.groupby("symbol", sort=True):
            inst = instrument_ensure(exchange_code="binanceusdm", symbol=sym)
            n = liquidations_store(instrument=inst, events=rows, source=path.name)
            stored += n
            liq_set += candles_liquidations_apply(instrument=inst, segments=segments)
            parts.append(f"{sym} {n}/{len(rows)}")
        covered = sum((b // 60_000 - a // 60_000 + 1) for a, b in segments)
        return (
            f"{path.name} [liquidations] -> binanceusdm: read {loaded.read}, stored {stored}, "
            f"{_reasons(skipped, first)}"
            f"{f'; junk prefix cut from {junk} row(s)' if junk else ''}; per symbol stored/clean: "
            f"{', '.join(parts) or 'none'}; recording covers {covered} min in {len(segments)} segment(s), "
            f"candle liq volumes set on {liq_set}"
        )
