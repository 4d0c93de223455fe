"""Every shell command in README.md and docs/*.md works as written (issue 14, rough edges: `manage.py add_user NAME
--role viewer`, as the README wrote it, failed on a fresh clone).

The commands are read from the fenced shell blocks (indented ones too, continuation lines joined, comments cut) and
from the inline code spans that are commands (`make ...`, `.venv/bin/...`, `python ...`, `manage.py ...`,
`docker ...`, `celery -A ...`, `pytest ...`, `ruff ...`, `benchmarks/x.py ARGS`, a management command's name with
arguments, with optional `VAR=value` in front). Each one
is either RUN here, as written, in a fresh `git clone` of HEAD, or LISTED with the reason it is not and where it is
exercised. A command in neither table fails the test, and so does a table entry no document holds any more.

The clone is laid out as the README assumes: `<tmp>/main` beside `<tmp>/shared/data` (the market data, linked), its
`.venv` a link to this checkout's (the Makefile's `.venv/bin/python`; `python` and `pytest` resolve to it, the venv
first in PATH as an activated one would be), no RUN_DIR set (so `.run/` inside the clone), and make run's keys written
into `.run/` as `make run` leaves them (hftweb/devrun.py main). Redis is the test session's (make run starts one; only
`login_unlock` needs it). A prose `manage.py X` or `benchmarks/x.py ARGS` runs as `python manage.py X` /
`python benchmarks/x.py ARGS`. A placeholder (NAME is a valid user name as it stands, ADDR is not) and [optional]
parts run as the concrete lines given, the optional parts included.

The LISTED commands are checked too, without running them: every `manage.py` command they name exists and takes the
options they write, every benchmark script exists (and its argparse options, when it has a parser), every test path
a pytest command names exists, and the test files named as "where exercised" exist.

Also here: /favicon.ico (a real icon, no login), and the Docker image's static files (the Dockerfile collects them
and sets HFT_STATIC=collected; checked by reading it and running its collectstatic line in the clone: no docker here).
"""

import glob
import json
import os
import re
import resource
import secrets
import shlex
import shutil
import struct
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.datafiles import data_dir

DOCS = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]
SHELL_LANGS = {"bash", "sh", "shell", "console", "zsh"}
FENCE = re.compile(r"^\s*(```|~~~)\s*(\S*)")
SPAN = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
ENV_PREFIX = r"(?:[A-Z_][A-Z0-9_]*=\S*\s+)*"
# the project's management commands, which prose also writes without `manage.py` (`check_ghost NAME FILE`)
MANAGE_COMMANDS = sorted(p.stem for p in ROOT.glob("apps/*/management/commands/*.py") if not p.stem.startswith("_"))
COMMAND = re.compile(ENV_PREFIX + r"(?:make\s+\S|\.venv/bin/\S|python3?\s+\S|manage\.py\s+\w|docker\s+\w|"
                     r"celery\s+-A\s|\.ci/run$|pytest(?:\s|$)|apt-get\s|openssl\s|git\s+\w|ruff\s+\w|"
                     r"benchmarks/\S+\.py\s+\S|(?:" + "|".join(MANAGE_COMMANDS) + r")\s+\S)")


def _clean(line: str) -> str:
    line = re.sub(r"^\$\s+", "", line.strip())
    line = re.sub(r"\s+#\s.*$", "", line)  # a trailing comment (`%h` and `#` inside words stay)
    return " ".join(line.split())


def commands_in(text: str) -> list[tuple[int, str]]:
    """(line number, command) for every shell command in a markdown text, in order."""
    out: list[tuple[int, str]] = []
    fence: str | None = None  # the language of the open fence, "" untagged
    pending, start = "", 0
    for n, line in enumerate(text.split("\n"), 1):
        m = FENCE.match(line)
        if m:
            fence = None if fence is not None else m.group(2).lower()
            continue
        if fence is not None:
            # untagged blocks hold shell only where a line looks like a command (docs/scale.md's tree does not)
            if fence in SHELL_LANGS or (fence == "" and (pending or COMMAND.match(line.strip()))):
                if not pending:
                    start = n
                pending += line.strip()
                if pending.endswith("\\"):
                    pending = pending[:-1] + " "
                    continue
                if _clean(pending):
                    out.append((start, _clean(pending)))
                pending = ""
            continue
        for span in SPAN.finditer(line):
            if COMMAND.match(span.group(1).strip()):
                out.append((n, _clean(span.group(1))))
    return out


