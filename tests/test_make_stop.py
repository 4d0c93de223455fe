"""`make stop` finds `make run` where devrun put its pidfile: in RUN_DIR (issue 12 leftover: it read .run/ only, so a
desk started with RUN_DIR=elsewhere could not be stopped, and one in .run/ was stopped instead of it).

The pidfile's path is asked of hftweb/devrun.py itself (its PIDFILE, under the same environment), and the process
it names is a real one that reports the SIGINT it receives, as devrun does on Ctrl-C.
"""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.skipif(not shutil.which("make"), reason="no make")

# Stands in for devrun: waits for SIGINT, says so, exits.
FAKE_DEVRUN = """
import signal, sys, time
signal.signal(signal.SIGINT, lambda *a: (print("SIGINT", flush=True), sys.exit(0)))
print("up", flush=True)
time.sleep(60)
"""


def devrun_pidfile(env: dict) -> Path:
    out = subprocess.run([sys.executable, "-c", "import hftweb.devrun as d; print(d.PIDFILE)"], cwd=ROOT, env=env,
                         capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())


def make_stop(env: dict) -> str:
    return subprocess.run(["make", "-s", "stop"], cwd=ROOT, env=env, capture_output=True, text=True,
                          check=True).stdout


def test_make_stop_signals_the_devrun_of_its_run_dir(tmp_path):
    env = {**os.environ, "RUN_DIR": str(tmp_path / "run")}
    pidfile = devrun_pidfile(env)
    assert pidfile == tmp_path / "run" / "devrun.pid"  # devrun's own idea of it
    assert make_stop(env).startswith("not running")  # no pidfile yet

    fake = subprocess.Popen([sys.executable, "-c", FAKE_DEVRUN], stdout=subprocess.PIPE, text=True)
    try:
        assert fake.stdout.readline().strip() == "up"
        pidfile.parent.mkdir(parents=True)  # devrun's main() makes it
        pidfile.write_text(str(fake.pid))
        out = make_stop(env)
        assert out.startswith(f"sent SIGINT to {fake.pid}"), out
        assert fake.wait(timeout=10) == 0
        assert fake.stdout.read().strip() == "SIGINT"
        # the process is gone: a stale pidfile says not running, it signals nobody
        assert make_stop(env).startswith("not running")
    finally:
        if fake.poll() is None:
            fake.kill()
            fake.wait()


def test_make_stop_leaves_a_desk_in_another_run_dir_alone(tmp_path):
    mine = {**os.environ, "RUN_DIR": str(tmp_path / "mine")}
    other = {**os.environ, "RUN_DIR": str(tmp_path / "other")}
    fake = subprocess.Popen([sys.executable, "-c", FAKE_DEVRUN], stdout=subprocess.PIPE, text=True)
    try:
        assert fake.stdout.readline().strip() == "up"
        devrun_pidfile(other).parent.mkdir(parents=True, exist_ok=True)
        devrun_pidfile(other).write_text(str(fake.pid))
        assert make_stop(mine).startswith("not running")
        time.sleep(0.2)
        assert fake.poll() is None  # still running: it belongs to the other RUN_DIR
    finally:
        fake.kill()
        fake.wait()
