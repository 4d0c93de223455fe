"""The alert form's URL rule (issue 14, rough edges): https://, or http:// only to this machine. The check, its
refusal and the form's help text say the same rule."""

import html

import pytest

from apps.alerts.models import AlertChannel
from apps.alerts.services import URL_RULE

URL = "/alerts/"


def webhook(secret: str) -> dict:
    return {"name": "hook", "kind": "webhook", "secret": secret, "chat_id": "", "events": ["fill"], "enabled": "1"}


@pytest.mark.parametrize("url", ["https://example.com/hook", "http://127.0.0.1:9000/hook", "http://localhost/h",
                                 "http://[::1]:8080/h"])
def test_https_anywhere_and_http_to_loopback_are_accepted(op_client, url):
    assert op_client.post(URL, webhook(url)).status_code == 302
    assert AlertChannel.objects.get(name="hook").secret == url


@pytest.mark.parametrize("url", ["http://example.com/hook", "http://10.0.0.5/hook", "http://127.0.0.1.example.com/h",
                                 "ftp://127.0.0.1/h", "example.com/hook"])
def test_anything_else_is_refused_with_the_rule_itself(op_client, url):
    response = op_client.post(URL, webhook(url))
    assert response.status_code == 400 and f"must be {html.escape(URL_RULE)}" in response.content.decode()
    assert not AlertChannel.objects.exists()


def test_the_form_states_the_rule_the_check_applies(op_client):
    page = op_client.get(URL).content.decode()
    assert html.escape(URL_RULE) in page and "any https URL" not in page