def documented() -> dict[str, list[str]]:
    """command -> where the documents write it ("README.md:29", ...)."""
    out: dict[str, list[str]] = {}
    for doc in DOCS:
        for n, cmd in commands_in((ROOT / doc).read_text()):
            out.setdefault(cmd, []).append(f"{doc}:{n}")
    return out


# ---- the tables ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Run:
    shell: str  # what runs in the clone (bash -c): the command as written, or the concrete line of a synopsis
    expect: tuple[str, ...]  # regexes its output (stdout + stderr) must match; the exit status must be 0
    stage: int = 2  # stages run in order, the commands of one stage side by side
    needs: str = ""  # a program the machine may lack (the test skips that line without it)


PY = ".venv/bin/python manage.py"
BACKTEST = (f"{PY} backtest --start 2025-05-20 --end 2025-08-19 --ghost spike_fader --ghost "
            "'trend_filter:{\"fast_periods\": 40}' --direction spike_fader=long --sizing stake --stake 1000")
BACKTEST_OPTIONAL = ("--capital 10000 --taker-fee 0.001 --maker-fee 0.001 --slippage-bps 5 "
                     "--limit max_open_positions=1 --no-auto-disable --no-kill-switch --csv trades.csv")
OPTIMIZE = (f"{PY} optimize --ghost spike_fader --start 2025-05-20 --end 2025-08-19 --objective sharpe --min-trades 5 "
            "--scheme rolling --train-days 30 --test-days 12 --sampler tpe --seed 7 --trials 50")
GATES = r"success criteria:\n  phase 1 (PASS|FAIL)"
MY_GHOST_WRITTEN = r"wrote plugins/my_breakout.py and plugins/test_my_breakout.py"
MY_GHOST_PASSES = r"my_breakout: every check passed"

RUN: dict[str, list[Run]] = {
    "manage.py migrate": [Run("python manage.py migrate", (r"Apply|No migrations to apply",), stage=1)],
    "make stop": [Run("make stop", (r"^not running \(\.run/devrun\.pid\)",), needs="make")],
    "openssl rand -hex 24": [Run("openssl rand -hex 24", (r"^[0-9a-f]{48}$",), needs="openssl")],
    ".venv/bin/python manage.py add_user NAME --role viewer": [
        Run(f"{PY} add_user NAME --role viewer", (r"^user 'NAME' has role viewer password '[\w-]{20,}'",))],
    # the synopsis with its [optional] part: both arguments at once
    "manage.py login_unlock NAME [--ip ADDR]": [
        Run("python manage.py login_unlock NAME --ip 192.0.2.7",
            (r"^login throttle cleared for NAME, 192\.0\.2\.7$",))],
    "manage.py alert_secrets_rotate": [
        Run("python manage.py alert_secrets_rotate", (r"alert secrets: 0 re-encrypted under the first key",))],
    "manage.py pnl_days_rebuild": [
        Run("python manage.py pnl_days_rebuild", (r"^\d+ day rows, \d+ closed trades, in [\d.]+ s",))],
    (f"{PY} import_market_data ../shared/data/klines/freqtrade/"
     "binance_spot_BTCUSDT_1m_2025-05-20_2025-08-18__filimonov.csv.gz"): [
        Run(f"{PY} import_market_data ../shared/data/klines/freqtrade/"
            "binance_spot_BTCUSDT_1m_2025-05-20_2025-08-18__filimonov.csv.gz",
            (r"-> binance:BTC/USDT 1m: read 130708, stored 130708",))],
    # with its [optional] options: every option written takes part (without them, the defaults: the lines below)
    f"{BACKTEST} [{BACKTEST_OPTIONAL}]": [
        Run(f"{BACKTEST} {BACKTEST_OPTIONAL}", (r"\(spike_fader\): \d+ trades", GATES,
                                                r"\n\d+ trades written to trades\.csv"), stage=3)],
    f"{PY} backtest --preset textbook --start 2025-05-20 --end 2025-08-19 --csv tb.csv": [
        Run(f"{PY} backtest --preset textbook --start 2025-05-20 --end 2025-08-19 --csv tb.csv",
            (r"textbook \(textbook_fader\): \d+ trades", GATES, r"\n\d+ trades written to tb\.csv"), stage=3)],
    # without [--long-only] it is the line above less its --csv
    "manage.py backtest --preset textbook --start 2025-05-20 --end 2025-08-19 [--long-only]": [
        Run("python manage.py backtest --preset textbook --start 2025-05-20 --end 2025-08-19 --long-only",
            (r"textbook \(textbook_fader\): \d+ trades, .*drafts \d+ long / 0 short", GATES), stage=3)],
    # [--workers] hands the trials to the research workers (none run here; tests/research/test_worker.py)
    (f"{PY} optimize --ghost spike_fader --start 2025-05-20 --end 2025-08-19 [--space spike_threshold_pct=0.6:2.0:0.1 "
     "...] --objective sharpe --min-trades 5 --scheme rolling --train-days 30 --test-days 12 [--step-days 12] "
     "--sampler tpe --seed 7 --trials 50 [--workers]"): [
        Run(f"{OPTIMIZE} --space spike_threshold_pct=0.6:2.0:0.1 --step-days 12",
            (r"probability of backtest overfitting: [\d.]+", r"spike_threshold_pct"), stage=3)],
    f"{PY} new_ghost my_breakout": [Run(f"{PY} new_ghost my_breakout", (MY_GHOST_WRITTEN,))],
    f"{PY} check_ghost my_breakout": [Run(f"{PY} check_ghost my_breakout", (MY_GHOST_PASSES,), stage=3)],
    # docs/plugins.md's `python ...` is the README's `.venv/bin/python ...`: the venv is first in PATH, the argv the
    # same; run once
    "python manage.py check_ghost my_breakout": [Run(f"{PY} check_ghost my_breakout", (MY_GHOST_PASSES,), stage=3)],
    "python manage.py new_ghost my_breakout": [Run(f"{PY} new_ghost my_breakout", (MY_GHOST_WRITTEN,))],
    ".venv/bin/pytest -q plugins/test_my_breakout.py": [
        Run(".venv/bin/pytest -q plugins/test_my_breakout.py", (r"\b\d+ passed",), stage=3)],
}

