"""Instruments page (issue 11, many instruments): operators add an instrument picked from an exchange's cached ccxt
markets, start and stop each instrument's feed (sim, live, replay:<file>), create ghost instances on it and delete
the ones that never traded. Everyone signed in reads it; a viewer's POST is refused (403) before its input is read.

Every action is one service call (apps.market.services, apps.ghosts.services), audited there. A refused action
renders the page again with the reason next to its form and a 400; a done one redirects back with a message.

Deleting an instrument takes two steps: its confirm page (operators only) lists every row that goes with it and
the refusals, and its POST needs the instrument's name typed and the counts' token (apps.dashboard.instrument_delete).
"""

import json

from django import forms
from django.contrib import messages
from django.core.exceptions import ObjectDoesNotExist, PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST

from apps.common.parsing import MAX_ID, ParseError, parse_json
from apps.dashboard.context_processors import request_is_operator
from apps.dashboard.instrument_delete import InstrumentDeleteError, instrument_delete, instrument_delete_plan
from apps.engine.registry import GHOSTS, config_from_params
from apps.ghosts.instance_selectors import ghost_instances
from apps.ghosts.services import GhostError, ghost_delete, ghost_instance_create
from apps.market.exchanges import LIVE_EXCHANGES
from apps.market.feed_services import feed_start, feed_stop
from apps.market.instrument_selectors import instruments_with_feeds, market_symbols, markets_cache_list
from apps.market.markets import MarketError, markets_fetch_queue, markets_fetch_state
from apps.market.services import InstrumentError, instrument_add

EXCHANGE_CHOICES = [(c, c) for c in (*LIVE_EXCHANGES, "binancecoinm")]


class InstrumentAddForm(forms.Form):
    exchange = forms.CharField(max_length=32, strip=True)
    symbol = forms.CharField(max_length=32, strip=True,
                             error_messages={"required": "pick a symbol from the exchange's markets, e.g. ETH/USDT"})


class MarketsLoadForm(forms.Form):
    exchange = forms.ChoiceField(choices=EXCHANGE_CHOICES,
                                 error_messages={"invalid_choice": "exchange must be one of "
                                                 + ", ".join(c for c, _ in EXCHANGE_CHOICES)})


class FeedForm(forms.Form):
    action = forms.ChoiceField(choices=[("start", "start"), ("stop", "stop")])
    kind = forms.ChoiceField(choices=[("sim", "sim"), ("live", "live"), ("replay", "replay")], required=False)
    replay_file = forms.CharField(max_length=240, required=False, strip=True)

    def source(self) -> str:
        kind = self.cleaned_data.get("kind") or "sim"
        if kind != "replay":
            return kind
        name = self.cleaned_data.get("replay_file") or ""
        if not name:
            raise InstrumentError("replay: name a file under the market-data folder (e.g. klines/...zip@600)")
        return f"replay:{name}"


class GhostCreateForm(forms.Form):
    name = forms.CharField(max_length=64, strip=True)
    kind = forms.CharField(max_length=32, strip=True)
    instrument = forms.IntegerField(min_value=1, max_value=MAX_ID)
    params = forms.CharField(max_length=4000, required=False, strip=True)

    def clean_params(self) -> dict:
        text = self.cleaned_data.get("params") or "{}"
        try:
            value = parse_json(text)  # bounded depth and digits, no NaN/Infinity (apps.common.parsing)
        except (ParseError, ValueError) as exc:
            raise forms.ValidationError(f"parameters: not JSON ({exc})") from None
        if not isinstance(value, dict):
            raise forms.ValidationError("parameters must be a JSON object, e.g. {\"spike_threshold_pct\": 0.8}")
        return value


class GhostDeleteForm(forms.Form):
    reason = forms.CharField(max_length=500, required=False, strip=True)


class InstrumentDeleteForm(forms.Form):
    confirm = forms.CharField(max_length=80, required=False, strip=True)
    token = forms.CharField(max_length=64, required=False, strip=True)
    reason = forms.CharField(max_length=500, required=False, strip=True)


def _first_error(form: forms.Form) -> str:
    for field, errors in form.errors.items():
        return errors[0] if field == "__all__" else f"{field}: {errors[0]}"
    return "invalid input"


