"""The log keeps what an operator must read (issue 14, rough edges): a 403 is one line, not a traceback."""

import logging
import os
import subprocess
import sys

from django.urls import reverse

from tests.conftest import ROOT


def console_text(caplog) -> str:
    # formatted as the console handler of settings.LOGGING would print them (exc_info included when present)
    fmt = logging.Formatter("%(levelname)s %(name)s %(message)s")
    return "\n".join(fmt.format(r) for r in caplog.records)


def test_a_viewers_forbidden_post_logs_one_line_without_traceback(viewer_client, caplog):
    url = reverse("research:study-pause", args=[1])
    with caplog.at_level(logging.WARNING, logger="django.request"):
        assert viewer_client.post(url).status_code == 403
    forbidden = [r for r in caplog.records if r.name == "django.request" and getattr(r, "status_code", 0) == 403]
    assert len(forbidden) == 1 and forbidden[0].exc_info is None, console_text(caplog)
    text = console_text(caplog)
    assert "Forbidden" in text and url in text  # the line itself stays: who was refused where
    assert "Traceback" not in text and "PermissionDenied" not in text, text


def test_a_server_error_keeps_its_traceback():
    # the filter only drops a 403's traceback: a 500 is a fault and keeps it
    from hftweb.logfilters import ForbiddenWithoutTraceback

    try:
        raise RuntimeError("boom")
    except RuntimeError:
        import sys

        rec = logging.LogRecord("django.request", logging.ERROR, __file__, 1, "Internal Server Error", (),
                                sys.exc_info())
    rec.status_code = 500
    assert ForbiddenWithoutTraceback().filter(rec) and rec.exc_info is not None
    rec.status_code = 403
    assert ForbiddenWithoutTraceback().filter(rec) and rec.exc_info is None


CELERY_LEVELS = r"""
import django, logging
django.setup()
print(*(logging.getLevelName(logging.getLogger(n).getEffectiveLevel())
        for n in ("celery.app.trace", "celery.worker.strategy", "celery.beat", "apps.runtime.tasks")), sep="|")
"""


def test_routine_celery_lines_are_hidden_unless_asked_for():
    # the per-task received/succeeded lines and beat's sends: ~4 lines a second at HFT_SIM_SPEED=120 before

    def levels(**extra: str) -> list[str]:
        env = {k: v for k, v in os.environ.items() if k not in ("LOG_CELERY_TASKS", "LOG_LEVEL")}
        env.update(DJANGO_SETTINGS_MODULE="hftweb.settings_test", **extra)
        out = subprocess.run([sys.executable, "-c", CELERY_LEVELS], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=120, check=True)
        return out.stdout.strip().splitlines()[-1].split("|")

    assert levels() == ["WARNING", "WARNING", "WARNING", "INFO"]  # the apps' own INFO stays
    assert levels(LOG_CELERY_TASKS="1") == ["INFO", "INFO", "INFO", "INFO"]