BENCHMARK = "a benchmark: seconds to minutes of load, its figures in the README's Benchmarks table; run by hand"
NO_DOCKER = ("no docker on the test machines", "test_docker_image_collects_and_serves_static here (Dockerfile and "
             "docker-compose.yml read, the Dockerfile's collectstatic line run)")
RUNS_LONG = "long-running: the whole desk in the foreground until Ctrl-C"
POSTGRES = ("needs a PostgreSQL server; make test runs it when HFT_TEST_DATABASE_URL is set",
            ".ci/run (a throwaway cluster; Makefile target test)")
NETWORK = "fetches from the exchange over the network (no network in the tests)"

LISTED: dict[str, tuple[str, str]] = {
    "make run": (RUNS_LONG, "tests/e2e/test_redis_outage.py (hftweb/devrun.py as make run starts it), "
                 "tests/logs/test_devrun_stop.py, tests/test_make_stop.py"),
    "HFT_GHOSTS_DIR=plugins make run": (RUNS_LONG, "tests/plugins/test_commands.py (HFT_GHOSTS_DIR loaded at start "
                                        "as under make run)"),
    "make test": ("the whole suite (~20 min); this test is part of it", ".ci/run"),
    "pytest": ("the README's prose: make test runs ruff, then pytest", "Makefile target test, .ci/run"),
    ".ci/run": ("CI's entry point: installs packages, starts PostgreSQL, runs make test", "CI"),
    "apt-get install chromium": ("installs a system package (root, network)", ".ci/run installs it"),
    "DATABASE_URL=$HFT_TEST_DATABASE_URL pytest -m 'postgres and not slow'": POSTGRES,
    "DATABASE_URL=postgres://… .venv/bin/pytest -m postgres": POSTGRES,
    ".venv/bin/pytest -m slow": ("the slow loops, minutes each; left out of make test by design",
                                 "by hand: tests/e2e/test_crash_safety.py, tests/e2e/test_faults.py"),
    "RUN_DIR=/tmp/a .venv/bin/pytest -q tests/dashboard/test_trades_* tests/browser/test_trades_browser.py": (
        "a part of the suite (its paths are checked here)", "make test"),
    "PHONE_SHOTS_DIR=/tmp/phone-shots .venv/bin/pytest -q tests/browser/test_phone_widths.py": (
        "a part of the suite, with its screenshots kept (its path is checked here)", "make test"),
    "PHONE_WIDTH=768 PHONE_SHOTS_DIR=/tmp/tablet-shots .venv/bin/pytest -q tests/browser/test_phone_widths.py": (
        "the same test at a tablet's width (its path is checked here)", "make test runs it at 390 px"),
    "manage.py add_user NAME --role ROLE": ("synopsis; its viewer line (README.md:29) is run here",
                                            "tests/accounts/test_add_user_command.py"),
    "ruff check .": ("make test's first step (and make lint)", "Makefile targets test and lint"),
    "check_ghost my_breakout path/to/klines.zip": (
        "prose for manage.py check_ghost NAME [DATA_FILE] (the synopsis is checked against the parser)",
        "its plain form is run here; tests/plugins/test_commands.py"),
    "git worktree": ("prose: names git's command, not one to run", "-"),
    "manage.py backtest": ("prose: names the command; its README forms are run here", "tests/lab/test_command.py"),
    "python manage.py reconcile [--exchange binance]": (
        "needs a live desk with exchange API keys", "tests/trading/test_live.py (the command against "
        "tests/trading/fake_binance.py)"),
    "manage.py reconcile": ("needs a live desk with exchange API keys", "tests/trading/test_live.py"),
    "manage.py markets_fetch binance binanceusdm kraken": (NETWORK, "tests/instruments/test_markets.py"),
    "manage.py markets_fetch binance": (NETWORK, "tests/instruments/test_markets.py"),
    (f"{PY} download_history --exchange binance --symbol BTC/USDT --timeframe 1m --since 2025-05-01 "
     "[--until 2025-06-01]"): (NETWORK, "tests/market/test_history_download.py (the command through ccxt's binance "
                               "code against a local server)"),
    "manage.py new_ghost NAME [--dir DIR] [--title T] [--force]": (
        "synopsis (its options are checked against the command's parser)",
        "its plain form is run here; tests/plugins/test_commands.py"),
    "manage.py check_ghost NAME [DATA_FILE] [--dir DIR] [--params JSON] [--cuts N]": (
        "synopsis (its options are checked against the command's parser)",
        "its plain form is run here; tests/plugins/test_commands.py"),
    "SECRET_KEY=... POSTGRES_PASSWORD=... HFT_ADMIN_PASSWORD=... docker compose up -d": NO_DOCKER,
    "docker compose up -d --scale worker=3": NO_DOCKER,
    "docker compose up --scale research=N": NO_DOCKER,
    "celery -A hftweb worker -Q research -c 2 -n research2@%h": (
        "a long-running worker", "hftweb/devrun.py starts it under make run; tests/research/test_worker.py"),
    "celery -A hftweb worker -Q feeds -c N": (
        "a long-running worker", "hftweb/devrun.py starts the feeds worker; tests/e2e/test_several_feeds.py"),
    "benchmarks/calibrate_sim.py --days 30": (BENCHMARK, "tests/market/test_sim.py (the calibration's tolerances)"),
    ".venv/bin/python benchmarks/calibrate_sim.py --days 30": (BENCHMARK, "tests/market/test_sim.py"),
    "benchmarks/calibrate_sim.py --stored binance:BTC/USDT": (BENCHMARK, "tests/market/test_sim.py"),
    **{cmd: (BENCHMARK, "README's Benchmarks table") for cmd in [
        ".venv/bin/python benchmarks/close_position.py 200",
        "benchmarks/close_position.py N",
        "benchmarks/build_big_db.py PATH",
        "benchmarks/pages.py PATH",
        "benchmarks/pnl_pages.py PATH",
        "benchmarks/protect_watch.py N",
        "benchmarks/equity_page.py PATH",
        "benchmarks/telegram_commands.py 50 20",
        ".venv/bin/python benchmarks/telegram_commands.py 50 20",
        ".venv/bin/python benchmarks/instruments_page.py",
        ".venv/bin/python benchmarks/multi_risk.py",
        ".venv/bin/python benchmarks/instrument_delete.py",
        ".venv/bin/python benchmarks/pages.py /tmp/J-big.sqlite3 --n 20",
        ".venv/bin/python benchmarks/protect_watch.py 5",
        ".venv/bin/python benchmarks/static_files.py 300",
        ".venv/bin/python benchmarks/plugins_load.py",
        ".venv/bin/python benchmarks/pages.py /tmp/big.sqlite3 --n 30",
        ".venv/bin/python benchmarks/pnl_pages.py /tmp/big.sqlite3 --runs 30",
        ".venv/bin/python benchmarks/ws_fanout.py --seconds 15 --server S",
        ".venv/bin/python benchmarks/ws_ticks.py --server S",
        ".venv/bin/python benchmarks/replay.py",
        "BENCH_DATABASE_URL=postgres://.../empty_db .venv/bin/python benchmarks/replay.py",
        "SPEED=600 MAX_SECONDS=10 .venv/bin/python benchmarks/replay.py",
        "FILE=trades/binance_vision_cm_BTCUSD_PERP_aggTrades/BTCUSD_PERP-aggTrades-2026-05-08.zip CHECK=0 "
        ".venv/bin/python benchmarks/replay.py",
    ]},
}


