"""A lab run of all five ghosts over the whole real 90-day BTC/USDT 1m file, from SQLite to stored results
(issue 9, "Speed": target under 3 s wall), split by stage.

Setup (not timed): a throwaway SQLite DB (WAL, as `make run`) migrated and filled with the file through the
project's import service, and a redis-server on a free port for the progress pushes (the channel layer).
Then, REPEATS times, the path the `research` worker runs (`apps.lab.tasks.lab_run_task` minus Celery):
`lab_run_create` (validation, stored-range query, fingerprint) + `lab_run_execute` (claim; "loading bars":
one query into numpy; "evaluating ghosts"; "walking": the engine's walk with progress/heartbeat/cancel
checks; "storing": report + criteria + signal/trade rows + the 2 MB equity series in one transaction).
Printed: wall and CPU seconds per stage (median of the repeats), and a finer split of "storing" measured on
the side (report build vs database writes). The file is OHLCV only, so the CVD, whale and liquidation ghosts
take their idle paths (benchmarks/lab_engine.py times their busy paths on synthetic columns).

Usage: .venv/bin/python benchmarks/lab_run.py [REPEATS=5]
"""

import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.throwaway import throwaway_desk  # noqa: E402 - after the path

FILE = "klines/freqtrade/binance_spot_BTCUSDT_1m_2025-05-20_2025-08-18__filimonov.csv.gz"
GHOSTS = ["trend_filter", "cvd_detector", "liquidation_hunter", "spike_fader", "whale_follower"]


def clocks() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def main() -> None:
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    data = Path(os.environ.get("MARKET_DATA_DIR", ROOT.parent / "shared" / "data"))
    with throwaway_desk():
        run_bench(data / FILE, repeats)


def run_bench(path: Path, repeats: int) -> None:
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from apps.lab.models import BacktestRun
    from apps.lab.services import lab_run_create, lab_run_execute
    from apps.market import importers
    from apps.market.services import candles_import, instrument_ensure

    inst = instrument_ensure(exchange_code="binance", symbol="BTC/USDT")
    t0 = time.perf_counter()
    imported = candles_import(instrument=inst, frame=importers.read_klines(path), timeframe="1m")
    print(f"setup: {imported.stored:,} bars imported in {time.perf_counter() - t0:.1f} s (not part of the run)")
    request = {"instrument_id": inst.pk, "start": "2025-05-20", "end": "2025-08-19",
               "ghosts": [{"kind": k} for k in GHOSTS]}

    rows: list[dict[str, tuple[float, float]]] = []
    last_run = None
    for _ in range(repeats):
        marks: list[tuple[str, float, float]] = []
        w0, c0 = clocks()
        run = lab_run_create(actor=None, settings=request, queue=False)
        marks.append(("claim", *clocks()))  # the span from here to the first stage: claim + first heartbeat
        run = lab_run_execute(run_id=run.pk, on_stage=lambda s, m=marks: m.append((s, *clocks())))
        marks.append(("end", *clocks()))
        assert run.status == "done", run.error
        stages, prev = {}, ("create", w0, c0)
        for name, w, c in marks:
            # each mark closes the span that started at the previous one
            stages[prev[0]] = (w - prev[1], c - prev[2])
            prev = (name, w, c)
        stages["total"] = (prev[1] - w0, prev[2] - c0)
        rows.append(stages)
        last_run = run
    names = ["create", "claim", "loading bars", "evaluating ghosts", "walking", "storing", "total"]
    med = {n: (statistics.median(r[n][0] for r in rows), statistics.median(r[n][1] for r in rows)) for n in names}
    run = BacktestRun.objects.get(pk=last_run.pk)
    figs = {f["key"]: f["display"] for f in run.summary["figures"]}
    print(f"lab run, 5 ghosts, {run.bars_total:,} real 1m bars, SQLite -> stored results; median of {repeats}, "
          f"load average {os.getloadavg()[0]:.1f}:")
    for n in names:
        w, c = med[n]
        share = f"{w / med['total'][0]:5.1%}" if n != "total" else "     "
        print(f"  {n:<18} {w:6.3f} s wall {c:6.3f} s CPU  {share}")
    print(f"  result: {figs['trades']} trades, net {figs['net_pnl']}, {run.trades.count()} trade rows, "
          f"{run.signals.count()} signal rows, series {len(run.series) / 1e6:.1f} MB")
    storing_split(run, request)
    textbook(inst, repeats)


def textbook(inst, repeats: int) -> None:
    """The same path for the textbook preset (one textbook_fader, stake 1,000; `manage.py backtest --preset
    textbook` builds this request)."""
    from apps.lab.management.commands.backtest import preset_textbook
    from apps.lab.services import lab_run_create, lab_run_execute

    request = {"instrument_id": inst.pk, "start": "2025-05-20", "end": "2025-08-19", **preset_textbook(long_only=False)}
    walls, cpus = [], []
    for _ in range(repeats):
        w0, c0 = clocks()
        run = lab_run_execute(run_id=lab_run_create(actor=None, settings=request, queue=False).pk)
        w1, c1 = clocks()
        assert run.status == "done", run.error
        walls.append(w1 - w0)
        cpus.append(c1 - c0)
    n = run.trades.count()
    print(f"textbook preset, same path: {statistics.median(walls):.3f} s wall / {statistics.median(cpus):.3f} s CPU "
          f"(median of {repeats}), {n} trades")


def storing_split(run, request) -> None:
    """The "storing" stage, its parts timed on their own on the same result: report + criteria (pure), and
    the database writes (rows + the run's JSON and series in one transaction)."""
    from django.db import transaction

    from apps.engine import backtest as bt
    from apps.engine.criteria import gates_from_report
    from apps.engine.report import report_build
    from apps.lab.selectors import criteria_gates, run_bars
    from apps.lab.series import series_pack
    from apps.lab.services import backtest_inputs, warmup_span

    s = run.settings
    w0, c0 = clocks()
    bars = run_bars(instrument_id=run.instrument_id, start=run.start - warmup_span(s), end=run.end)
    w1, c1 = clocks()
    setups, cfg = backtest_inputs(s)
    drafts = bt.evaluate_ghosts(bars, setups)
    w2, c2 = clocks()
    per_ghost = []
    for g in setups:
        a = time.process_time()
        bt.evaluate_ghosts(bars, [g])
        per_ghost.append(f"{g.kind} {1000 * (time.process_time() - a):.0f}")
    result = bt.run_backtest(bars, setups, cfg, drafts=drafts)
    w3, c3 = clocks()
    report = report_build(result)
    gates_from_report(criteria_gates(), report.summary, report.daily)
    w4, c4 = clocks()
    blob = series_pack(report.times_ms, report.equity)
    with transaction.atomic():
        type(run).objects.filter(pk=run.pk).update(series=blob, summary=report.summary, daily=report.daily)
    w5, c5 = clocks()
    print(f"  side measurements: bars query {w1 - w0:.3f} s wall / {c1 - c0:.3f} CPU; evaluate {w2 - w1:.3f} / "
          f"{c2 - c1:.3f} (ms CPU: {', '.join(per_ghost)}); walk {w3 - w2:.3f} / {c3 - c2:.3f}; "
          f"report+criteria {w4 - w3:.3f} / {c4 - c3:.3f}; write series+JSON {w5 - w4:.3f} / {c5 - c4:.3f}")


if __name__ == "__main__":
    main()