def _kinds() -> list[dict]:
    """Desk kinds (built-in and registered plug-ins) with their default parameters, for the create form."""
    out = []
    for kind, spec in GHOSTS.items():
        if spec.desk:
            try:
                defaults = json.dumps(config_from_params(kind, {}).to_params(), sort_keys=True)
            except Exception:  # a plug-in whose config has no defaults: the form still offers the kind
                defaults = "{}"
            out.append({"kind": kind, "title": spec.title, "defaults": defaults})
    return out


def _page(request: HttpRequest, *, status: int = 200, errors: dict | None = None,
          values: dict | None = None) -> HttpResponse:
    cached = markets_cache_list()
    picked = (request.GET.get("exchange") or (values or {}).get("exchange")
              or (cached[0].exchange if cached else "binance"))
    picked = str(picked)[:32]
    errors = errors or {}
    rows, ghosts = instruments_with_feeds(), list(ghost_instances())
    for inst in rows:  # each refusal is shown next to the form it came from
        inst.error = errors.get(f"feed-{inst.pk}")
    for ghost in ghosts:
        ghost.error = errors.get(f"ghost-{ghost.pk}")
    ctx = {
        "nav": "instruments",
        "instruments": rows,
        "ghosts": ghosts,
        "cached": cached,
        "exchange": picked,
        "symbols": market_symbols(picked),
        "fetch_state": markets_fetch_state(picked) if picked.isascii() and picked.isalnum() else None,
        "exchange_choices": [c for c, _ in EXCHANGE_CHOICES],
        "kinds": _kinds(),
        "errors": errors,
        "values": values or {},
    }
    return render(request, "dashboard/instruments.html", ctx, status=status)


def _operator_only(request: HttpRequest, what: str, object_id: int | None = None) -> None:
    if not request_is_operator(request):  # before reading the input: a viewer learns nothing, changes nothing
        raise PermissionDenied(f"only operators can {what}")
    if object_id is not None and not 0 < object_id <= MAX_ID:  # a larger id cannot even be bound in a query
        raise Http404("no such object")


@require_http_methods(["GET", "POST"])
def instruments_page(request: HttpRequest) -> HttpResponse:
    """GET: the page. POST: add an instrument (exchange + symbol from the cached ccxt markets)."""
    if request.method == "GET":
        return _page(request)
    _operator_only(request, "add instruments")
    form = InstrumentAddForm(request.POST)
    values = {"exchange": request.POST.get("exchange", "")[:32], "symbol": request.POST.get("symbol", "")[:32]}
    if not form.is_valid():
        return _page(request, status=400, errors={"add": _first_error(form)}, values=values)
    try:
        inst, created = instrument_add(exchange_code=form.cleaned_data["exchange"],
                                       symbol=form.cleaned_data["symbol"], actor=request.user)
    except InstrumentError as exc:
        return _page(request, status=400, errors={"add": str(exc)}, values=values)
    messages.success(request, f"{inst} {'added' if created else 'already on the desk: its rules were refreshed'} "
                              f"({inst.market_type}{', inverse' if inst.inverse else ''}).")
    return redirect("dashboard:instruments")


@require_POST
def markets_load(request: HttpRequest) -> HttpResponse:
    """Load (or refresh) an exchange's ccxt markets into the cache: a worker asks the exchange (seconds), the page
    shows the outcome (loading, done, or the exchange's error)."""
    _operator_only(request, "load markets")
    form = MarketsLoadForm(request.POST)
    if not form.is_valid():
        return _page(request, status=400, errors={"markets": _first_error(form)})
    code = form.cleaned_data["exchange"]
    try:
        markets_fetch_queue(code, actor=request.user)
    except MarketError as exc:
        return _page(request, status=400, errors={"markets": str(exc)}, values={"exchange": code})
    messages.success(request, f"{code}: loading its markets from the exchange; reload this page in a few seconds.")
    return redirect(f"{reverse('dashboard:instruments')}?exchange={code}")


