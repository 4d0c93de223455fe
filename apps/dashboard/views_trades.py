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


def _csv_cell(value: str) -> str:
    """One text cell as csv.writer writes it (quoted when it holds a comma, quote or line break)."""
    out = io.StringIO()
    csv.writer(out).writerow([value])
    return out.getvalue()[:-2]  # without the writer's "\r\n"


def _csv_batches(filters: TradeFilter) -> Iterator[str]:
    """The export as chunks of CSV text, one chunk per keyset batch of the selector (cells already text).

    Lines are joined by hand rather than by csv.writer (which costs as much as the whole rest per row): the only
    free text, ghost names, symbols and the few distinct side/status/exit reason values, is quoted once through
    csv.writer and remembered; the other cells are numbers and ISO times, which never need quoting.
    """
    ccy = _csv_cell(csv_text(settings.HFT_QUOTE_CURRENCY))
    # A handful of ghosts and instruments: looked up once here instead of joined into every row.
    ghosts = {pk: _csv_cell(csv_text(name)) for pk, name in Ghost.objects.values_list("pk", "name")}
    symbols = {pk: _csv_cell(csv_text(s)) for pk, s in Instrument.objects.values_list("pk", "symbol")}
    words: dict[str, str] = {}

    def word(value: str) -> str:
        cell = words.get(value)
        if cell is None:
            cell = words[value] = _csv_cell(csv_text(value))
        return cell

    yield ",".join(_csv_cell(h) for h in CSV_HEADER) + "\r\n"
    for rows in trades_export_rows(filters=filters, batch=CSV_BATCH):
        yield "".join(
            f"{pk},{opened},{closed},{ghosts.get(ghost_id, '')},{symbols.get(inst_id, '')},{word(side)},"
            f"{word(status)},{qty},{entry},{exit_price},{word(exit_reason)},{gross},{fees},{net},{ccy}\r\n"
            for (pk, opened, closed, ghost_id, inst_id, side, status, qty, entry, exit_price, exit_reason, gross,
                 fees, net) in rows
        )


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
