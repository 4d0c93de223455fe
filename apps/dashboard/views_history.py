"""History downloads page: operators start a download (the same one `manage.py download_history` runs),
everybody sees the list with live progress (``history.progress`` events on the desk socket).

A viewer's POST is refused (403) before its input is read; bad input renders the page again with the
errors and a 400, and creates nothing.
"""

import re
from datetime import UTC, datetime

from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_http_methods

from apps.dashboard.context_processors import request_is_operator
from apps.market import history
from apps.market.history_services import (
    EXCHANGES,
    DownloadRequestError,
    download_progress,
    history_download_create,
    history_downloads,
)
from apps.market.models import HistoryDownload

# ccxt unified symbols: BASE/QUOTE, or BASE/QUOTE:SETTLE for perpetuals
SYMBOL_RE = re.compile(r"^[A-Z0-9]{1,20}/[A-Z0-9]{1,20}(:[A-Z0-9]{1,20})?$")
DATETIME_FORMATS = ["%Y-%m-%d", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M"]


class HistoryDownloadForm(forms.Form):
    exchange = forms.ChoiceField(choices=list(EXCHANGES.items()),
                                 error_messages={"invalid_choice": "exchange must be one of "
                                                 + ", ".join(EXCHANGES)})
    symbol = forms.CharField(max_length=32, strip=True,
                             error_messages={"required": "enter a symbol, e.g. BTC/USDT (BTC/USDT:USDT for a perp)"})
    timeframe = forms.ChoiceField(choices=[(t, t) for t in history.TIMEFRAMES], initial="1m",
                                  error_messages={"invalid_choice": "timeframe must be one of "
                                                  + ", ".join(history.TIMEFRAMES)})
    since = forms.DateTimeField(input_formats=DATETIME_FORMATS,
                                error_messages={"required": "enter the first day, e.g. 2025-05-01",
                                                "invalid": "since: enter a date as YYYY-MM-DD (UTC)"})
    until = forms.DateTimeField(input_formats=DATETIME_FORMATS, required=False,
                                error_messages={"invalid": "until: enter a date as YYYY-MM-DD (UTC), or leave it "
                                                "empty for up to the last closed candle"})

    def clean_symbol(self) -> str:
        symbol = self.cleaned_data["symbol"].upper()
        if not SYMBOL_RE.match(symbol):
            raise forms.ValidationError("symbol must look like BTC/USDT (or BTC/USDT:USDT for a perpetual)")
        return symbol

    @staticmethod
    def _utc(value: datetime | None) -> datetime | None:
        # The page says UTC: the typed wall time is UTC whatever the server's TIME_ZONE (Django made it
        # aware in the current zone; take the wall time back and label it UTC).
        if value is None:
            return None
        naive = timezone.make_naive(value) if timezone.is_aware(value) else value
        return naive.replace(tzinfo=UTC)

    def clean_since(self) -> datetime:
        return self._utc(self.cleaned_data["since"])

    def clean_until(self) -> datetime | None:
        return self._utc(self.cleaned_data.get("until"))


def _rows() -> list[dict]:
    rows = []
    for d in history_downloads():
        running = d.state in (HistoryDownload.State.QUEUED, HistoryDownload.State.RUNNING)
        rows.append({"d": d, "progress": download_progress(d) if running else (1.0 if d.state == "done" else None),
                     "missing": sum(int(g[2]) for g in d.gaps or [])})
    return rows


@require_http_methods(["GET", "POST"])
def history_page(request: HttpRequest) -> HttpResponse:
    from apps.market.tasks import download_history_task

    operator = request_is_operator(request)
    form = HistoryDownloadForm(initial={"exchange": "binance", "symbol": "BTC/USDT", "timeframe": "1m"})
    status = 200
    if request.method == "POST":
        if not operator:  # before reading the input: a viewer learns nothing and starts nothing
            raise PermissionDenied("only operators can start history downloads")
        form = HistoryDownloadForm(request.POST)
        if form.is_valid():
            d = form.cleaned_data
            try:
                with transaction.atomic():
                    row = history_download_create(exchange_code=d["exchange"], symbol=d["symbol"],
                                                  timeframe=d["timeframe"], since=d["since"], until=d["until"],
                                                  requested_by=request.user)
                    transaction.on_commit(lambda: download_history_task.delay(row.pk))
            except DownloadRequestError as e:  # range rules live in the service (the command uses them too)
                form.add_error(None, str(e))
            else:
                messages.success(request, f"Download #{row.pk} queued: {row.instrument} {row.timeframe}, "
                                          f"{row.expected} candles.")
                return redirect("dashboard:history")
        status = 400
    return render(request, "dashboard/history.html",
                  {"nav": "history", "form": form, "rows": _rows(), "timeframes": history.TIMEFRAMES},
                  status=status)
