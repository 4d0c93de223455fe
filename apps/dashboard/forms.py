"""Input validation for the desk's few writes and the trades filter. Domain rules stay in the services;
these forms turn raw POST/GET strings into typed values and say clearly what was wrong."""

from datetime import date
from decimal import Decimal
from typing import Any

from django import forms

from apps.common.forms import BoundedDateField, SafeJSONField
from apps.common.parsing import parse_id
from apps.ghosts.models import Ghost
from apps.market.models import Instrument
from apps.revenue.models import Period
from apps.revenue.services import TargetError, parse_amount
from apps.signals.models import Side


class GhostToggleForm(forms.Form):
    enabled = forms.TypedChoiceField(
        choices=[("1", "enable"), ("0", "disable")],
        coerce=lambda v: v == "1",
        error_messages={
            "required": "enabled is required (1 to enable, 0 to disable)",
            "invalid_choice": "enabled must be 1 (enable) or 0 (disable)",
        },
    )
    reason = forms.CharField(
        max_length=500,
        strip=True,
        error_messages={
            "required": "a reason is required: it is written to the audit log",
            "max_length": "reason is too long (max 500 characters)",
        },
    )

    def first_error(self) -> str:
        """One line for a JSON reply or an inline message: "<field>: <message>"."""
        for field, errors in self.errors.items():
            return f"{field}: {errors[0]}" if field != "__all__" else errors[0]
        return "invalid input"


class GhostParamsForm(forms.Form):
    # required=False: "{}" (every default) is a valid value; a missing field reaches the service as None.
    # SafeJSONField: Django's JSONField lets 2,000 nested "[" (RecursionError) and a 4,301-digit integer (the
    # int digit limit) through to a 500; this one says "too deeply nested" / "more than 30 digits" instead.
    params = SafeJSONField(required=False)
    reason = forms.CharField(max_length=500, strip=True,
                             error_messages={"required": "a reason is required: it is written to the audit log"})

    first_error = GhostToggleForm.first_error


class TargetForm(forms.Form):
    """One revenue target. `amount` is a CharField on purpose: the service's parser (the single source of
    the rules: positive, two decimals, finite, not absurd) reads the raw text and words the error."""

    owner = forms.CharField(max_length=20)  # "portfolio" or a ghost id
    amount = forms.CharField(max_length=32, error_messages={"required": "enter an amount, e.g. 25.00"})
    period = forms.ChoiceField(
        choices=Period.choices,
        error_messages={"invalid_choice": "period must be one of day, week, month"},
    )

    def clean_owner(self) -> int | None:
        raw = self.cleaned_data["owner"].strip()
        if raw == "portfolio":
            return None
        ghost_id = parse_id(raw)  # not isdigit(): it is true for "²", which int() refuses (a 500)
        if ghost_id is None:
            raise forms.ValidationError("owner must be 'portfolio' or a ghost id")
        return ghost_id

    def clean_amount(self) -> Decimal:
        try:
            return parse_amount(self.cleaned_data["amount"])
        except TargetError as e:
            raise forms.ValidationError(str(e)) from None


class TradeFilterForm(forms.Form):
    """GET filters of the trades page and the CSV export. Every field optional; bad values are errors
    shown on the page (never a 500, never silently ignored)."""

    ghost = forms.ModelChoiceField(
        queryset=Ghost.objects.order_by("name"),
        required=False,
        empty_label="all ghosts",
        error_messages={"invalid_choice": "no such ghost"},
    )
    instrument = forms.ModelChoiceField(
        queryset=Instrument.objects.order_by("symbol", "id"),
        required=False,
        empty_label="all instruments",
        error_messages={"invalid_choice": "no such instrument"},
    )
    side = forms.ChoiceField(
        choices=[("", "both sides"), *Side.choices],
        required=False,
        error_messages={"invalid_choice": "side must be long or short"},
    )
    outcome = forms.ChoiceField(
        choices=[("", "any outcome"), ("win", "win"), ("loss", "loss"), ("open", "open")],
        required=False,
        error_messages={"invalid_choice": "outcome must be win, loss or open"},
    )
    date_from = BoundedDateField(  # 9999-12-31 passed a DateField; "+ 1 day" for the exclusive end overflowed
        range_label="from",
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}),
        error_messages={"invalid": "from: enter a date as YYYY-MM-DD"},
    )
    date_to = BoundedDateField(  # 9999-12-31 passed a DateField; "+ 1 day" for the exclusive end overflowed
        range_label="to",
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}),
        error_messages={"invalid": "to: enter a date as YYYY-MM-DD"},
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        start: date | None = data.get("date_from")
        end: date | None = data.get("date_to")
        if start and end and start > end:
            raise forms.ValidationError("the 'from' date is after the 'to' date")
        return data

    def selector_kwargs(self) -> dict[str, Any]:
        """Fields of apps.trading.trade_selectors.TradeFilter (call after is_valid())."""
        d = self.cleaned_data
        return {
            "ghost_id": d["ghost"].pk if d.get("ghost") else None,
            "instrument_id": d["instrument"].pk if d.get("instrument") else None,
            "side": d.get("side") or None,
            "outcome": d.get("outcome") or None,
            "date_from": d.get("date_from"),
            "date_to": d.get("date_to"),
        }

    def error_lines(self) -> list[str]:
        return [str(e) for errors in self.errors.values() for e in errors]
