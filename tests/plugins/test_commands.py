"""`manage.py new_ghost` and `manage.py check_ghost` as a user runs them (real processes, real data): the generated
ghost passes check_ghost, its own test and ruff; a cheating ghost makes check_ghost exit 1 with the reason."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.datafiles import BTC_90D, require
from tests.plugins import cheaters

REPO = Path(__file__).resolve().parents[2]


def manage(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    # no database needed: settings_test with the run dir's SQLite path the session already uses
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "hftweb.settings_test", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "manage.py", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_new_ghost_output_passes_check_ghost_its_own_test_and_ruff(tmp_path):
    require(BTC_90D)
    made = manage("new_ghost", "My-Breakout", "--dir", str(tmp_path))
    assert made.returncode == 0, made.stderr
    module, test = tmp_path / "my_breakout.py", tmp_path / "test_my_breakout.py"
    assert module.is_file() and test.is_file()

    checked = manage("check_ghost", "my_breakout", "--dir", str(tmp_path))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    out = checked.stdout
    for words in ("ok   look-ahead", "ok   input mutation", "ok   exceptions", "ok   NaN handling",
                  "ok   live = backtest", "warm-up: 61 minutes", "per day", "bars/s", "every check passed"):
        assert words in out, out

    own = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test)], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert own.returncode == 0 and "2 passed" in own.stdout, own.stdout + own.stderr
    lint = subprocess.run([str(Path(sys.executable).parent / "ruff"), "check", str(module), str(test)], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert lint.returncode == 0, lint.stdout


def test_new_ghost_refuses_a_taken_kind_and_existing_files(tmp_path):
    taken = manage("new_ghost", "spike_fader", "--dir", str(tmp_path))
    assert taken.returncode == 1 and "already registered" in taken.stderr
    assert manage("new_ghost", "x!", "--dir", str(tmp_path)).returncode == 1
    assert manage("new_ghost", "fresh_one", "--dir", str(tmp_path)).returncode == 0
    again = manage("new_ghost", "fresh_one", "--dir", str(tmp_path))
    assert again.returncode == 1 and "pass --force" in again.stderr


@pytest.mark.parametrize(("source", "reason"), [
    (cheaters.PEEKING, "fails the plug-in guards: look-ahead: the output at"),
    (cheaters.MUTATING, "fails the plug-in guards: input mutation:"),
])
def test_check_ghost_exits_1_with_the_reason_on_a_failing_ghost(tmp_path, source, reason):
    path = cheaters.write(tmp_path, "cheater", source)
    data = require("klines/binance_api_spot_BTCUSDT_1m_2020-01-01_2020-01-07.csv.gz")  # a smaller real file
    res = manage("check_ghost", str(path), str(data))
    assert res.returncode == 1, res.stdout
    assert reason in res.stderr, res.stderr
    assert "FAIL" in res.stdout


def test_check_ghost_runs_a_builtin_kind_and_says_what_is_missing():
    data = require("klines/binance_api_spot_BTCUSDT_1m_2020-01-01_2020-01-07.csv.gz")
    ok = manage("check_ghost", "spike_fader", str(data))
    assert ok.returncode == 0 and "every check passed" in ok.stdout, ok.stdout + ok.stderr
    missing = manage("check_ghost", "no_such_ghost", str(data))
    assert missing.returncode == 1 and "no ghost 'no_such_ghost'" in missing.stderr


def test_a_process_started_with_hft_ghosts_dir_loads_the_folder_at_ready(tmp_path):
    """The wiring as `make run` uses it: HFT_GHOSTS_DIR in the environment, GhostsConfig.ready loads at start."""
    cheaters.write(tmp_path, "env_fader", cheaters.HONEST)
    cheaters.write(tmp_path, "env_peeker", cheaters.PEEKING)
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "hftweb.settings_test", "HFT_GHOSTS_DIR": str(tmp_path)}
    code = ("import django; django.setup()\n"
            "from apps.engine.registry import GHOSTS, is_plugin\n"
            "from apps.ghosts.plugins import refused\n"
            "print('plugins', sorted(k for k in GHOSTS if is_plugin(k)))\n"
            "print('refused', [(r.kind, r.reason.split(':')[0]) for r in refused()])\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "plugins ['env_fader']" in res.stdout
    assert "refused [('env_peeker', 'look-ahead')]" in res.stdout