def test_every_documented_command_is_run_or_listed():
    docs = documented()
    both = sorted(set(RUN) & set(LISTED))
    assert not both, f"in both tables: {both}"
    missing = {cmd: where for cmd, where in docs.items() if cmd not in RUN and cmd not in LISTED}
    assert not missing, ("commands the documents write that this test neither runs (RUN) nor lists with a reason "
                         f"(LISTED): {json.dumps(missing, indent=1)}")
    stale = sorted((set(RUN) | set(LISTED)) - set(docs))
    assert not stale, f"table entries no document writes any more (a command changed?): {stale}"


def test_the_extraction_finds_commands_where_the_readme_writes_them():
    """The reader itself, on the shapes the documents use: a fence, an indented fence with a continued line, an
    untagged block that is not shell, inline spans that are and are not commands."""
    text = "\n".join([
        "Run `make run`, then `manage.py add_user NAME --role viewer`; `manage.py` is a file, `uvicorn:2` a value.",
        "```bash",
        "make test   # the suite",
        "```",
        "- a list item:",
        "  ```bash",
        "  .venv/bin/python manage.py backtest --start 2025-05-20 \\",
        "      --end 2025-08-19",
        "  ```",
        "```",
        "apps/",
        "  market/   the feeds",
        "```",
        "`HFT_GHOSTS_DIR=plugins make run` and `benchmarks/replay.py` (a file) or `benchmarks/pages.py PATH`.",
    ])
    assert commands_in(text) == [
        (1, "make run"), (1, "manage.py add_user NAME --role viewer"), (3, "make test"),
        (7, ".venv/bin/python manage.py backtest --start 2025-05-20 --end 2025-08-19"),
        (14, "HFT_GHOSTS_DIR=plugins make run"), (14, "benchmarks/pages.py PATH")]


