"""The desk's pages. Thin: validate input, call a selector or service, render.

Roles are enforced here on the server (a viewer's hand-made POST gets 403), never only by hiding
buttons. Every view needs a login (LoginRequiredMiddleware) except the static assets.
"""

import gzip
import hashlib
import importlib.resources
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import ObjectDoesNotExist, PermissionDenied
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseNotModified,
    JsonResponse,
)
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from apps.audit import selectors as audit_selectors
from apps.common.keyset import Cursor
from apps.common.parsing import parse_id
from apps.dashboard.context_processors import request_is_operator, request_pnl
from apps.dashboard.forms import GhostParamsForm, GhostToggleForm, TargetForm
from apps.dashboard.views_risk import ghosts_context
from apps.ghosts.events import ghost_payload
from apps.ghosts.selectors import ghosts
from apps.ghosts.services import GhostError, ghost_set_enabled, ghost_update_params
from apps.market.events import bar_payload, feed_payload
from apps.market.models import Instrument
from apps.market.selectors import feed_statuses, instruments, recent_candles
from apps.revenue.selectors import portfolio_progress, target_owners
from apps.revenue.services import TargetError, revenue_target_set
from apps.signals.events import signal_payload
from apps.signals.selectors import recent_signals
from apps.trading.models import Position
from apps.trading.risk_selectors import kill_switch
from apps.trading.risk_services import kill_switch_payload
from apps.trading.selectors import open_positions, positions_for_chart

PAGE_SIZE = 50  # rows per page on audit: one screen on a laptop, cheap to render (trades: views_trades.py)
CHART_BARS = 240  # four hours of 1m bars: enough context for a 15-minute spike fader
SIGNALS_SHOWN = 50


def _wants_json(request: HttpRequest) -> bool:
    """fetch() from desk.js asks for JSON; a plain form post (no JS) prefers HTML.

    `accepts("application/json")` is true for every browser (they send */*), so rank the types instead.
    """
    return request.get_preferred_type(["text/html", "application/json"]) == "application/json"


def _chart_time(ts: datetime) -> str:
    # Plotly ignores time zones in date strings; hand it naive UTC and label the axis UTC.
    return (ts.astimezone(UTC) if ts.tzinfo else ts).strftime("%Y-%m-%d %H:%M:%S")


def _position_payload(p: Position) -> dict[str, Any]:
    return {
        "position_id": p.pk,
        "ghost_id": p.ghost_id,
        "ghost": p.ghost.name,
        "symbol": p.instrument.symbol,
        "side": p.side,
        "quantity": float(p.quantity),
        "price": float(p.entry_price),
        "stop": float(p.stop),
        "target": float(p.target),
        "ts": p.opened_at.isoformat(),
    }


def _chart_data(instrument: Instrument | None, ghost_instrument: dict[int, int]) -> dict[str, Any] | None:
    """Candles of one instrument plus entry/exit markers of its positions, as plotly-ready arrays."""
    if instrument is None:
        return None
    candles = recent_candles(instrument_id=instrument.pk, limit=CHART_BARS)
    data: dict[str, Any] = {
        "instrument_id": instrument.pk,
        "symbol": instrument.symbol,
        "max_bars": CHART_BARS,
        "ghosts": [gid for gid, iid in ghost_instrument.items() if iid == instrument.pk],
        "x": [],
        "open": [],
        "high": [],
        "low": [],
        "close": [],
        "long": {"x": [], "y": [], "text": []},
        "short": {"x": [], "y": [], "text": []},
        "exit": {"x": [], "y": [], "text": []},
    }
    for c in candles:
        data["x"].append(_chart_time(c.open_time))
        for f in ("open", "high", "low", "close"):
            data[f].append(float(getattr(c, f)))
    if candles:
        since = candles[0].open_time
        for p in positions_for_chart(instrument_id=instrument.pk, since=since):
            if p.opened_at >= since:  # an entry left of the first candle would stretch the x axis
                marks = data[p.side] if p.side in ("long", "short") else data["long"]
                marks["x"].append(_chart_time(p.opened_at))
                marks["y"].append(float(p.entry_price))
                marks["text"].append(f"#{p.pk} {p.side} entry")
            if p.closed_at and p.exit_price is not None and p.closed_at >= since:
                data["exit"]["x"].append(_chart_time(p.closed_at))
                data["exit"]["y"].append(float(p.exit_price))
                net = p.net_pnl
                data["exit"]["text"].append(
                    f"#{p.pk} exit ({p.exit_reason or 'closed'})"
                    + (f" net {net:+.2f} {settings.HFT_QUOTE_CURRENCY}" if net is not None else "")
                )
    return data


