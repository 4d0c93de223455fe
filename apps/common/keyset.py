"""Keyset pagination on (a time column, id), newest first: the pages of lists that grow without bound (trades,
the audit log).

A page asks for the `limit + 1` rows past a cursor, the (time, id) of the row it starts after, so an index on
(time, id) answers it as a range read, page 1 or page 15,000 alike: no COUNT over the table, no OFFSET. The
links are "newer" and "older" (and "newest"), never page numbers.
"""

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar

from django.db.models import Model, Q, QuerySet

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
US = timedelta(microseconds=1)
CURSOR_RE = re.compile(r"(?P<us>[0-9]{1,19})_(?P<id>[0-9]{1,19})", re.ASCII)
M = TypeVar("M", bound=Model)


@dataclass(frozen=True)
class Cursor:
    """A row's place in the (time, id) order. In URLs: '<microseconds since 1970>_<id>'."""

    at: datetime
    id: int

    @property
    def token(self) -> str:
        return f"{(self.at - EPOCH) // US}_{self.id}"

    @classmethod
    def parse(cls, token: str | None) -> "Cursor | None":
        """A cursor from a URL, or None for anything that is not one (a bad cursor shows the newest page)."""
        match = CURSOR_RE.fullmatch(token or "")
        if match is None:  # int() alone would take "1_2", " 12", "١٢" (other scripts' digits) and "-5"
            return None
        try:
            ident = int(match["id"])
            at = EPOCH + timedelta(microseconds=int(match["us"]))
        except OverflowError:
            return None
        if ident <= 0 or not datetime(1971, 1, 1, tzinfo=UTC) <= at < datetime(9999, 1, 1, tzinfo=UTC):
            return None
        return cls(at, ident)

    @classmethod
    def of(cls, row: Any, field: str) -> "Cursor":
        return cls(getattr(row, field), row.pk)


@dataclass(frozen=True)
class KeysetPage(Generic[M]):
    rows: list[M]
    newer: Cursor | None  # link to the rows just newer than rows[0] (None: this is the newest page)
    older: Cursor | None  # link to the rows just older than rows[-1] (None: nothing older)
    at_cursor: bool  # reached through a cursor (show a link back to the newest page)


def older_than(field: str, c: Cursor) -> Q:
    # (t, id) < (c.at, c.id), written so the planner sees a range on t it can seek the index to (t <= c.at),
    # with the tie on c.at broken by id: an OR of the two halves alone is not a range.
    return Q(**{f"{field}__lte": c.at}) & (Q(**{f"{field}__lt": c.at}) | Q(id__lt=c.id))


def newer_than(field: str, c: Cursor) -> Q:
    return Q(**{f"{field}__gte": c.at}) & (Q(**{f"{field}__gt": c.at}) | Q(id__gt=c.id))


def keyset_page(
    qs: QuerySet[M], *, field: str, before: Cursor | None = None, after: Cursor | None = None, limit: int = 50
) -> KeysetPage[M]:
    """One page of `qs` newest first on (field, id): the newest, the rows older than `before`, or newer than
    `after`. At most two queries whatever the table's size: `after` reads upwards (oldest first) and turns the rows
    round; when fewer than a page are newer, the newest page is shown instead (never a short page at the top)."""
    if after is not None and before is None:
        up = list(qs.filter(newer_than(field, after)).order_by(field, "id")[: limit + 1])
        if len(up) > limit:
            rows = up[:limit][::-1]
            return KeysetPage(rows=rows, newer=Cursor.of(rows[0], field), older=Cursor.of(rows[-1], field),
                              at_cursor=True)
    page = qs.filter(older_than(field, before)) if before is not None else qs
    rows = list(page.order_by(f"-{field}", "-id")[: limit + 1])
    older = Cursor.of(rows[limit - 1], field) if len(rows) > limit else None
    rows = rows[:limit]
    newer = Cursor.of(rows[0], field) if before is not None and rows else None
    return KeysetPage(rows=rows, newer=newer, older=older, at_cursor=before is not None)
