"""Untrusted text -> JSON, whole numbers and ids, refusing what the interpreter's own limits would turn into a 500.

Three traps behind the 500s of issue 12's fuzzing run:
- Python's json module recurses once per level of nesting: 1,000 `[` raise RecursionError, which is not a
  ValueError, so `except ValueError` (and Django's JSONField) let it through;
- int() refuses strings of more than 4,300 digits (ValueError, since 3.11: CVE-2020-10735), json.loads too,
  and an int that parses may still overflow a float (math.isfinite) or an SQLite INTEGER (OverflowError);
- str.isdigit() is true for "²" and "١" (and int() reads "١٢" as 12 but refuses "²").

Each helper checks first and raises ParseError (a ValueError) worded for the person who typed the value; the
caller puts its own label in front ("params: ...", "Max open positions: ...").
"""

import json
import math
import re
from typing import Any

MAX_JSON_DEPTH = 32  # a ghost's params are 1 level deep, a websocket command 2; far below the ~1,000 recursion cap
MAX_JSON_CHARS = 100_000  # a ghost's params are ~1 KB; bounds the depth scan below (linear, in Python)
MAX_JSON_INT_DIGITS = 30  # no desk quantity needs more (a float holds ~16 significant digits anyway)
MAX_INT_DIGITS = 15  # a typed whole number (a count, a limit): any real value fits, and every one is exact as float
MAX_ID = 2**63 - 1  # BigAutoField / SQLite INTEGER: a larger id cannot even be bound in a query

_ASCII_INT = re.compile(r"[+-]?[0-9]+")  # explicit [0-9]: \d and isdigit() accept every script's digits
_ASCII_ID = re.compile(r"[0-9]+")
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')  # one JSON string literal, escapes included (linear)
_BRACKET = re.compile(r"[\[\]{}]")


class ParseError(ValueError):
    """Input refused by a parser here, with a message fit for the person who typed it."""


def json_depth(text: str, *, stop_above: int | None = None) -> int:
    """The deepest nesting of arrays and objects in `text` (brackets inside string literals do not count).

    A loop, not recursion, so 100,000 `[` cost a few milliseconds instead of the stack. Stops counting once
    the depth passes `stop_above`. Malformed text (an unterminated string) may be over-counted; json.loads
    refuses it anyway.
    """
    depth = deepest = 0
    for m in _BRACKET.finditer(_JSON_STRING.sub("", text)):
        depth += 1 if m.group() in "[{" else -1
        if depth > deepest:
            deepest = depth
            if stop_above is not None and deepest > stop_above:
                break
    return deepest


def _json_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_JSON_INT_DIGITS:
        raise ParseError(f"a number has more than {MAX_JSON_INT_DIGITS} digits")
    return int(text)


def _json_float(text: str) -> float:
    value = float(text)  # never raises on JSON's number syntax: 1e999 is inf
    if not math.isfinite(value):
        raise ParseError(f"the number {text[:20]}{'…' if len(text) > 20 else ''} is too large")
    return value


def _json_constant(name: str) -> Any:
    raise ParseError(f"{name} is not a number JSON allows")


def parse_json(text: str, *, max_depth: int = MAX_JSON_DEPTH, max_chars: int = MAX_JSON_CHARS) -> Any:
    """json.loads for text from outside: bounded length, depth and integer size; finite numbers only (no NaN,
    Infinity or 1e999). Raises ParseError, never RecursionError or the int digit limit's ValueError."""
    if not isinstance(text, str):
        raise ParseError("expected JSON text")
    if len(text) > max_chars:
        raise ParseError(f"too long ({len(text):,} characters; at most {max_chars:,})")
    if json_depth(text, stop_above=max_depth) > max_depth:
        raise ParseError(f"too deeply nested (at most {max_depth} levels of [ ] and {{ }} inside each other)")
    try:
        return json.loads(text, parse_int=_json_int, parse_float=_json_float, parse_constant=_json_constant)
    except json.JSONDecodeError as e:
        raise ParseError(f"not valid JSON ({e.msg} at character {e.pos})") from None


def parse_int(text: str, *, max_digits: int = MAX_INT_DIGITS) -> int:
    """A whole number typed in ASCII digits (optional sign, surrounding spaces ignored), at most `max_digits`."""
    raw = (text or "").strip()
    if not _ASCII_INT.fullmatch(raw):
        raise ParseError(f"{raw[:40]!r} is not a whole number")
    if len(raw.lstrip("+-")) > max_digits:
        raise ParseError(f"{raw[:12]}… is too large (at most {max_digits} digits)")
    return int(raw)


def parse_id(text: str | None) -> int | None:
    """A database id from text (a query string, a form value, "db:<id>"): ASCII digits in 1..MAX_ID, else None."""
    raw = (text or "").strip()
    if not _ASCII_ID.fullmatch(raw) or len(raw) > 19:
        return None
    value = int(raw)
    return value if 1 <= value <= MAX_ID else None