def test_the_listed_commands_say_where_they_are_exercised_and_those_places_exist():
    for cmd, (reason, where) in LISTED.items():
        assert reason and where, cmd
        for path in re.findall(r"(?:tests|hftweb|benchmarks|apps)/[\w/.-]+\.py|\.ci/run|Makefile", where):
            assert (ROOT / path).exists(), f"{cmd!r}: {path} does not exist"
        if "pytest" in cmd:  # the test paths it names
            for arg in shlex.split(cmd):
                if arg.startswith("tests/") or arg.startswith("plugins/test_"):
                    if not arg.startswith("plugins/test_my_"):  # written by new_ghost first
                        assert glob.glob(str(ROOT / arg)), f"{cmd!r}: no {arg}"


# ---- the fresh clone -----------------------------------------------------------------------------------------------

@dataclass
class Clone:
    main: Path  # the clone's work tree
    base: Path  # its parent: main/ and shared/data
    env: dict[str, str]  # the environment every command gets
    results: dict[str, subprocess.CompletedProcess]  # Run.shell -> what it did
    seconds: dict[str, float]


def clean_env(main: Path, redis_url: str) -> dict[str, str]:
    """A user's shell in the clone: the venv first in PATH, nothing of the test session's settings (no
    DJANGO_SETTINGS_MODULE, SECRET_KEY, HFT_* or RUN_DIR: manage.py's own defaults apply)."""
    keep = {k: os.environ[k] for k in ("HOME", "LANG", "LC_ALL", "TMPDIR", "USER") if k in os.environ}
    return {**keep, "PATH": f"{main / '.venv' / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "REDIS_URL": redis_url, "PYTHONDONTWRITEBYTECODE": "1"}


def sh(line: str, cwd: Path, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", line], cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def clone(tmp_path_factory, services_use_test_redis) -> Clone:
    """One `git clone` of HEAD for the module, with every RUN line run in it, stage by stage."""
    data = data_dir()
    if not (data / "klines").is_dir():
        pytest.skip(f"no market data at {data} (the README's commands read ../shared/data)")
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: nothing to clone")
    base = tmp_path_factory.mktemp("readme")
    main = base / "main"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(main)], check=True, timeout=120)
    (base / "shared").mkdir()
    (base / "shared" / "data").symlink_to(data)
    venv = ROOT / ".venv" if (ROOT / ".venv" / "bin" / "python").exists() else Path(sys.prefix)
    (main / ".venv").symlink_to(venv)
    # What make run leaves in .run/ before anything else (hftweb/devrun.py main): the two generated keys.
    run_dir = main / ".run"
    run_dir.mkdir()
    from cryptography.fernet import Fernet

    for name, value in (("secret_key", secrets.token_urlsafe(50)), ("hft_secrets_key", Fernet.generate_key().decode())):
        (run_dir / name).write_text(value)
        (run_dir / name).chmod(0o600)
    env = clean_env(main, services_use_test_redis)
    results: dict[str, subprocess.CompletedProcess] = {}
    seconds: dict[str, float] = {}

    def one(run: Run) -> None:
        if run.needs and not shutil.which(run.needs, path=env["PATH"]):
            return
        t = time.monotonic()
        results[run.shell] = sh(run.shell, main, env)
        seconds[run.shell] = time.monotonic() - t

    cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.monotonic()
    runs = list({r.shell: r for rs in RUN.values() for r in rs}.values())  # a line two documents write runs once
    with ThreadPoolExecutor(max_workers=3) as pool:
        for stage in sorted({r.stage for r in runs}):
            list(pool.map(one, [r for r in runs if r.stage == stage]))
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    slowest = sorted(seconds, key=seconds.get, reverse=True)
    print(f"\nreadme commands: {len(seconds)} in {time.monotonic() - wall:.1f} s wall, "
          f"{after.ru_utime + after.ru_stime - cpu.ru_utime - cpu.ru_stime:.1f} s CPU, load {os.getloadavg()[0]:.1f}\n"
          + "\n".join(f"{seconds[k]:6.1f} s  {k[:100]}" for k in slowest))
    return Clone(main, base, env, results, seconds)


