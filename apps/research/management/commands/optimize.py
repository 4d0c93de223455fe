"""`python manage.py optimize`: a parameter study from the terminal, with the study form's options, through the
same services (`study_create`, then `study_run_inline`, or the `research` workers with --workers), stored like
any study; then the fold table (in-sample vs out-of-sample) and the out-of-sample headline are printed.

    manage.py optimize --instrument binance:BTC/USDT --start 2025-05-20 --end 2025-08-18 --ghost spike_fader \\
        --space spike_threshold_pct=0.8:2.0:0.1 --space take_profit_pct=0.4:1.2 \\
        --objective sharpe --min-trades 5 --scheme rolling --train-days 30 --test-days 12 \\
        --sampler tpe --seed 1 --trials 50 --sizing stake --stake 1000
    manage.py optimize ... --desk --space spike_fader.spike_threshold_pct=0.8:2.0 --minutes 10 --workers

Without --space the ghost's default space (each numeric field 0.5x..2x its default, within its bounds).
Exit status 1 when the request is refused (the messages per field) or the study fails.
"""

import json
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from apps.lab.management.run_options import add_run_options, instrument_from, refused, run_settings
from apps.research.events import progress_payload
from apps.research.models import Study
from apps.research.services import ResearchError, study_create, study_run_inline


def parse_range(text: str) -> dict[str, Any]:
    """`name=low:high[:step]`, `name=a|b|c` (choices) or `name=bool` -> a search-space row."""
    name, sep, rhs = text.partition("=")
    if not sep or not name.strip():
        raise CommandError(f"--space {text!r}: use name=low:high[:step], name=a|b|c or name=bool")
    name, rhs = name.strip(), rhs.strip()
    if rhs == "bool":
        return {"name": name, "kind": "bool"}
    if "|" in rhs:
        return {"name": name, "kind": "choice", "choices": [json.loads(c) if c[:1].isdigit() or c[:1] == "-" else c
                                                            for c in rhs.split("|")]}
    parts = rhs.split(":")
    if len(parts) not in (2, 3):
        raise CommandError(f"--space {text!r}: use name=low:high[:step]")
    try:
        nums = [json.loads(p) for p in parts]
    except json.JSONDecodeError:
        raise CommandError(f"--space {text!r}: low, high and step must be numbers") from None
    row: dict[str, Any] = {"name": name, "low": nums[0], "high": nums[1]}
    if len(nums) == 3:
        row["step"] = nums[2]
    return row


def _fmt(v: Any, places: int = 3) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:,.{places}f}"
    return str(v)


