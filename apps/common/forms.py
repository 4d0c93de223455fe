"""Form fields that refuse, with a message, the input Django's own fields let through to a 500.

- SafeJSONField: Django's JSONField catches only JSONDecodeError, so 2,000 nested `[` (RecursionError) or an
  integer of 4,301 digits (the int digit limit's ValueError) escape it; this one parses with
  apps.common.parsing.parse_json (bounded depth, length and integer size).
- BoundedDateField: a DateField takes 9999-12-31, and the first "+ 1 day" after it (the exclusive end of a
  filter) raises OverflowError; this one keeps dates between DATE_MIN and DATE_MAX.
"""

from datetime import date
from typing import Any

from django import forms
from django.forms.fields import InvalidJSONInput, JSONString

from apps.common.parsing import MAX_JSON_CHARS, MAX_JSON_DEPTH, ParseError, parse_json

# The desk's data starts after the epoch (timestamps in ms since 1970 throughout) and nothing it stores is
# centuries ahead; the far bound only has to keep "+ a day/week/month" well away from date.max (9999-12-31).
DATE_MIN = date(1970, 1, 1)
DATE_MAX = date(2999, 12, 31)


class SafeJSONField(forms.JSONField):
    def __init__(self, *, max_depth: int = MAX_JSON_DEPTH, max_chars: int = MAX_JSON_CHARS, **kwargs: Any) -> None:
        self.max_depth, self.max_chars = max_depth, max_chars
        super().__init__(**kwargs)

    def _loads(self, value: str) -> Any:
        return parse_json(value, max_depth=self.max_depth, max_chars=self.max_chars)

    def to_python(self, value: Any) -> Any:
        if self.disabled or value in self.empty_values or not isinstance(value, str):
            return super().to_python(value)
        try:
            converted = self._loads(value)
        except ParseError as e:
            raise forms.ValidationError(str(e), code="invalid") from None
        return JSONString(converted) if isinstance(converted, str) else converted

    def bound_data(self, data: Any, initial: Any) -> Any:
        # What a re-rendered form shows: the typed text as is when it does not parse (Django's own loads here).
        if self.disabled:
            return initial
        if data is None:
            return None
        try:
            return self._loads(data)
        except ParseError:
            return InvalidJSONInput(data)


def _range_error(label: str) -> str:
    return f"{label}: enter a date between {DATE_MIN:%Y-%m-%d} and {DATE_MAX:%Y-%m-%d}"


class BoundedDateField(forms.DateField):
    """A DateField between DATE_MIN and DATE_MAX; `range_label` names the field in the message ("to", "from")."""

    def __init__(self, *, range_label: str = "date", **kwargs: Any) -> None:
        self.range_label = range_label
        super().__init__(**kwargs)

    def validate(self, value: date | None) -> None:
        super().validate(value)
        if value is not None and not DATE_MIN <= value <= DATE_MAX:
            raise forms.ValidationError(_range_error(self.range_label), code="out_of_range")