# --- pages ------------------------------------------------------------------------------------------


def _chosen_instrument(request: HttpRequest, choices: list[Instrument]) -> Instrument | None:
    """The instrument `?instrument=<id>` names among `choices`, or None (absent, not an id, or unknown: a
    hand-edited URL shows every instrument's signals and the first chart rather than an error page)."""
    wanted = parse_id(request.GET.get("instrument"))
    return next((i for i in choices if i.pk == wanted), None) if wanted else None


@require_GET
def overview(request: HttpRequest) -> HttpResponse:
    """Every feed with its state and price; the chart of one instrument (`?instrument=<id>`, the selector;
    the first instrument by default) and the signals of that instrument when one is chosen, else of all."""
    feeds = list(feed_statuses())
    ghost_list = list(ghosts())
    ghost_instrument = {g.pk: g.instrument_id for g in ghost_list}
    choices = list(instruments())  # one query whatever the count: the selector's options and the chosen one
    chosen = _chosen_instrument(request, choices)
    chart = _chart_data(chosen or (choices[0] if choices else None), ghost_instrument)
    return render(
        request,
        "dashboard/overview.html",
        {
            "nav": "overview",
            "feeds": feeds,
            "pnl": request_pnl(request),
            "portfolio": portfolio_progress(),
            "positions": list(open_positions().order_by("-opened_at", "-id")),
            "signals": recent_signals(limit=SIGNALS_SHOWN, instrument_id=chosen.pk if chosen else None),
            "instrument_choices": choices,
            "chosen_instrument": chosen,
            "chart": chart,
            "has_candles": bool(chart and chart["x"]),
            "ghost_symbols": {str(g.pk): g.instrument.symbol for g in ghost_list},
            "plotly_version": _plotly_version(),
        },
    )


@require_GET
def ghosts_page(request: HttpRequest) -> HttpResponse:
    return _render_ghosts(request)


def _render_ghosts(
    request: HttpRequest, *, errors: dict[int, str] | None = None, status: int = 200,
    params_errors: dict[int, str] | None = None,
) -> HttpResponse:
    return render(
        request,
        "dashboard/ghosts.html",
        {
            "nav": "ghosts",
            **ghosts_context(),  # rows + performance figures and auto-disable rules (views_risk)
            "toggle_errors": errors or {},
            "params_errors": params_errors or {},
        },
        status=status,
    )


@require_POST
def ghost_toggle(request: HttpRequest, ghost_id: int) -> HttpResponse:
    """Enable/disable one ghost with a reason. JSON for desk.js, HTML form round trip without JS."""
    as_json = _wants_json(request)
    if not request_is_operator(request):  # checked before reading input: a viewer learns nothing
        if as_json:
            return JsonResponse(
                {"ok": False, "error": "only operators can enable or disable ghosts"}, status=403
            )
        raise PermissionDenied("only operators can enable or disable ghosts")
    form = GhostToggleForm(request.POST)
    if not form.is_valid():
        return _toggle_failed(request, ghost_id, form.first_error(), 400, as_json)
    try:
        ghost = ghost_set_enabled(
            ghost_id=ghost_id,
            enabled=form.cleaned_data["enabled"],
            actor=request.user,
            reason=form.cleaned_data["reason"],
        )
    except ObjectDoesNotExist:
        if as_json:
            return JsonResponse({"ok": False, "error": f"no ghost {ghost_id}"}, status=404)
        raise Http404(f"no ghost {ghost_id}") from None
    except GhostError as e:
        return _toggle_failed(request, ghost_id, str(e), 400, as_json)
    if as_json:
        return JsonResponse(
            {
                "ok": True,
                "ghost_id": ghost.pk,
                "enabled": ghost.enabled,
                "status": ghost.status,
                "status_reason": ghost.status_reason,
            }
        )
    messages.success(request, f"{ghost.name} is now {ghost.status}.")
    return redirect(reverse("dashboard:ghosts") + f"#ghost-{ghost.pk}", permanent=False)


