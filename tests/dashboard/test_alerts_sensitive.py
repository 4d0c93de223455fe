"""Alert channel secrets stay out of Django's error reports, and channel keys are parsed without isdigit() (issue 12
leftovers).

- The views that take a channel's token or webhook URL (add, edit) are marked @sensitive_post_parameters("secret"):
  a request that fails there (a 500 page with DEBUG, the mail to ADMINS, the django.request log's report) shows
  the field masked. Proven with Django's own ExceptionReporter over a real failing request (a viewer's POST,
  refused before its input is read).
- delivery_target("db:<id>") read the id with isdigit(), true for "²" and "١" (then int() raised or read another
  id); now parse_id, and only the key as AlertChannel.key spells it.
"""

import sys

import pytest
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import PermissionDenied
from django.test import RequestFactory
from django.views.debug import ExceptionReporter

from apps.alerts.models import AlertChannel
from apps.alerts.selectors import delivery_target
from apps.dashboard.views_alerts import alert_channel_edit, alerts_page

TOKEN = "https://hooks.example.test/T0KEN-very-secret-0123456789"


def _report(view, request, **kwargs) -> str:
    """The text report Django's error handling would write for the exception the view raises."""
    try:
        view(request, **kwargs)
    except PermissionDenied:
        return ExceptionReporter(request, *sys.exc_info()).get_traceback_text()
    raise AssertionError(f"{view.__name__} accepted the POST")


@pytest.mark.django_db
@pytest.mark.parametrize("who", ["viewer", "anonymous"])
def test_a_failing_add_or_edit_never_shows_the_secret_in_the_error_report(viewer, who):
    channel = AlertChannel.objects.create(kind="webhook", name="ops-hook", events=["fill"], secret="old-" + TOKEN)
    posted = {"kind": "webhook", "name": "ops-hook", "events": "fill", "secret": TOKEN}
    for view, path, kwargs in [(alerts_page, "/alerts/", {}),
                               (alert_channel_edit, f"/alerts/{channel.pk}/edit/", {"channel_id": channel.pk})]:
        request = RequestFactory().post(path, posted)
        request.user = viewer if who == "viewer" else AnonymousUser()
        report = _report(view, request, **kwargs)
        assert "ops-hook" in report  # the report does list the POST...
        assert TOKEN not in report, f"{view.__name__} leaks the secret into the error report"
        assert "secret = '********************'" in report  # ...with the secret masked


@pytest.mark.django_db
def test_delivery_target_reads_only_a_canonical_ascii_id():
    channel = AlertChannel.objects.create(kind="webhook", name="ops-hook", events=["fill"], secret=TOKEN)
    assert delivery_target(f"db:{channel.pk}").channel_id == channel.pk
    for key in ["db:²", f"db:{channel.pk}²", "db:١", f"db:0{channel.pk}", f"db: {channel.pk}", f"db:+{channel.pk}",
                "db:" + "9" * 400, "db:", "db:-1", "db:0", "env:nothing"]:
        assert delivery_target(key) is None, key
