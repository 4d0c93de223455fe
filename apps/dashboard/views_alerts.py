"""Alerts page: operators add, edit, enable/disable channels and send a test alert; everybody signed in
sees the channels (database and environment) and the recent deliveries.

Secrets are write-only: the page says "set" and offers a field to replace it, never the value, not even
after a refused POST. A viewer's POST is refused (403) before its input is read; bad input renders the
page again with the errors and a 400, and changes nothing.
"""

from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_http_methods, require_POST

from apps.alerts.models import SUBSCRIBABLE, AlertChannel, AlertEvent
from apps.alerts.selectors import alert_channels, env_channels, recent_deliveries
from apps.alerts.services import (
    URL_RULE,
    AlertConfigError,
    alert_channel_create,
    alert_channel_set_enabled,
    alert_channel_update,
    alert_test_send,
)
from apps.common.parsing import parse_id
from apps.dashboard.context_processors import request_is_operator

EVENT_CHOICES = [(e, AlertEvent(e).label) for e in SUBSCRIBABLE]


class ChannelForm(forms.Form):
    """Field-level checks; the service re-checks everything kind-specific (token, chat id, URL)."""

    kind = forms.ChoiceField(choices=AlertChannel.Kind.choices, required=False,
                             error_messages={"invalid_choice": "kind must be telegram, discord or webhook"})
    name = forms.CharField(max_length=64, strip=True, error_messages={
        "required": "give the channel a name, e.g. ops-telegram", "max_length": "name: 64 characters at most"})
    events = forms.MultipleChoiceField(choices=EVENT_CHOICES, required=False, error_messages={
        "invalid_choice": "unknown event %(value)s"})
    chat_id = forms.CharField(max_length=64, required=False, strip=True)
    # render_value=False: even a refused POST never echoes the token back into the page
    secret = forms.CharField(max_length=2000, required=False, strip=True, widget=forms.PasswordInput())
    enabled = forms.BooleanField(required=False)


def _errors(form: forms.Form) -> list[str]:
    return [str(e) for errs in form.errors.values() for e in errs]


def _render(request: HttpRequest, *, form_values: dict | None = None, errors: list[str] | None = None,
            editing: AlertChannel | None = None, status: int = 200) -> HttpResponse:
    values = form_values or {}
    if editing is not None and not values:
        values = {"name": editing.name, "events": list(editing.events), "chat_id": editing.chat_id,
                  "enabled": editing.enabled}
    values.setdefault("events", [] if errors else list(SUBSCRIBABLE))
    values.setdefault("enabled", True)
    values.pop("secret", None)  # belt and braces: the template has no way to print it
    return render(request, "dashboard/alerts.html", {
        "nav": "alerts",
        "channels": alert_channels(),
        "env_channels": env_channels(),
        "deliveries": recent_deliveries(50),
        "event_choices": EVENT_CHOICES,
        "kinds": AlertChannel.Kind.choices,
        "values": values,
        "errors": errors or [],
        "editing": editing,
        "url_rule": URL_RULE,  # the help text says the rule the check applies, word for word
    }, status=status)


def _posted(form: forms.Form) -> dict:
    return {k: form.data.get(k, "") for k in ("kind", "name", "chat_id")} | {
        "events": form.data.getlist("events"), "enabled": bool(form.data.get("enabled"))}


def _require_operator(request: HttpRequest) -> None:
    if not request_is_operator(request):  # before reading input: a viewer learns nothing and changes nothing
        raise PermissionDenied("only operators can change alert channels")


@sensitive_post_parameters("secret")  # Django's error reports (500 page, mail to ADMINS, log) mask the token
@require_http_methods(["GET", "POST"])
def alerts_page(request: HttpRequest) -> HttpResponse:
    if request.method == "GET":
        return _render(request)
    _require_operator(request)
    form = ChannelForm(request.POST)
    if not form.is_valid():
        return _render(request, form_values=_posted(form), errors=_errors(form), status=400)
    d = form.cleaned_data
    if not d["kind"]:
        return _render(request, form_values=_posted(form), errors=["choose a kind"], status=400)
    try:
        ch = alert_channel_create(actor=request.user, kind=d["kind"], name=d["name"], events=d["events"],
                                  chat_id=d["chat_id"], secret=d["secret"], enabled=d["enabled"])
    except AlertConfigError as e:
        return _render(request, form_values=_posted(form), errors=[str(e)], status=400)
    messages.success(request, f"Channel {ch.name} added. Send a test alert to check it.")
    return redirect("dashboard:alerts")


@sensitive_post_parameters("secret")  # Django's error reports (500 page, mail to ADMINS, log) mask the token
@require_http_methods(["GET", "POST"])
def alert_channel_edit(request: HttpRequest, channel_id: int) -> HttpResponse:
    if request.method == "GET":
        if not request_is_operator(request):
            raise PermissionDenied("only operators can change alert channels")
        return _render(request, editing=get_object_or_404(AlertChannel, pk=channel_id))
    _require_operator(request)
    ch = get_object_or_404(AlertChannel, pk=channel_id)
    form = ChannelForm(request.POST)
    if not form.is_valid():
        return _render(request, form_values=_posted(form), errors=_errors(form), editing=ch, status=400)
    d = form.cleaned_data
    try:
        ch = alert_channel_update(actor=request.user, channel_id=ch.pk, name=d["name"], events=d["events"],
                                  chat_id=d["chat_id"], enabled=d["enabled"], secret=d["secret"] or None)
    except AlertConfigError as e:
        return _render(request, form_values=_posted(form), errors=[str(e)], editing=ch, status=400)
    messages.success(request, f"Channel {ch.name} saved" + (" (secret replaced)." if d["secret"] else "."))
    return redirect("dashboard:alerts")


@require_POST
def alert_channel_toggle(request: HttpRequest, channel_id: int) -> HttpResponse:
    _require_operator(request)
    raw = request.POST.get("enabled", "")
    if raw not in ("0", "1"):
        return _render(request, errors=["enabled must be 0 or 1"], status=400)
    try:
        ch = alert_channel_set_enabled(actor=request.user, channel_id=channel_id, enabled=raw == "1")
    except AlertChannel.DoesNotExist:
        raise Http404(f"no alert channel {channel_id}") from None
    messages.success(request, f"Channel {ch.name} {'enabled' if ch.enabled else 'disabled'}.")
    return redirect("dashboard:alerts")


@require_POST
def alert_test(request: HttpRequest) -> HttpResponse:
    _require_operator(request)
    key = request.POST.get("channel", "")
    # "db:<id>" must be an id in ASCII digits before it reaches the selector: "db:²" passed its isdigit() and
    # failed int() (a 500). Other keys name environment channels, matched exactly.
    if key.startswith("db:") and parse_id(key[3:]) is None:
        return _render(request, errors=[f"no such channel: {key[:40]}"], status=400)
    try:
        d = alert_test_send(actor=request.user, channel_key=key)
    except AlertConfigError:
        return _render(request, errors=[f"no such channel: {key[:40]}"], status=400)
    messages.success(request, f"Test alert queued for {d.channel_label}; its delivery is listed below.")
    return redirect("dashboard:alerts")