@pytest.mark.parametrize("written", sorted(RUN))
def test_the_command_works_as_written_on_a_fresh_clone(clone, written):
    for run in RUN[written]:
        if run.needs and not shutil.which(run.needs, path=clone.env["PATH"]):
            pytest.skip(f"no {run.needs} on this machine")
        out = clone.results[run.shell]
        text = out.stdout + out.stderr
        assert out.returncode == 0, f"{run.shell!r} exited {out.returncode}:\n{text[-3000:]}"
        for pattern in run.expect:
            assert re.search(pattern, text, re.MULTILINE), f"{run.shell!r}: no {pattern!r} in:\n{text[-3000:]}"
        assert "Traceback" not in text, f"{run.shell!r}:\n{text[-3000:]}"


def test_the_commands_leave_the_clones_tracked_files_alone(clone):
    """Nothing the README runs rewrites a committed file (new_ghost writes new ones, the CSVs are new)."""
    out = sh("git status --porcelain --untracked-files=no", clone.main, clone.env)
    assert out.stdout == "", out.stdout


MANAGE_OPTIONS = r"""
import json, sys
import django
django.setup()
from django.core.management import get_commands, load_command_class
out = {}
for name in sys.argv[1:]:
    app = get_commands().get(name)
    if app is None:
        out[name] = None
        continue
    parser = load_command_class(app, name).create_parser("manage.py", name)
    out[name] = sorted(o for a in parser._actions for o in a.option_strings)
print(json.dumps(out))
"""


