"""`python manage.py check_ghost NAME [DATA_FILE] [--dir DIR] [--params JSON]`: the plug-in guards on real data.

NAME: a ghost module file (path/to/ghost.py), a plug-in in --dir (default HFT_GHOSTS_DIR, else plugins/) as
NAME.py or a NAME/ package, or a registered kind (built in, or an installed package's entry point).
DATA_FILE: a 1-minute kline file (Binance Vision, Binance API or freqtrade CSV, as import_market_data reads);
default: the 90-day BTC/USDT file of the shared data kit ($MARKET_DATA_DIR, else ../shared/data).

Runs apps.engine.plugins.check_spec: contract, exceptions, input mutation, drafts, NaN handling, look-ahead
(truncated against full series), live window against whole series; prints warm-up, drafts per day and speed.
Exits 1 with the reason on the first failure (CommandError), 0 when every check passed.
"""

import json
import os
import time
from pathlib import Path

import pandas as pd
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.engine import registry
from apps.engine.plugins import check_spec, spec_from_object
from apps.ghosts.plugins import import_plugin_file

DEFAULT_DATA = "klines/freqtrade/binance_spot_BTCUSDT_1m_2025-05-20_2025-08-18__filimonov.csv.gz"


def data_path(arg: str | None) -> Path:
    if arg:
        path = Path(arg)
        if path.is_file():
            return path
        for root in (os.environ.get("MARKET_DATA_DIR"), settings.MARKET_DATA_DIR, str(_kit())):
            if root and (Path(root) / arg).is_file():
                return Path(root) / arg
        raise CommandError(f"data file {arg} not found (nor under MARKET_DATA_DIR or {_kit()})")
    for root in (os.environ.get("MARKET_DATA_DIR"), settings.MARKET_DATA_DIR, str(_kit())):
        if root and (Path(root) / DEFAULT_DATA).is_file():
            return Path(root) / DEFAULT_DATA
    raise CommandError(f"no data file given and the default {DEFAULT_DATA} is not under MARKET_DATA_DIR or "
                       f"{_kit()}: name a 1-minute kline file")


def _kit() -> Path:
    return Path(__file__).resolve().parents[4].parent / "shared" / "data"  # the repository's sibling


def bars_from_file(path: Path) -> pd.DataFrame:
    """Engine bars from a kline file: parsed and sanitised as import_market_data does; taker sell = volume - buy."""
    from apps.market import importers
    from apps.market.parsers_trades import BadFile

    try:
        loaded = importers.load_klines(path)
    except BadFile as exc:
        raise CommandError(f"{path}: {exc}") from None
    clean, _ = importers.sanitize(loaded.frame)
    if clean.empty:
        raise CommandError(f"{path}: no valid 1-minute bars")
    tf = importers.timeframe_from_spacing(clean)
    if tf not in (None, "1m"):
        raise CommandError(f"{path}: ghosts run on 1-minute bars, this file is {tf}")
    idx = pd.DatetimeIndex(clean["open_time"], name="open_time")
    buy = clean["taker_buy_volume"].to_numpy()
    return pd.DataFrame({"open": clean["open"].to_numpy(), "high": clean["high"].to_numpy(),
                         "low": clean["low"].to_numpy(), "close": clean["close"].to_numpy(),
                         "volume": clean["volume"].to_numpy(), "taker_buy_volume": buy,
                         "taker_sell_volume": clean["volume"].to_numpy() - buy,
                         "trades": clean["trade_count"].to_numpy()}, index=idx).sort_index()


def find_spec(name: str, folder: Path):
    """(spec, where it came from)."""
    path = Path(name)
    candidates = [path] if path.suffix == ".py" else [folder / f"{name}.py", folder / name / "__init__.py"]
    for p in candidates:
        if p.is_file():
            origin = p.parent if p.name == "__init__.py" else p
            try:
                module = import_plugin_file(p, origin)
            except Exception as exc:
                raise CommandError(f"{p} does not import: {type(exc).__name__}: {exc}") from None
            try:
                return spec_from_object(module, origin=str(p)), str(p)
            except ValueError as exc:
                raise CommandError(str(exc)) from None
    if name in registry.GHOSTS:
        return registry.GHOSTS[name], "the registry"
    raise CommandError(f"no ghost {name!r}: not a .py file, not in {folder} ({name}.py or {name}/), "
                       f"not a registered kind ({', '.join(registry.GHOSTS)})")


class Command(BaseCommand):
    help = "Run the plug-in guards (look-ahead, mutation, exceptions, NaN, live = backtest) on real data."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="ghost file, plug-in name in --dir, or registered kind")
        parser.add_argument("data", nargs="?", default=None, help="1-minute kline file (default: 90-day BTC/USDT)")
        parser.add_argument("--dir", type=Path, default=None,
                            help="plug-in folder (default: HFT_GHOSTS_DIR or plugins/)")
        parser.add_argument("--params", default=None, help="JSON params to check instead of the defaults")
        parser.add_argument("--cuts", type=int, default=25, help="look-ahead cuts (default 25)")

    def handle(self, *args, **o) -> None:
        folder = o["dir"] or Path(settings.HFT_GHOSTS_DIR or "plugins")
        spec, where = find_spec(o["name"], folder)
        cfg = None
        if o["params"]:
            try:
                cfg = spec.config_cls.from_params(json.loads(o["params"]))
            except (ValueError, TypeError) as exc:
                raise CommandError(f"--params: {exc}") from None
        path = data_path(o["data"])
        t0 = time.perf_counter()
        bars = bars_from_file(path)
        self.stdout.write(f"{spec.kind} ({spec.title}) from {where}\n"
                          f"data: {path} ({len(bars):,} bars {bars.index[0]} .. {bars.index[-1]}, "
                          f"read in {time.perf_counter() - t0:.1f} s)")
        taken = [k for k in registry.GHOSTS if k != spec.kind]
        t0 = time.perf_counter()
        report = check_spec(spec, bars, cfg, taken=taken, n_cuts=o["cuts"])
        for line in report.lines():
            self.stdout.write(line.splitlines()[0] if not line.startswith("FAIL") else line)
        self.stdout.write(f"checked in {time.perf_counter() - t0:.1f} s; load {os.getloadavg()[0]:.1f}")
        if not report.ok:
            raise CommandError(f"{spec.kind} fails the plug-in guards: {report.reason}")
        self.stdout.write(self.style.SUCCESS(f"{spec.kind}: every check passed"))
