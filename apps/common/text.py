"""Text from outside (exception messages, exchange answers, file names) made fit to store and to show.

Two things in such text crash a write rather than a page: PostgreSQL refuses NUL in text columns (DataError; SQLite
stores it), and a lone surrogate, which is how Python decodes a file name's non-UTF-8 byte (os.fsdecode,
surrogateescape), cannot be encoded as UTF-8 by either database driver (UnicodeEncodeError). And an error message
has no natural size: a parser quoting a 10 MB line would be stored, pushed to every browser and rendered whole.
"""

ERROR_TEXT_LIMIT = 2000  # characters of an error kept on a row: the reason and where, not the whole input


def has_unstorable(text: str) -> bool:
    """True when `text` holds a NUL or a lone surrogate (what db_text would change apart from its length)."""
    if "\x00" in text:
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def db_text(value: object, *, limit: int = ERROR_TEXT_LIMIT) -> str:
    """`value` as text any database stores and any page shows: NUL characters dropped, lone surrogates written as
    U+FFFD, and at most `limit` characters, the cut said at the end ("… [12,345 more characters]")."""
    text = str(value).replace("\x00", "")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = "".join("\ufffd" if "\ud800" <= ch <= "\udfff" else ch for ch in text)
    if len(text) > limit:
        keep = max(0, limit - 40)  # room for the note, whose number has at most ~20 characters
        text = text[:keep] + f"… [{len(text) - keep:,} more characters]"
    return text