@require_POST
def instrument_feed(request: HttpRequest, instrument_id: int) -> HttpResponse:
    """Start (sim, live, replay:<file>) or stop one instrument's feed."""
    _operator_only(request, "start or stop feeds", instrument_id)
    form = FeedForm(request.POST)
    if not form.is_valid():
        return _page(request, status=400, errors={f"feed-{instrument_id}": _first_error(form)})
    try:
        if form.cleaned_data["action"] == "stop":
            fs = feed_stop(instrument_id=instrument_id, actor=request.user)
            messages.success(request, f"{fs.instrument}: feed stopping.")
        else:
            fs = feed_start(instrument_id=instrument_id, source=form.source(), actor=request.user)
            messages.success(request, f"{fs.instrument}: feed {fs.source} starting.")
    except ObjectDoesNotExist:
        raise Http404(f"no instrument {instrument_id}") from None
    except InstrumentError as exc:
        return _page(request, status=400, errors={f"feed-{instrument_id}": str(exc)})
    return redirect("dashboard:instruments")


@require_POST
def ghost_instance_add(request: HttpRequest) -> HttpResponse:
    """Create a ghost (kind, instrument, parameters checked by the engine's config), disabled."""
    _operator_only(request, "create ghosts")
    form = GhostCreateForm(request.POST)
    values = {k: request.POST.get(k, "")[:4000] for k in ("name", "kind", "instrument", "params")}
    if not form.is_valid():
        return _page(request, status=400, errors={"ghost": _first_error(form)}, values=values)
    d = form.cleaned_data
    try:
        ghost = ghost_instance_create(name=d["name"], kind=d["kind"], instrument_id=d["instrument"],
                                      params=d["params"], actor=request.user)
    except GhostError as exc:
        return _page(request, status=400, errors={"ghost": str(exc)}, values=values)
    messages.success(request, f"Ghost {ghost.name} ({ghost.kind}) created on {ghost.instrument}, disabled: "
                              "enable it on the Ghosts page.")
    return redirect("dashboard:instruments")


@require_POST
def ghost_instance_delete(request: HttpRequest, ghost_id: int) -> HttpResponse:
    """Delete a disabled ghost that has no trades."""
    _operator_only(request, "delete ghosts", ghost_id)
    form = GhostDeleteForm(request.POST)
    if not form.is_valid():
        return _page(request, status=400, errors={f"ghost-{ghost_id}": _first_error(form)})
    try:
        gone = ghost_delete(ghost_id=ghost_id, actor=request.user, reason=form.cleaned_data["reason"])
    except ObjectDoesNotExist:
        raise Http404(f"no ghost {ghost_id}") from None
    except GhostError as exc:
        return _page(request, status=400, errors={f"ghost-{ghost_id}": str(exc)})
    messages.success(request, f"Ghost {gone['name']} deleted ({gone['signals']} signals with it).")
    return redirect("dashboard:instruments")


@require_http_methods(["GET", "POST"])
def instrument_delete_page(request: HttpRequest, instrument_id: int) -> HttpResponse:
    """GET: what deleting the instrument would delete (every count) or why it cannot go. POST: delete it, with
    the instrument's name typed and the token of the counts shown. Operators only, both ways: the page is the
    first step of a write."""
    _operator_only(request, "delete instruments", instrument_id)
    try:
        plan = instrument_delete_plan(instrument_id=instrument_id)
    except ObjectDoesNotExist:
        raise Http404(f"no instrument {instrument_id}") from None
    if request.method == "GET":
        return _delete_page(request, plan)
    form = InstrumentDeleteForm(request.POST)
    if not form.is_valid():
        return _delete_page(request, plan, status=400, error=_first_error(form))
    d = form.cleaned_data
    try:
        gone = instrument_delete(instrument_id=instrument_id, actor=request.user, confirm=d["confirm"],
                                 token=d["token"], reason=d["reason"])
    except ObjectDoesNotExist:
        raise Http404(f"no instrument {instrument_id}") from None
    except InstrumentDeleteError as exc:
        # the counts may have moved: show the current ones with the reason
        return _delete_page(request, instrument_delete_plan(instrument_id=instrument_id), status=400, error=str(exc),
                            confirm=d["confirm"])
    messages.success(request, f"{gone.name} deleted with {gone.total:,} rows "
                              f"({', '.join(f'{n:,} {what}' for what, n in gone.counts if n) or 'nothing else'}).")
    return redirect("dashboard:instruments")


def _delete_page(request: HttpRequest, plan, *, status: int = 200, error: str = "", confirm: str = ""
                 ) -> HttpResponse:
    return render(request, "dashboard/instrument_delete.html",
                  {"nav": "instruments", "plan": plan, "error": error, "confirm": confirm}, status=status)
