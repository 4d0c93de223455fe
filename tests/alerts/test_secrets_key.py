"""HFT_SECRETS_KEY, the key that encrypts alert channel secrets at rest: production (DEBUG off) refuses to start
without it or with a malformed one, like SECRET_KEY; `make run` (hftweb/devrun.py) creates one beside the
database on first run, keeps it, and never lets it into git. No database: these run the settings module and
devrun's helper in subprocesses / a tmp dir."""

import os
import secrets
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parent.parent.parent


def import_settings(tmp_path, **env) -> subprocess.CompletedProcess:
    """Import hftweb.settings (what manage.py, daphne and celery do first) in a clean environment."""
    base = {"PATH": os.environ.get("PATH", ""), "DJANGO_SETTINGS_MODULE": "hftweb.settings",
            "RUN_DIR": str(tmp_path), "SECRET_KEY": secrets.token_urlsafe(50)}
    return subprocess.run([sys.executable, "-c", "import hftweb.settings"], cwd=ROOT, env={**base, **env},
                          capture_output=True, text=True, timeout=60)


def test_production_refuses_to_start_without_a_key(tmp_path):
    out = import_settings(tmp_path, DEBUG="0")
    assert out.returncode != 0
    assert "HFT_SECRETS_KEY must be set unless DEBUG=1" in out.stderr, out.stderr[-2000:]


def test_production_refuses_a_key_that_is_not_a_fernet_key(tmp_path):
    good = Fernet.generate_key().decode()
    for bad, message in [("insecure", "HFT_SECRETS_KEY: key 1 of 1 is not a Fernet key"),
                         (f"{good},short", "HFT_SECRETS_KEY: key 2 of 2 is not a Fernet key"),
                         (" , ", "HFT_SECRETS_KEY must be set unless DEBUG=1")]:
        out = import_settings(tmp_path, DEBUG="0", HFT_SECRETS_KEY=bad)
        assert out.returncode != 0 and message in out.stderr, (bad, out.stderr[-2000:])
        assert good not in out.stderr  # the message never prints a key


def test_production_starts_with_a_key_or_a_rotation_list(tmp_path):
    new, old = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    for value in (new, f"{new},{old}", f" {new} , {old} "):
        out = import_settings(tmp_path, DEBUG="0", HFT_SECRETS_KEY=value)
        assert out.returncode == 0, out.stderr[-2000:]


def test_debug_starts_without_a_key(tmp_path):
    assert import_settings(tmp_path, DEBUG="1").returncode == 0


def test_tests_run_with_their_own_key(settings):
    from hftweb.settings_test import TEST_SECRETS_KEY

    assert settings.HFT_SECRETS_KEYS == [TEST_SECRETS_KEY]


# --- make run ------------------------------------------------------------------------------------------


def test_make_run_creates_the_key_beside_the_database_once(tmp_path, monkeypatch):
    from hftweb import devrun

    monkeypatch.delenv("HFT_SECRETS_KEY", raising=False)
    devrun.ensure_secrets_key(tmp_path)
    path = tmp_path / "hft_secrets_key"
    key = path.read_text().strip()
    Fernet(key)  # a valid key
    assert os.environ["HFT_SECRETS_KEY"] == key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # the owner only, from the moment it exists
    monkeypatch.delenv("HFT_SECRETS_KEY")
    devrun.ensure_secrets_key(tmp_path)  # the next run keeps it: a new key would orphan every stored secret
    assert os.environ["HFT_SECRETS_KEY"] == key and path.read_text().strip() == key


def test_make_run_keeps_a_key_from_the_environment(tmp_path, monkeypatch):
    from hftweb import devrun

    given = Fernet.generate_key().decode()
    monkeypatch.setenv("HFT_SECRETS_KEY", given)
    devrun.ensure_secrets_key(tmp_path)
    assert os.environ["HFT_SECRETS_KEY"] == given and not (tmp_path / "hft_secrets_key").exists()


@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="not a git checkout")
def test_the_generated_key_is_never_committed():
    out = subprocess.run(["git", "check-ignore", "-q", ".run/hft_secrets_key"], cwd=ROOT)
    assert out.returncode == 0, ".run/hft_secrets_key is not ignored by git"
