"""Backtest against the desk: pick a period the desk paper-traded, one click queues the backtest of the same
stored bars with the desk's ghosts and parameters (`apps.lab.desk_compare`), and the comparison page lists the
trade-by-trade differences, each explained. Operators start it; viewers read the comparisons."""

from datetime import UTC, datetime, time, timedelta
from typing import Any

from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from apps.dashboard.context_processors import request_is_operator
from apps.lab.desk_compare import desk_comparison, lab_desk_compare_create
from apps.lab.models import BacktestRun
from apps.lab.services import LabError
from apps.market.models import Instrument
from apps.trading.models import Position


class DeskPeriodForm(forms.Form):
    instrument = forms.ModelChoiceField(queryset=Instrument.objects.select_related("exchange").order_by("pk"),
                                        error_messages={"required": "choose the instrument the desk traded",
                                                        "invalid_choice": "no such instrument"})
    start = forms.DateTimeField(error_messages={"invalid": "from: enter a UTC date/time, e.g. 2025-06-01 00:00"})
    end = forms.DateTimeField(error_messages={"invalid": "to: enter a UTC date/time, e.g. 2025-06-02 00:00"})

    def clean(self) -> dict[str, Any]:
        d = super().clean()
        for k in ("start", "end"):
            if d.get(k) is not None:
                d[k] = d[k].astimezone(UTC) if d[k].tzinfo else d[k].replace(tzinfo=UTC)
        if d.get("start") and d.get("end") and d["end"] <= d["start"]:
            raise forms.ValidationError("the period's end must be after its start (end is exclusive)")
        return d


def _default_period() -> dict[str, Any]:
    """The desk's traded period: the day of its first position to the day after its last (data time)."""
    first = Position.objects.order_by("opened_at").values_list("opened_at", "instrument_id").first()
    last = Position.objects.order_by("-opened_at").values_list("opened_at", flat=True).first()
    if first is None:
        return {}
    start = datetime.combine(first[0].astimezone(UTC).date(), time.min)
    end = datetime.combine(last.astimezone(UTC).date() + timedelta(days=1), time.min)
    return {"instrument": first[1], "start": start.strftime("%Y-%m-%d %H:%M"), "end": end.strftime("%Y-%m-%d %H:%M")}


@require_http_methods(["GET", "POST"])
def desk_compare_page(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        if not request_is_operator(request):
            raise PermissionDenied("only operators can start a backtest against the desk")
        form = DeskPeriodForm(request.POST)
        if form.is_valid():
            d = form.cleaned_data
            try:
                run = lab_desk_compare_create(actor=request.user, instrument_id=d["instrument"].pk, start=d["start"],
                                              end=d["end"])
            except LabError as e:
                for field, msgs in e.errors.items():
                    for m in msgs:
                        form.add_error(None, m if field == "__all__" else f"{field}: {m}")
            else:
                messages.success(request, f"Backtest of the desk's period queued as run #{run.pk}.")
                return redirect("lab:desk-compare-run", run_id=run.pk)
        status = 400
    else:
        form, status = DeskPeriodForm(initial=_default_period()), 200
    recent = BacktestRun.objects.filter(source="desk_compare").select_related("instrument__exchange")[:20]
    return render(request, "lab/desk_compare.html", {"nav": "lab", "form": form, "recent": recent}, status=status)


@require_GET
def desk_compare_run(request: HttpRequest, run_id: int) -> HttpResponse:
    run = BacktestRun.objects.select_related("instrument__exchange").filter(pk=run_id, source="desk_compare").first()
    if run is None:
        raise Http404(f"no desk comparison {run_id}")
    comparison = desk_comparison(run) if run.status == BacktestRun.Status.DONE else None
    return render(request, "lab/desk_compare_run.html", {"nav": "lab", "run": run, "comparison": comparison})