@require_POST
def ghost_params(request: HttpRequest, ghost_id: int) -> HttpResponse:
    """Edit a ghost's params through the engine's config validation (operators only)."""
    if not request_is_operator(request):
        raise PermissionDenied("only operators can edit ghost parameters")
    if not ghosts().filter(pk=ghost_id).exists():
        raise Http404(f"no ghost {ghost_id}")
    form = GhostParamsForm(request.POST)
    try:
        if not form.is_valid():
            raise GhostError(form.first_error())
        ghost = ghost_update_params(ghost_id=ghost_id, params=form.cleaned_data["params"], actor=request.user,
                                    reason=form.cleaned_data["reason"])
    except ObjectDoesNotExist:
        raise Http404(f"no ghost {ghost_id}") from None
    except GhostError as e:
        return _render_ghosts(request, params_errors={ghost_id: str(e)}, status=400)
    messages.success(request, f"{ghost.name}: parameters saved; the next bar uses them.")
    return redirect(reverse("dashboard:ghosts") + f"#ghost-{ghost.pk}", permanent=False)


def _toggle_failed(
    request: HttpRequest, ghost_id: int, message: str, status: int, as_json: bool
) -> HttpResponse:
    if as_json:
        return JsonResponse({"ok": False, "error": message}, status=status)
    return _render_ghosts(request, errors={ghost_id: message}, status=status)


@require_http_methods(["GET", "POST"])
def targets_page(request: HttpRequest) -> HttpResponse:
    operator = request_is_operator(request)
    errors: dict[str, list[str]] = {}
    posted: dict[str, str] = {}
    status = 200
    if request.method == "POST":
        if not operator:
            raise PermissionDenied("only operators can edit revenue targets")
        form = TargetForm(request.POST)
        owner_key = request.POST.get("owner", "")
        posted = {
            "owner": owner_key,
            "amount": request.POST.get("amount", ""),
            "period": request.POST.get("period", ""),
        }
        if form.is_valid():
            try:
                revenue_target_set(
                    ghost_id=form.cleaned_data["owner"],
                    amount=form.cleaned_data["amount"],
                    period=form.cleaned_data["period"],
                    actor=request.user,
                )
            except ObjectDoesNotExist:
                raise Http404(f"no ghost {form.cleaned_data['owner']}") from None
            except TargetError as e:  # the service re-validates; a rule it adds later still shows here
                errors = {"amount": [str(e)]}
            else:
                messages.success(request, "Target saved.")
                return redirect("dashboard:targets")
        else:
            errors = {k: [str(e) for e in v] for k, v in form.errors.items()}
        status = 400
    # ?instrument=<id> keeps the portfolio and that instrument's ghosts (a bad or unknown id: every ghost, as on
    # the overview).
    choices = list(instruments())
    chosen = _chosen_instrument(request, choices)
    rows = []
    for owner in target_owners(instrument_id=chosen.pk if chosen else None):
        mine = posted.get("owner") == owner.key
        rows.append(
            {
                "owner": owner,
                "amount": posted["amount"]
                if mine
                else (f"{owner.target.amount:.2f}" if owner.target else ""),
                "period": posted["period"] if mine else (owner.target.period if owner.target else "day"),
                "errors": errors if mine else {},
            }
        )
    if errors and not any(r["errors"] for r in rows):  # e.g. an owner that is neither portfolio nor a ghost
        messages.error(request, "; ".join(e for v in errors.values() for e in v))
    return render(
        request,
        "dashboard/targets.html",
        {
            "nav": "targets",
            "rows": rows,
            "periods": ["day", "week", "month"],
            "instrument_choices": choices,
            "chosen_instrument": chosen,
        },
        status=status,
    )


