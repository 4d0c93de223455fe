"""The log keeps what an operator must read (issue 14, rough edges): a 403 is one line, not a traceback."""

import logging

from django.urls import reverse


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
