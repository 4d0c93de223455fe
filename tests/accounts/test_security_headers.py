"""Content-Security-Policy (django-csp) and the other security headers on every kind of response, and the
templates' side of the bargain: no inline script for the policy to have to allow."""

import re
from pathlib import Path

import pytest
from django.urls import reverse

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parent.parent.parent


def directives(response) -> dict[str, list[str]]:
    header = response.headers.get("Content-Security-Policy", "")
    return {d.split()[0]: d.split()[1:] for d in header.split(";") if d.strip()}


def assert_secure_headers(response) -> None:
    csp = directives(response)
    assert csp.get("default-src") == ["'self'"], response.headers.get("Content-Security-Policy")
    assert csp["script-src"] == ["'self'"]  # no inline script, no eval: an injected <script> does not run
    assert csp["object-src"] == ["'none'"] and csp["base-uri"] == ["'none'"]
    assert csp["frame-ancestors"] == ["'none'"] and csp["form-action"] == ["'self'"]
    assert "'unsafe-eval'" not in sum(csp.values(), [])
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["X-Frame-Options"] == "DENY"
    assert response["Cross-Origin-Opener-Policy"] == "same-origin"
    policy = response["Permissions-Policy"]
    for feature in ("camera=()", "microphone=()", "geolocation=()", "payment=()", "usb=()"):
        assert feature in policy, policy


@pytest.mark.parametrize("path", ["/", "/ghosts/", "/trades/", "/risk/", "/lab/", "/alerts/",
                                  "/audit/", "/state.json", "/trades.csv", "/admin/", "/no-such-page/"])
def test_pages_send_the_security_headers(op_client, desk, path):
    assert_secure_headers(op_client.get(path))


def test_login_page_and_its_refusals_send_them_too(client):
    assert_secure_headers(client.get(reverse("login")))
    assert_secure_headers(client.post(reverse("login"), {"username": "x", "password": "y"}))
    assert_secure_headers(client.get("/healthz"))


SCRIPT = re.compile(r"<script\b([^>]*)>", re.I)
HANDLER = re.compile(r"""<[a-z][^>]*\s(on[a-z]+)\s*=""", re.I)
JS_URL = re.compile(r"""(href|src|action)\s*=\s*["']\s*javascript:""", re.I)


def test_templates_have_no_inline_script():
    """What keeps script-src at 'self': every <script> loads a file or holds JSON data (json_script), and no
    element carries an inline handler or a javascript: URL. A new one fails here, not in a browser console."""
    offenders = []
    for path in sorted((ROOT / "templates").rglob("*.html")):
        text = path.read_text()
        for attrs in SCRIPT.findall(text):
            if "src=" not in attrs and 'type="application/json"' not in attrs:
                offenders.append(f"{path.relative_to(ROOT)}: <script{attrs}>")
        offenders += [f"{path.relative_to(ROOT)}: {m.group(1)}=" for m in HANDLER.finditer(text)]
        offenders += [f"{path.relative_to(ROOT)}: javascript: URL" for m in JS_URL.finditer(text)]
    assert not offenders, offenders


def test_only_the_study_page_allows_eval_for_plotlys_parcoords(op_client, settings):
    from django.urls import resolve

    assert set(settings.HFT_CSP_VIEW_UPDATES) == {"research:study"}
    assert resolve("/lab/studies/1/").view_name == "research:study"  # the name still names the page
    missing = op_client.get("/lab/studies/999999/")  # a 404 from that view still carries the widened policy
    assert directives(missing)["script-src"] == ["'self'", "'unsafe-eval'"]
    assert directives(op_client.get("/lab/studies/999999/trials/"))["script-src"] == ["'self'"]
