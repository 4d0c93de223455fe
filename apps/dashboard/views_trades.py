"""The trades page and its CSV export: thin views over apps.trading.trade_selectors (keyset pages, batches).

"Newer" and "Older" links carry a cursor (the (opened_at, id) of the page's first or last row) rather than a
page number: no COUNT over the table and no OFFSET, so the first page and one a million rows deep cost the same.
A cursor that does not parse shows the newest page (a hand-edited URL is not an error worth a 400).
"""

import csv
import io
from collections.abc import Iterator

from django.conf import settings
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponse, HttpResponseBase, StreamingHttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from apps.common.csv_stream import aiter_batches, csv_text
from apps.dashboard.forms import TradeFilterForm
from apps.ghosts.models import Ghost
from apps.market.models import Instrument
from apps.trading.trade_selectors import (
    EXPORT_BATCH,
    Cursor,
    TradeFilter,
    trades_export_rows,
    trades_page,
)


def _filters(form: TradeFilterForm) -> TradeFilter:
    return TradeFilter(**form.selector_kwargs()) if form.is_bound else TradeFilter()


@require_GET
def trades_page_view(request: HttpRequest) -> HttpResponse:
    form = TradeFilterForm(request.GET or None)
    page = None
    status = 200
    if form.is_bound and not form.is_valid():
        status = 400  # the page still renders, with the errors next to the filters
    else:
        page = trades_page(
            filters=_filters(form),
            before=Cursor.parse(request.GET.get("before")),
            after=Cursor.parse(request.GET.get("after")),
        )
    return render(
        request,
        "dashboard/trades.html",
        {
            "nav": "trades",
            "form": form,
            "page": page,
            "filtered": any(request.GET.get(name) for name in form.fields),
        },
        status=status,
    )


CSV_HEADER = [
    "id",
    "opened_at",
    "closed_at",
    "ghost",
    "symbol",
    "side",
    "status",
    "quantity",
    "entry_price",
    "exit_price",
    "exit_reason",
    "gross_pnl",
    "fees",
    "net_pnl",
    "currency",
]
CSV_BATCH = EXPORT_BATCH


def _csv_batches(filters: TradeFilter) -> Iterator[str]:
    """The export as chunks of CSV text, one chunk per keyset batch of the selector (cells already text)."""
    ccy = settings.HFT_QUOTE_CURRENCY
    # A handful of ghosts and instruments: looked up once here instead of joined into every row.
    ghosts = {pk: csv_text(name) for pk, name in Ghost.objects.values_list("pk", "name")}
    symbols = {pk: csv_text(s) for pk, s in Instrument.objects.values_list("pk", "symbol")}
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_HEADER)
    yield out.getvalue()
    for rows in trades_export_rows(filters=filters, batch=CSV_BATCH):
        out.seek(0)
        out.truncate()
        writer.writerows(
            (pk, opened, closed, ghosts.get(ghost_id, ""), symbols.get(inst_id, ""), side, status, qty, entry,
             exit_price, exit_reason, gross, fees, net, ccy)
            for (pk, opened, closed, ghost_id, inst_id, side, status, qty, entry, exit_price, exit_reason, gross,
                 fees, net) in rows
        )
        yield out.getvalue()


@require_GET
def trades_csv(request: HttpRequest) -> HttpResponseBase:
    form = TradeFilterForm(request.GET or None)
    if form.is_bound and not form.is_valid():
        return HttpResponse(
            "invalid filter: " + "; ".join(form.error_lines()) + "\n",
            status=400,
            content_type="text/plain; charset=utf-8",
        )
    batches = _csv_batches(_filters(form))
    content = aiter_batches(batches) if isinstance(request, ASGIRequest) else batches
    response = StreamingHttpResponse(content, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = 'attachment; filename="trades.csv"'
    response["Cache-Control"] = "no-store"
    return response