def test_the_listed_commands_name_real_commands_options_scripts_and_tests(clone):
    """What is not run is still checked: each manage.py command exists and takes the options written, each
    benchmark script exists and (with an argparse parser) takes the options written."""
    written = list(LISTED) + list(RUN)
    manage = {}  # command name -> options written
    scripts = {}
    for cmd in written:
        words = shlex.split(cmd.replace("…", "x"))
        while words and re.match(r"[A-Z_][A-Z0-9_]*=", words[0]):
            words.pop(0)
        if "manage.py" in words:
            rest = words[words.index("manage.py") + 1:]
            opts = {w.strip("[]").split("=")[0] for w in rest if w.strip("[").startswith("--")}
            manage.setdefault(rest[0], set()).update(opts)
        for w in words:
            if w.startswith("benchmarks/"):
                opts = {x.split("=")[0] for x in words if x.startswith("--")}
                scripts.setdefault(w, set()).update(opts)
    out = sh(f"python -c {shlex.quote(MANAGE_OPTIONS)} {' '.join(sorted(manage))}", clone.main,
             {**clone.env, "DJANGO_SETTINGS_MODULE": "hftweb.settings"})
    assert out.returncode == 0, out.stderr[-3000:]
    known = json.loads(out.stdout.strip().splitlines()[-1])
    for name, opts in sorted(manage.items()):
        assert known[name] is not None, f"no management command {name!r}"
        assert opts <= set(known[name]), f"manage.py {name}: no option {sorted(opts - set(known[name]))}"
    for script, opts in sorted(scripts.items()):
        path = clone.main / script
        assert path.is_file(), f"no {script}"
        if opts and "argparse" in path.read_text():
            help_text = sh(f"python {script} --help", clone.main, clone.env, timeout=60)
            assert help_text.returncode == 0, help_text.stderr[-2000:]
            missing = [o for o in opts if o not in help_text.stdout]
            assert not missing, f"{script}: no option {missing} in its --help"


# ---- /favicon.ico --------------------------------------------------------------------------------------------------

def ico_images(data: bytes) -> list[tuple[int, int, bytes]]:
    """(width, height, image bytes) of each entry of a .ico file, checked as a browser reads it."""
    reserved, kind, count = struct.unpack_from("<HHH", data)
    assert (reserved, kind) == (0, 1) and count >= 1, "not an icon file"
    out = []
    for i in range(count):
        w, h, _, _, _, _, size, offset = struct.unpack_from("<BBBBHHII", data, 6 + 16 * i)
        assert offset + size <= len(data), f"entry {i} runs past the file"
        out.append((w or 256, h or 256, data[offset:offset + size]))
    return out


def bmp_colours(w: int, h: int, image: bytes) -> set[bytes]:
    """The distinct BGRA pixels of a 32-bit BMP icon entry (or a PNG entry's bytes as one 'colour')."""
    if image.startswith(b"\x89PNG"):
        return {image}
    size, bw, bh, _, bits = struct.unpack_from("<IiiHH", image)
    assert (size, bw, bh, bits) == (40, w, 2 * h, 32), (size, bw, bh, bits)
    pixels = image[40:40 + 4 * w * h]
    return {pixels[i:i + 4] for i in range(0, len(pixels), 4)}


@pytest.mark.django_db
def test_favicon_is_a_real_icon_served_without_login_and_named_by_the_pages(client):
    response = client.get("/favicon.ico")  # anonymous
    assert response.status_code == 200
    assert response["Content-Type"] in ("image/x-icon", "image/vnd.microsoft.icon")
    data = b"".join(response.streaming_content)
    assert data == (ROOT / "webroot" / "favicon.ico").read_bytes()
    images = ico_images(data)
    assert {(w, h) for w, h, _ in images} >= {(16, 16), (32, 32)}
    for w, h, image in images:
        assert len(bmp_colours(w, h, image)) >= 3, f"{w}x{h}: not a picture"
    page = client.get("/accounts/login/").content.decode()
    assert '<link rel="icon" href="/favicon.ico"' in page  # base.html, which every page extends


# ---- the Docker image's static files -------------------------------------------------------------------------------

def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, argument) in order, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in text.split("\n"):
        if line.strip().startswith("#") or (not line.strip() and not pending):
            continue
        pending += line.strip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        word, _, arg = pending.partition(" ")
        out.append((word.upper(), " ".join(arg.split())))
        pending = ""
    return out


def dockerfile_env(instructions: list[tuple[str, str]]) -> dict[str, str]:
    return dict(kv.split("=", 1) for op, arg in instructions if op == "ENV" for kv in shlex.split(arg))


