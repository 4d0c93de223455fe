"""Text from outside the desk, stored: PostgreSQL refuses a NUL character in text and in JSON strings (SQLite stores
it), so text the desk does not control must lose its NULs before it is written. Forms refuse them already
(Django's CharField, and the pages that read a reason themselves: tests/hardening); these are the writers that take
text from the network. Run on SQLite and again on PostgreSQL (`make test` with HFT_TEST_DATABASE_URL)."""

import pytest

from apps.alerts.models import AlertDelivery
from apps.alerts.services import alert_channel_create, alert_emit
from tests.alerts.conftest import eager, endpoint  # noqa: F401 - fixtures

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]


def test_a_webhook_answering_with_nul_characters_is_recorded_as_failed(endpoint, eager, settings, no_internet,  # noqa: F811
                                                                       django_capture_on_commit_callbacks):
    settings.HFT_ALERT_MAX_RETRIES = 1
    endpoint.script = [500, 404]
    endpoint.error_body = lambda url: '{"error": "bad\x00request", "raw": "\x00\x00"}'
    alert_channel_create(actor=None, kind="webhook", name="hook", events=["kill_switch"],
                         secret=endpoint.url + "/hook")
    with django_capture_on_commit_callbacks(execute=True):
        alert_emit(kind="kill_switch", title="Kill switch tripped", body="daily loss")
    d = AlertDelivery.objects.get()
    assert (d.status, d.attempts, d.http_status) == ("failed", 2, 404)
    assert d.error == 'HTTP 404: {"error": "badrequest", "raw": ""}'
    assert [e["error"] for e in d.attempts_log] == ['HTTP 500: {"error": "badrequest", "raw": ""}', d.error]
