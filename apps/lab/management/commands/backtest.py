"""`python manage.py backtest`: a lab run from the terminal, the same options as the lab's form, run inline
through the same services (`lab_run_create` + `lab_run_execute`), stored like any run (source "command"),
then the summary and the success criteria printed and the trades written as CSV.

    manage.py backtest --instrument binance:BTC/USDT --start 2025-05-20 --end 2025-08-19 \\
        --ghost spike_fader --ghost 'trend_filter:{"fast_periods": 40}' --direction spike_fader=long \\
        --sizing stake --stake 1000 --capital 10000 --taker-fee 0.001 --slippage-bps 0 \\
        --no-auto-disable --no-kill-switch --csv trades.csv
    manage.py backtest --preset textbook --start 2025-05-20 --end 2025-08-19 --csv textbook.csv

Exit status 1 when the request is refused (the messages per field) or the run fails.
"""

import csv
import json
import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from apps.lab.management.run_options import add_run_options, instrument_from, refused, run_settings
from apps.lab.models import BacktestRun, BacktestTrade
from apps.lab.services import LabError, lab_run_create, lab_run_execute

CSV_COLUMNS = ["seq", "ghost", "kind", "side", "signal_time", "entry_time", "entry_price", "exit_time", "exit_price",
               "qty", "entry_fee", "exit_fee", "gross_pnl", "net_pnl", "return_pct", "reason"]


def parse_ghost(text: str) -> dict[str, Any]:
    """`kind` or `kind:{json params}` -> {"kind", "params"}."""
    kind, sep, params = text.partition(":")
    out: dict[str, Any] = {"kind": kind.strip()}
    if sep:
        try:
            out["params"] = json.loads(params)
        except json.JSONDecodeError as e:
            raise CommandError(f"--ghost {text!r}: params are not JSON ({e.msg})") from None
    return out


def preset_textbook(*, long_only: bool) -> dict[str, Any]:
    """The textbook rules of issue 9 as lab settings: Part A's `textbook_setup` (one textbook_fader ghost,
    stake 1,000, fee 0.1 % each side, no slippage, one position, no auto-disable, no kill switch)."""
    import dataclasses

    from apps.engine.presets import textbook_setup

    setups, cfg = textbook_setup(long_only=long_only)
    return {
        "ghosts": [{"kind": g.kind, "name": g.name, "params": g.resolved_config().to_params(),
                    "direction": g.direction} for g in setups],
        "fee": dataclasses.asdict(cfg.model), "limits": cfg.limits.to_params(),
        "sizing": dataclasses.asdict(cfg.sizing), "auto_disable": cfg.auto_disable, "kill_switch": cfg.kill_switch,
        "start_capital": str(cfg.start_capital),
    }


class Command(BaseCommand):
    help = ("Run a lab backtest inline (same options and services as the lab page), store it, print the summary "
            "and the success criteria, and write the trades as CSV.")

    def add_arguments(self, parser):
        add_run_options(parser)  # instrument, dates, sizing, fees, limits, capital...: shared with optimize
        parser.add_argument("--ghost", action="append", default=[], metavar="KIND[:JSON]",
                            help="a ghost, with optional params as JSON; repeat for several")
        parser.add_argument("--direction", action="append", default=[], metavar="KIND_OR_NAME=both|long|short")
        parser.add_argument("--preset", choices=["textbook"], help="textbook: the issue's textbook rules")
        parser.add_argument("--long-only", action="store_true", help="with --preset textbook: longs only")
        parser.add_argument("--csv", type=Path, help="write the run's trades here")

    def handle(self, *args, **o):
        inst = instrument_from(o["instrument"])
        data: dict[str, Any] = {"instrument_id": inst.pk, "start": o["start"], "end": o["end"]}
        if o["preset"] == "textbook":
            data.update(preset_textbook(long_only=o["long_only"]))
        if o["ghost"]:
            data["ghosts"] = [parse_ghost(g) for g in o["ghost"]]
        for spec in o["direction"]:
            who, _, side = spec.partition("=")
            hit = [g for g in data.get("ghosts", []) if who in (g["kind"], g.get("name"))]
            if not hit:
                raise CommandError(f"--direction {spec!r}: no ghost {who!r} in the run")
            for g in hit:
                g["direction"] = side
        run_settings(o, data)
        try:
            run = lab_run_create(actor=None, settings=data, name=o["name"], source="command", queue=False)
        except LabError as e:
            raise refused(self.stderr.write, e.errors) from None
        self.stderr.write(f"run {run.pk}: {run.bars_total:,} bars of {inst}, fingerprint {run.fingerprint[:12]}")
        run = lab_run_execute(run_id=run.pk, on_stage=lambda s: self.stderr.write(f"  {s} ..."))
        if run.status != BacktestRun.Status.DONE:
            raise CommandError(f"run {run.pk} {run.status}: {run.error}")
        run = BacktestRun.objects.get(pk=run.pk)
        self._print(run)
        if o["csv"]:
            n = write_trades_csv(run, o["csv"])
            self.stdout.write(f"{n} trades written to {o['csv']}")

    def _print(self, run: BacktestRun) -> None:
        w = self.stdout.write
        s = run.summary
        w(f"run {run.pk} {run.name}: {s['bars']:,} bars {s['first_bar']} .. {s['last_bar']}")
        for f in s["figures"]:
            extra = f"  ({f['na_why']})" if f["na_why"] else ""
            w(f"  {f['label']:<24} {f['display']}{extra}")
        dd = s["drawdown"]
        if dd["peak"]:
            w(f"  drawdown: peak {dd['peak']}, trough {dd['trough']}, recovered {dd['recovery'] or 'not by the end'}")
        for note in s["notes"]:
            w(f"  note: {note}")
        w("ghosts:")
        for g in run.ghost_figures:
            fates = ", ".join(f"{k} {v}" for k, v in sorted(g["fates"].items())) or "no drafts"
            wr = "n/a" if g["win_rate"] is None else f"{g['win_rate']:.1f} %"
            w(f"  {g['ghost']} ({g['kind']}): {g['trades']} trades, win rate {wr}, net {g['net_pnl']:+.2f}; "
              f"drafts {g['longs']} long / {g['shorts']} short: {fates}")
            if g["disabled"]:
                w(f"    auto-disabled {g['disabled']['time']}: {'; '.join(g['disabled']['reasons'])}")
            if g["longs"] + g["shorts"] == 0 and g["idle_reason"]:
                w(f"    idle: {g['idle_reason']}")
        w("success criteria:")
        for c in run.criteria:
            w(f"  phase {c['phase']} {'PASS' if c['passed'] else 'FAIL'}  {c['text']}")


def write_trades_csv(run: BacktestRun, path: Path) -> int:
    """The run's trades as CSV (times ISO-8601 UTC, money as stored); returns the row count."""
    rows = BacktestTrade.objects.filter(run=run).order_by("seq").values_list(*CSV_COLUMNS)
    out = sys.stdout if str(path) == "-" else path.open("w", newline="")
    n = 0
    try:
        wr = csv.writer(out)
        wr.writerow(CSV_COLUMNS)
        for r in rows:
            r = list(r)
            r[3] = "long" if r[3] > 0 else "short"
            for k in (4, 5, 7):
                r[k] = r[k].isoformat()
            wr.writerow(r)
            n += 1
    finally:
        if out is not sys.stdout:
            out.close()
    return n
