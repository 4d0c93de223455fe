"""`manage.py add_user NAME --role viewer`, exactly as the README writes it, in a checkout where `make run` has made
its keys (RUN_DIR/secret_key, RUN_DIR/hft_secrets_key) and nothing is exported: it used to fail with
ImproperlyConfigured (SECRET_KEY), and without --password it prompted, which fails without a terminal."""

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parent.parent.parent


def manage(run_dir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {"PATH": os.environ.get("PATH", ""), "DJANGO_SETTINGS_MODULE": "hftweb.settings", "RUN_DIR": str(run_dir)}
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=180)


def test_add_user_as_the_readme_writes_it(tmp_path):
    (tmp_path / "secret_key").write_text(secrets.token_urlsafe(50))
    (tmp_path / "hft_secrets_key").write_text(Fernet.generate_key().decode())
    assert manage(tmp_path, "migrate", "-v", "0").returncode == 0
    out = manage(tmp_path, "add_user", "vera", "--role", "viewer")
    assert out.returncode == 0, out.stderr[-2000:]
    password = re.search(r"user 'vera' has role viewer password '([^']+)'", out.stdout).group(1)
    assert len(password) >= 20
    check = manage(tmp_path, "shell", "-c",
                   "from django.contrib.auth import authenticate; from apps.accounts.roles import role_of; "
                   f"u = authenticate(username='vera', password={password!r}); print(u is not None, role_of(u))")
    assert check.returncode == 0, check.stderr[-2000:]
    assert check.stdout.strip().splitlines()[-1].split() == ["True", "viewer"]


def test_without_make_runs_keys_it_still_refuses(tmp_path):
    out = manage(tmp_path, "add_user", "vera", "--role", "viewer")
    assert out.returncode != 0 and "SECRET_KEY" in out.stderr
