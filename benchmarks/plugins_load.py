"""What the plug-in guards cost (issue 11, part G): at every process start (web, each worker, beat, manage.py) each
plug-in found is checked on the synthetic series before it is registered; check_ghost checks on a real file.

Prints, with os.getloadavg() (the machine is shared: read each figure with the load):
- the load-time guard run (apps.engine.plugins.check_spec on load_time_bars) of the example plug-in and of every
  built-in ghost treated as a plug-in (the cost a plug-in as heavy as each would add to every start), best of REPEAT;
- `django.setup()` in a fresh interpreter without and with HFT_GHOSTS_DIR=plugins (the start-up cost as seen);
- check_spec of the example plug-in on the 90-day BTC/USDT file (what check_ghost spends after reading it).

Usage: .venv/bin/python benchmarks/plugins_load.py     (REPEAT=3 by default)
"""

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
REPEAT = int(os.environ.get("REPEAT", "3"))


def load() -> str:
    return "load {:.1f} {:.1f} {:.1f}".format(*os.getloadavg())


def main() -> None:
    from apps.engine import registry
    from apps.engine.plugins import check_spec, load_time_bars, spec_from_object
    from apps.ghosts.plugins import import_plugin_file

    example = spec_from_object(import_plugin_file(ROOT / "plugins" / "streak_fader.py", ROOT / "plugins" / "x.py"))
    specs = {"streak_fader (example)": example, **{k: registry.GHOSTS[k] for k in sorted(registry.BUILTIN_KINDS)}}
    print(f"load-time guards on the synthetic series (best of {REPEAT}):")
    for label, spec in specs.items():
        bars = load_time_bars(spec)
        taken = registry.BUILTIN_KINDS - {spec.kind}
        times = []
        for _ in range(REPEAT):
            t0 = time.perf_counter()
            report = check_spec(spec, bars, taken=taken)
            times.append(time.perf_counter() - t0)
        assert report.ok, report.reason
        print(f"  {label:24s} {len(bars):6,d} bars  {min(times) * 1000:7.0f} ms  (warm-up {report.warmup_minutes} min)"
              f"  {load()}")

    env = {**os.environ, "DEBUG": "1", "DJANGO_SETTINGS_MODULE": "hftweb.settings"}
    code = "import time, django; t = time.perf_counter(); django.setup(); print(time.perf_counter() - t)"
    cases = (("without plug-ins", {"HFT_GHOSTS_DIR": ""}), ("HFT_GHOSTS_DIR=plugins", {"HFT_GHOSTS_DIR": "plugins"}))
    for label, extra in cases:
        runs = [float(subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**env, **extra}, capture_output=True,
                                     text=True, check=True).stdout.strip().splitlines()[-1]) for _ in range(REPEAT)]
        print(f"django.setup() {label:24s} median {statistics.median(runs) * 1000:6.0f} ms of {REPEAT}  {load()}")

    from tests.datafiles import load_freqtrade_1m

    bars = load_freqtrade_1m()
    t0 = time.perf_counter()
    report = check_spec(example, bars, taken=registry.BUILTIN_KINDS)
    print(f"check_spec(streak_fader) on the 90-day file ({len(bars):,} bars): {time.perf_counter() - t0:.2f} s, "
          f"ok={report.ok}  {load()}")
    for line in report.lines()[-3:]:
        print("  " + line)


if __name__ == "__main__":
    main()
