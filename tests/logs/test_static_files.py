"""Static files through WhiteNoise (issue 14, rough edges; the hand-written static view is gone).

make run collects static/ into RUN_DIR/staticfiles (devrun: collectstatic with HFT_STATIC=collected); the pages then
name content-hashed files, served compressed with a year's immutable cache. Tests and uncollected runs serve static/
through the finders under the plain names. Both run here in real processes with the real settings.
"""

import os
import subprocess
import sys

from tests.conftest import ROOT

PROBE = r"""
import django
django.setup()
from django.conf import settings
from django.templatetags.static import static
from django.test import Client
c = Client(HTTP_HOST="127.0.0.1")
css = static("css/desk.css")
r = c.get(css, HTTP_ACCEPT_ENCODING="gzip, br")
login = c.get("/accounts/login/").content.decode()
print(settings.HFT_STATIC, css, r.status_code, r.headers.get("Content-Encoding"), r.headers.get("Cache-Control"),
      css in login, c.get("/static/../hftweb/settings.py").status_code, sep="|")
"""


def probe(env: dict) -> list[str]:
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "No directory at" not in out.stderr, out.stderr  # no warning noise either way
    return out.stdout.strip().splitlines()[-1].split("|")


def base_env(run_dir) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("HFT_STATIC", "DJANGO_SETTINGS_MODULE")}
    return {**env, "RUN_DIR": str(run_dir), "DJANGO_SETTINGS_MODULE": "hftweb.settings",
            "SECRET_KEY": "static-test-secret-key-not-for-production-0123456789abcdef"}


def test_collected_static_is_hashed_compressed_and_cached_for_a_year(tmp_path):
    env = base_env(tmp_path / "run")
    subprocess.run([sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"], cwd=ROOT, check=True,
                   env={**env, "HFT_STATIC": "collected"}, timeout=300)
    assert (tmp_path / "run" / "staticfiles" / "staticfiles.json").is_file()
    mode, css, status, encoding, cache, in_page, escape = probe(env)  # the manifest alone selects the mode
    assert mode == "collected" and css.startswith("/static/css/desk.") and css != "/static/css/desk.css", css
    assert status == "200" and encoding in ("gzip", "br") and "immutable" in cache and "max-age=315360000" in cache
    assert in_page == "True"  # the login page links the hashed name
    assert escape == "404"


def test_uncollected_static_is_served_from_the_finders(tmp_path):
    mode, css, status, _, cache, in_page, escape = probe(base_env(tmp_path / "run"))
    assert (mode, css, status, in_page, escape) == ("finders", "/static/css/desk.css", "200", "True", "404")
    assert "immutable" not in (cache or "")  # plain names: a short cache, so an edit shows
