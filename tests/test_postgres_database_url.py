"""DATABASE_URL parsing (hftweb/settings.py): what each backend gets from the URL.

Each case imports the settings in a fresh interpreter (they are read once, at import) with only DATABASE_URL
changed, and checks the behaviour, not just the settings dict: SQLite's journal mode as the file reports it, and
whether `transaction.atomic()` takes SQLite's write lock when it begins (IMMEDIATE) or at the first write
(DEFERRED, where two workers that both read then write deadlock into "database is locked").
"""

import json
import os
import subprocess
import sys

from tests.conftest import ROOT

SQLITE_PROBE = r"""
import json, sqlite3, django
django.setup()
from django.db import connection, transaction
with connection.cursor() as c:
    c.execute("CREATE TABLE IF NOT EXISTS probe (x integer)")
    journal = c.execute("PRAGMA journal_mode").fetchone()[0]
    synchronous = c.execute("PRAGMA synchronous").fetchone()[0]
other = sqlite3.connect(connection.settings_dict["NAME"], timeout=0, isolation_level=None)
with transaction.atomic():
    connection.cursor().execute("SELECT count(*) FROM probe")  # a read only
    try:
        other.execute("BEGIN IMMEDIATE")  # a second writer, while the first block has not written yet
        other.execute("ROLLBACK")
        second_writer = "got the lock"
    except sqlite3.OperationalError as e:
        second_writer = str(e)
print(json.dumps({"journal_mode": journal, "synchronous": synchronous, "second_writer": second_writer,
                  "name": connection.settings_dict["NAME"], "test_name": connection.creation._get_test_db_name(),
                  "timeout": connection.settings_dict["OPTIONS"].get("timeout")}))
"""


def probe(script: str, env: dict) -> dict:
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         env={**os.environ, "DJANGO_SETTINGS_MODULE": "hftweb.settings_test", **env})
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_sqlite_database_url_keeps_wal_and_immediate_transactions(tmp_path):
    path = tmp_path / "desk.sqlite3"
    got = probe(SQLITE_PROBE, {"DATABASE_URL": f"sqlite:///{path}", "RUN_DIR": str(tmp_path / "run")})
    assert got["name"] == str(path)
    assert got["journal_mode"] == "wal"
    assert got["synchronous"] == 1  # NORMAL: safe in WAL mode
    assert got["second_writer"] == "database is locked"  # atomic() began with BEGIN IMMEDIATE
    assert got["timeout"] == 20
    # the tests' database is a file beside the other runtime files (Daphne and the workers share it), never
    # an in-memory one
    assert got["test_name"] == str(tmp_path / "run" / "test-db.sqlite3")


def test_the_default_sqlite_database_is_the_same(tmp_path):
    """No DATABASE_URL: SQLITE_PATH (here) with the same options, so both spellings behave alike."""
    path = tmp_path / "desk.sqlite3"
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    out = subprocess.run([sys.executable, "-c", SQLITE_PROBE], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         env={**env, "DJANGO_SETTINGS_MODULE": "hftweb.settings_test", "SQLITE_PATH": str(path),
                              "RUN_DIR": str(tmp_path / "run")})
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert (got["name"], got["journal_mode"], got["synchronous"], got["second_writer"]) == (
        str(path), "wal", 1, "database is locked")


def test_a_database_url_with_an_unencoded_password_refuses_to_start_saying_why():
    """docker-compose.yml builds DATABASE_URL from POSTGRES_PASSWORD as it is: a password from `openssl rand -base64`
    holds '/' or '+', and '/' ends the URL's host part. The refusal names the variable and the remedy, and prints
    no part of the password."""
    out = subprocess.run([sys.executable, "-c", "import django; django.setup()"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, env={**os.environ, "DJANGO_SETTINGS_MODULE": "hftweb.settings_test",
                                                     "DATABASE_URL": "postgres://hftweb:s3cr/etPart@db:5432/hftweb"})
    assert out.returncode != 0
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("django.core.exceptions.ImproperlyConfigured: DATABASE_URL is not a valid URL"), last
    assert "percent-encoded" in last
    assert "s3cr" not in out.stderr and "etPart" not in out.stderr
