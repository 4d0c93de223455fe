"""The options `manage.py backtest` and `manage.py optimize` share, in one argument group: what to run on (instrument,
dates) and how a run trades (sizing, fees, risk limits, capital, auto-disable, kill switch). Both commands used to
declare them and turn them into settings each in its own copy; a new option, or a fix to one, now reaches both.

The settings they make are the lab form's (apps.lab.services.lab_settings_validate), which a study's settings
extend; the services validate them, so this only translates the command line.
"""

import argparse
import json
from typing import Any

from django.core.management.base import CommandError

from apps.market.models import Instrument


def add_run_options(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """The shared options, as their own group in --help."""
    g = parser.add_argument_group("run", "what to run on and how the run trades (the same in backtest and optimize)")
    g.add_argument("--instrument", default="binance:BTC/USDT", help="exchange:SYMBOL (default %(default)s)")
    g.add_argument("--start", required=True, help="UTC date or date/time, inclusive")
    g.add_argument("--end", required=True, help="UTC date or date/time, exclusive")
    g.add_argument("--sizing", choices=["risk", "stake", "equity_pct"])
    g.add_argument("--stake", type=float, help="quote currency per trade (sizing stake)")
    g.add_argument("--equity-pct", type=float, help="%% of equity per trade (sizing equity_pct)")
    g.add_argument("--capital", help="start capital, quote currency (default HFT_START_CAPITAL)")
    g.add_argument("--taker-fee", type=float, help="fraction of notional (0.001 = 0.1 %%)")
    g.add_argument("--maker-fee", type=float, help="fraction of notional")
    g.add_argument("--slippage-bps", type=float, help="adverse basis points on market orders")
    g.add_argument("--limit", action="append", default=[], metavar="FIELD=VALUE",
                   help="a risk limit, e.g. max_open_positions=1 (default: the desk's limits); repeat")
    g.add_argument("--no-auto-disable", action="store_true")
    g.add_argument("--no-kill-switch", action="store_true")
    g.add_argument("--name", default="")
    return g


def instrument_from(text: str) -> Instrument:
    """--instrument exchange:SYMBOL -> the stored instrument; refused naming the known ones."""
    code, _, symbol = text.partition(":")
    inst = Instrument.objects.select_related("exchange").filter(exchange__code=code, symbol=symbol).first()
    if inst is None:
        known = ", ".join(str(i) for i in Instrument.objects.select_related("exchange")) or "none"
        raise CommandError(f"no instrument {text!r} (known: {known}); import or download its history first")
    return inst


def run_settings(o: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """`data` (the settings so far, e.g. a preset's) with the shared options laid over it: an option given
    replaces the one key it names, the rest of that part (sizing, fee, limits) stays."""
    sizing = dict(data.get("sizing") or {})
    sizing.update({k: o[opt] for k, opt in (("mode", "sizing"), ("stake", "stake"), ("equity_pct", "equity_pct"))
                   if o[opt] is not None})
    if sizing:
        data["sizing"] = sizing
    fee = dict(data.get("fee") or {})
    fee.update({k: o[k] for k in ("taker_fee", "maker_fee", "slippage_bps") if o[k] is not None})
    if fee:
        data["fee"] = fee
    limits = dict(data.get("limits") or {})
    for spec in o["limit"]:
        key, _, value = spec.partition("=")
        try:
            limits[key] = json.loads(value)
        except json.JSONDecodeError:
            raise CommandError(f"--limit {spec!r}: the value must be a number or true/false") from None
    if limits:
        data["limits"] = limits
    if o["capital"] is not None:
        data["start_capital"] = o["capital"]
    if o["no_auto_disable"]:
        data["auto_disable"] = False
    if o["no_kill_switch"]:
        data["kill_switch"] = False
    return data


def refused(write, errors: dict[str, list[str]]) -> CommandError:
    """Each refused field's messages written (to stderr), and the error the command raises (exit status 1)."""
    for field, msgs in errors.items():
        for m in msgs:
            write(f"{field}: {m}")
    return CommandError("the request was refused")
