"""Close one open position (issue 14): an operator's POST with a reason, through the execution door.

Thin: the role is checked before the input is read, the service (`apps.trading.execution.position_close_manual`)
validates, closes, audits, pushes and alerts; the page says what happened.
"""

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from apps.dashboard.context_processors import request_is_operator
from apps.dashboard.templatetags.desk import price, signed_money
from apps.trading.execution import ManualCloseRefused, position_close_manual
from apps.trading.models import Position


@require_POST
def position_close_view(request: HttpRequest, position_id: int) -> HttpResponse:
    if not request_is_operator(request):
        raise PermissionDenied("only operators can close a position")
    try:
        done = position_close_manual(position_id=position_id, reason=request.POST.get("reason") or "",
                                     user=request.user)
    except Position.DoesNotExist:
        raise Http404("no such position") from None
    except ManualCloseRefused as exc:
        messages.error(request, f"Position {position_id} not closed: {exc}.")
        return redirect("dashboard:overview")
    quote = done.instrument.quote
    # The desk's figures, as the templates show them (apps.dashboard.templatetags.desk): the price by magnitude,
    # the P&L signed to the cent, both with thousands separators.
    messages.success(request, f"Position {position_id} ({done.ghost.name}, {done.side}) closed at "
                              f"{price(done.exit_price)} {quote}: net P&L {signed_money(done.net_pnl)} {quote}.")
    return redirect("dashboard:overview")
