"""Display text for the values an engine hands the desk as plain strings: the ghosts page's state summary
(`Ghost.state`, from each ghost's `state_summary`). The engine stays pure and machine-readable (ISO times, plain
decimals, which its tests and tools parse); the desk shows them the way it shows every other figure.

One helper, used by the ghosts page's template (the `state_value` filter) and by the payload pushed to browsers
(`apps.ghosts.events.ghost_payload`), so a card reads the same drawn by the server and redrawn by desk.js.
"""

import re
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?$")
_IN_TEXT = re.compile(r"\b\d{4}-(\d{2}-\d{2}) (\d{2}:\d{2})(?::\d{2})? UTC\b")  # "2026-12-05 05:11 UTC" in a sentence
_NUMBER = re.compile(r"^[+-]?\d+(\.\d+)?$")


def state_value(value: object) -> str:
    """One state summary value as the desk shows it:

    - a time (ISO 8601, "2026-12-05T05:11:00+00:00") -> "12-05 05:11", in UTC: data time, as the header's clock;
      a time inside a sentence ("LONG at 2026-12-05 05:11 UTC") the same way;
    - a plain number ("6532129.09") -> thousands separators, its own decimals kept ("6,532,129.09"), its sign too;
    - anything else as it is.
    """
    text = str(value).strip()
    if _ISO.match(text):
        try:
            t = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return text
        if t.tzinfo is not None:
            t = t.astimezone(UTC)
        return f"{t:%m-%d %H:%M}"
    if _NUMBER.match(text):
        try:
            d = Decimal(text)
        except InvalidOperation:
            return text
        return ("+" if text.startswith("+") else "") + f"{d:,}"
    return _IN_TEXT.sub(r"\1 \2", text)


def state_display(items: list[tuple[str, str]] | list[list[str]]) -> list[list[str]]:
    """[label, value] pairs in their order, every value through `state_value` (the labels as the engine names them)."""
    return [[str(label), state_value(value)] for label, value in items]