STATIC_PROBE = r"""
import django
django.setup()
from django.conf import settings
from django.templatetags.static import static
from django.test import Client
c = Client(HTTP_HOST="127.0.0.1")
css = static("css/desk.css")
r = c.get(css, HTTP_ACCEPT_ENCODING="gzip, br")
icon = c.get("/favicon.ico")
print(settings.HFT_STATIC, settings.STATIC_ROOT, css, r.status_code, r.headers.get("Content-Encoding"),
      r.headers.get("Cache-Control"), css in c.get("/accounts/login/").content.decode(), icon.status_code, sep="|")
"""


def test_docker_image_collects_and_serves_static(clone):
    """No docker here: the Dockerfile is read, its collectstatic line is run in the clone as the build runs it
    (the image's ENV, /app mapped to the clone, a fresh RUN_DIR as .dockerignore leaves .run/ out), and the desk then
    started with that ENV (and compose's secrets) serves the collected, hashed, compressed files."""
    steps = dockerfile_instructions((clone.main / "Dockerfile").read_text())
    env = dockerfile_env(steps)
    assert env.get("HFT_STATIC") == "collected", "the image must serve collected static (HFT_STATIC=collected)"
    run_dir, static_root = Path(env["RUN_DIR"]), Path(env["STATIC_ROOT"])
    assert run_dir not in static_root.parents, "collected files under RUN_DIR: a volume there would hide them"
    ops = [op for op, _ in steps]
    collect = [i for i, (op, arg) in enumerate(steps) if op == "RUN" and "collectstatic" in arg]
    assert len(collect) == 1, "one RUN collects static"
    copy_all = steps.index(("COPY", "--chown=hft:hft . ."))
    assert copy_all < collect[0] < ops.index("USER"), "collect after the code is copied, as root, before USER"
    line = steps[collect[0]][1]
    assert not re.search(r"SECRET_KEY=|HFT_SECRETS_KEY=", line), "no key in a build step"

    ignored = (clone.main / ".dockerignore").read_text().split()
    assert {".run", ".venv", ".git"} <= set(ignored), "the image must not take the checkout's keys, database or venv"

    import yaml

    compose = yaml.safe_load((clone.main / "docker-compose.yml").read_text())
    for name, service in compose["services"].items():
        if service.get("image") == "hftweb:latest":
            assert service.get("build") == ".", name
            assert not {"HFT_STATIC", "STATIC_ROOT", "RUN_DIR"} & set(service.get("environment") or {}), name
            assert not any(str(static_root) in str(v) for v in service.get("volumes") or []), name

    # the build step, in the clone
    docker_run, docker_static = clone.base / "docker-run", clone.base / "docker-static"
    mapping = [(str(run_dir), str(docker_run)), (str(static_root), str(docker_static)), ("/app", str(clone.main))]

    def mapped(text: str) -> str:
        for old, new in mapping:
            text = text.replace(old, new)
        return text

    build_env = {**{k: mapped(v) for k, v in env.items()}, "PATH": clone.env["PATH"], "HOME": clone.env["HOME"]}
    built = sh(mapped(line), clone.main, build_env)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-3000:]
    assert (docker_static / "staticfiles.json").is_file()
    # nothing left in RUN_DIR by the root build step (the Dockerfile chowns the folder only, not its contents)
    assert not docker_run.exists() or not any(docker_run.iterdir()), sorted(docker_run.iterdir())

    # the running image: its ENV plus what compose passes
    from cryptography.fernet import Fernet

    run_env = {**build_env, "DJANGO_SETTINGS_MODULE": "hftweb.settings", "REDIS_URL": clone.env["REDIS_URL"],
               "SECRET_KEY": secrets.token_urlsafe(50), "HFT_SECRETS_KEY": Fernet.generate_key().decode()}
    probe = sh(f"python -c {shlex.quote(STATIC_PROBE)}", clone.main, run_env)
    assert probe.returncode == 0, probe.stderr[-3000:]
    mode, root, css, status, encoding, cache, in_page, icon = probe.stdout.strip().splitlines()[-1].split("|")
    assert mode == "collected" and root == str(docker_static)
    assert re.fullmatch(r"/static/css/desk\.[0-9a-f]{12}\.css", css), css
    assert status == "200" and encoding in ("gzip", "br") and "immutable" in cache, (status, encoding, cache)
    assert in_page == "True" and icon == "200"