@require_GET
def audit_page(request: HttpRequest) -> HttpResponse:
    page = audit_selectors.audit_page(before=Cursor.parse(request.GET.get("before")),
                                      after=Cursor.parse(request.GET.get("after")), limit=PAGE_SIZE)
    return render(request, "dashboard/audit.html", {"nav": "audit", "page": page})


CATCH_UP_BARS = 60  # an hour of 1m bars; after a longer outage the chart shows a gap until reload


@require_GET
def state_json(request: HttpRequest) -> JsonResponse:
    """Catch-up after a websocket reconnect: the current state as the same events desk.js already handles."""
    events: list[dict[str, Any]] = [dict(request_pnl(request)), kill_switch_payload(kill_switch())]
    events += [feed_payload(fs) for fs in feed_statuses()]
    events += [dict(ghost_payload(g, type_="ghost.status", actor="system")) for g in ghosts()]
    # Oldest first, so the newest ends on top of the list when each is prepended.
    events += [
        dict(signal_payload(s, type_="signal.updated")) for s in reversed(recent_signals(limit=SIGNALS_SHOWN))
    ]
    # Bars closed between the page render and this (re)connect: desk.js skips the ones it already drew. desk.js asks
    # for its chart's instrument only (?instrument=<id>, one query) or none (?instrument=none, a page without a
    # chart); without the parameter every instrument's, one query each (with many instruments, issue 11, ask).
    wanted = request.GET.get("instrument")
    if wanted == "none":
        bar_ids: list[int] = []
    elif (one := parse_id(wanted)) is not None:
        bar_ids = [one]
    else:
        bar_ids = list(instruments().values_list("pk", flat=True))
    for inst_id in bar_ids:
        events += [bar_payload(c) for c in recent_candles(instrument_id=inst_id, limit=CATCH_UP_BARS)]
    events.append(
        {
            "type": "positions.snapshot",
            "positions": [_position_payload(p) for p in open_positions().order_by("opened_at", "id")],
        }
    )
    return JsonResponse({"events": events}, headers={"Cache-Control": "no-store"})


# --- assets -----------------------------------------------------------------------------------------


def _plotly_version() -> str:
    import plotly

    return plotly.__version__


@lru_cache(maxsize=1)
def _plotly_asset() -> tuple[bytes, bytes, str]:
    """plotly.min.js from the installed plotly wheel (no CDN): raw bytes, gzip bytes, version tag.

    4.8 MB raw, ~1.4 MB gzipped: compressed once per process because phones on the desk pay for it.
    """
    import plotly

    data = (importlib.resources.files("plotly") / "package_data" / "plotly.min.js").read_bytes()
    tag = f"{plotly.__version__}-{hashlib.sha256(data).hexdigest()[:12]}"
    return data, gzip.compress(data, 6), tag


@require_GET
def plotly_js(request: HttpRequest) -> HttpResponse:
    raw, gz, tag = _plotly_asset()
    etag = f'"{tag}"'
    # Private: behind the login. Pages link ?v=<plotly version>, so an upgrade is a new URL (immutable).
    headers = {
        "Cache-Control": "private, max-age=31536000, immutable",
        "ETag": etag,
        "Vary": "Accept-Encoding",
    }
    if request.headers.get("If-None-Match") == etag:
        return HttpResponseNotModified(headers=headers)
    use_gzip = "gzip" in request.headers.get("Accept-Encoding", "")
    response = HttpResponse(
        gz if use_gzip else raw, content_type="text/javascript; charset=utf-8", headers=headers
    )
    if use_gzip:
        response["Content-Encoding"] = "gzip"
    return response

