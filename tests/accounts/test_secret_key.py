"""Production (DEBUG off) refuses to start with a missing, blank or weak SECRET_KEY: the settings module, which
manage.py, Daphne and the Celery workers import first, raises. Subprocesses, as each of them would start."""

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parent.parent.parent


def start(tmp_path, **env) -> subprocess.CompletedProcess:
    base = {"PATH": os.environ.get("PATH", ""), "DJANGO_SETTINGS_MODULE": "hftweb.settings", "RUN_DIR": str(tmp_path),
            "HFT_SECRETS_KEY": Fernet.generate_key().decode()}
    return subprocess.run([sys.executable, "-c", "import hftweb.settings"], cwd=ROOT, env={**base, **env},
                          capture_output=True, text=True, timeout=60)


WEAK = [
    pytest.param("", id="unset"),
    pytest.param("   ", id="blank"),
    pytest.param("insecure-debug-only-key", id="debug-fallback"),  # copied into a production environment
    pytest.param("django-insecure-" + secrets.token_urlsafe(50), id="startproject-placeholder"),
    pytest.param("ab" * 40, id="two-distinct-characters"),
    pytest.param(secrets.token_urlsafe(40)[:49], id="49-characters"),  # Django's minimum is 50 (check --deploy W009)
]


@pytest.mark.parametrize("key", WEAK)
def test_production_refuses_a_weak_secret_key(tmp_path, key):
    out = start(tmp_path, DEBUG="0", SECRET_KEY=key)
    assert out.returncode != 0
    assert "SECRET_KEY" in out.stderr and "ImproperlyConfigured" in out.stderr, out.stderr[-2000:]
    if key.strip():
        assert key.strip() not in out.stderr  # the message never prints the key


def test_production_starts_with_a_strong_key(tmp_path):
    out = start(tmp_path, DEBUG="0", SECRET_KEY=secrets.token_urlsafe(50))
    assert out.returncode == 0, out.stderr[-2000:]


def test_debug_starts_without_a_key(tmp_path):
    assert start(tmp_path, DEBUG="1").returncode == 0