class Command(BaseCommand):
    help = ("Run a walk-forward parameter study (optuna, one study per fold), inline or on the research workers, "
            "store it, and print the folds (in-sample vs out-of-sample) and the out-of-sample headline.")

    def add_arguments(self, parser):
        add_run_options(parser)  # instrument, dates, sizing, fees, limits, capital...: shared with backtest
        who = parser.add_mutually_exclusive_group(required=True)
        who.add_argument("--ghost", metavar="KIND", help="search this ghost's parameters (the run holds it alone)")
        who.add_argument("--desk", action="store_true", help="search the whole desk (every desk ghost)")
        parser.add_argument("--fixed", action="append", default=[], metavar="KIND:JSON",
                            help='fixed params of a searched ghost, e.g. spike_fader:{"cooldown_seconds": 600}')
        parser.add_argument("--space", action="append", default=[], metavar="NAME=LOW:HIGH[:STEP]",
                            help="a searched range (desk: kind.field); repeat; default: the ghost's default space")
        parser.add_argument("--objective", default="sharpe",
                            choices=["sharpe", "sortino", "profit_factor", "net_pnl", "calmar"])
        parser.add_argument("--min-trades", type=int, default=5, help="per window (default %(default)s)")
        parser.add_argument("--scheme", default="rolling", choices=["rolling", "anchored"])
        parser.add_argument("--train-days", type=int, default=30)
        parser.add_argument("--test-days", type=int, default=10)
        parser.add_argument("--step-days", type=int, help="default: the test length")
        parser.add_argument("--sampler", default="tpe", choices=["tpe", "grid", "random"])
        parser.add_argument("--seed", type=int, default=1)
        budget = parser.add_mutually_exclusive_group()
        budget.add_argument("--trials", type=int, help="trials PER FOLD (default 50)")
        budget.add_argument("--minutes", type=float, help="wall minutes for the whole study")
        parser.add_argument("--batch-size", type=int, default=8, help="trials asked at once per fold (fixed: the "
                                                                       "result does not depend on the workers)")
        parser.add_argument("--workers", action="store_true",
                            help="queue it for the research workers and wait (default: run it in this process)")

    def handle(self, *args, **o):
        inst = instrument_from(o["instrument"])
        data: dict[str, Any] = {
            "instrument_id": inst.pk, "start": o["start"], "end": o["end"],
            "target": "desk" if o["desk"] else o["ghost"], "objective": o["objective"],
            "min_trades": o["min_trades"], "scheme": o["scheme"], "train_days": o["train_days"],
            "test_days": o["test_days"], "step_days": o["step_days"], "sampler": o["sampler"], "seed": o["seed"],
            "batch_size": o["batch_size"],
        }
        if o["minutes"] is not None:
            data["budget_minutes"] = o["minutes"]
        elif o["trials"] is not None:
            data["budget_trials"] = o["trials"]
        if o["space"]:
            data["space"] = [parse_range(t) for t in o["space"]]
        fixed: dict[str, Any] = {}
        for spec in o["fixed"]:
            kind, sep, raw = spec.partition(":")
            try:
                fixed[kind.strip()] = json.loads(raw) if sep else None
            except json.JSONDecodeError as e:
                raise CommandError(f"--fixed {spec!r}: params are not JSON ({e.msg})") from None
        if fixed:
            data["fixed"] = fixed
        run_settings(o, data)
        try:
            study = study_create(actor=None, settings=data, name=o["name"], queue=o["workers"])
        except ResearchError as e:
            raise refused(self.stderr.write, e.errors) from None
        total = study.trials_total or "?"
        self.stderr.write(f"study {study.pk}: {len(study.folds)} folds, {total} trials, "
                          f"space {', '.join(r['name'] for r in study.settings['space'])}")
        t0 = time.perf_counter()
        if o["workers"]:
            study = self._wait(study)
        else:
            last = [0.0]

            def on_trial(_t) -> None:
                if time.perf_counter() - last[0] >= 2:
                    last[0] = time.perf_counter()
                    s = Study.objects.get(pk=study.pk)
                    self.stderr.write(f"  {s.trials_done}/{total} trials ({time.perf_counter() - t0:.1f} s)")

            study = study_run_inline(study_id=study.pk, on_trial=on_trial)
        wall = time.perf_counter() - t0
        if study.status != Study.Status.DONE:
            raise CommandError(f"study {study.pk} {study.status}: {study.error}")
        self._print(study, wall)

    def _wait(self, study: Study) -> Study:
        """Poll the study until it ends, printing its progress every 2 s (a worker must consume `research`)."""
        last = 0.0
        while True:
            study = Study.objects.get(pk=study.pk)
            if not study.is_active:
                return study
            if time.monotonic() - last >= 2:
                last = time.monotonic()
                p = progress_payload(study)
                eta = f", ETA {p['eta_s']:.0f} s" if p["eta_s"] is not None else ""
                self.stderr.write(f"  {study.status}: {p['trials_done']}/{p['trials_total'] or '?'} trials{eta}")
            time.sleep(0.2)

    def _print(self, study: Study, wall: float) -> None:
        w = self.stdout.write
        r = study.results
        n = r["trials"]
        w(f"study {study.pk} {study.name}: {n['total']} trials ({n['done']} done, {n['infeasible']} infeasible, "
          f"{n['failed']} failed, {n['undefined']} without a defined {r['objective']}) in {wall:.1f} s "
          f"({n['total'] / wall if wall else 0:.1f} trials/s)")
        w(f"objective: {r['formula']}")
        w(f"{'fold':>4}  {'train':<23}  {'test':<23}  {'IS':>9}  {'OOS':>9}  {'degr.':>9}  {'DSR(IS)':>7}  params")
        for f in r["folds"]:
            train = f"{f['train_start'][:10]}..{f['train_end'][:10]}"
            test = f"{f['test_start'][:10]}..{f['test_end'][:10]}"
            dsr = (f.get("dsr") or {}).get("probability")
            params = ", ".join(f"{k}={_fmt(v, 4)}" for k, v in (f["params"] or {}).items()) or f["reason"]
            w(f"{f['index'] + 1:>4}  {train:<23}  {test:<23}  {_fmt(f['is_value']):>9}  {_fmt(f['oos_value']):>9}  "
              f"{_fmt(f['degradation']):>9}  {_fmt(dsr, 2):>7}  {params}")
        w("out-of-sample (the test windows stitched, each fold's chosen params):")
        for fig in r["oos"]["figures"]:
            unit = " %" if fig["unit"] == "%" else ""
            w(f"  {fig['label']:<28} {_fmt(fig['value'], 2)}{unit}")
        d, p = r["dsr"], r["pbo"]
        w(f"  deflated Sharpe ratio: {_fmt(d.get('probability'), 3)} over {d.get('n_trials')} trials "
          f"(SR0 {_fmt(d.get('sr0'), 4)} per day){'  ' + d['reason'] if d.get('reason') else ''}")
        w(f"  probability of backtest overfitting: {_fmt(p.get('value'), 3)} "
          f"({p.get('n_splits')} blocks, {p.get('n_configs')} trials, {p.get('n_obs')} days)"
          f"{'  ' + p['reason'] if p.get('reason') else ''}")
        w("stability (chosen value per fold; spread = (max - min) / searched range):")
        for row in r["stability"]:
            spread = f"{row['spread_pct']:.0f} %" if row.get("spread_pct") is not None else "n/a"
            w(f"  {row['name']:<28} {', '.join(_fmt(v, 4) for v in row['values'])}  spread {spread}")
        for note in r["notes"]:
            w(f"note: {note}")
