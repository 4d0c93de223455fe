"""Redaction of URLs and tokens in text that leaves the alert worker: delivery errors (stored on AlertDelivery, shown
on /alerts/ to viewers and in the admin) and the alert loggers' lines (`RedactFilter`).

An endpoint that refuses an alert often echoes the URL it was called on, and for Telegram and Discord that URL
is the credential (`/bot<token>/`, `/api/webhooks/<id>/<token>`); a generic webhook may carry it in the query.
`redact(text, secrets)` hides, in this order:
1. any URL (after undoing JSON's `\\/`, and also percent-encoded): its userinfo, every query value, the fragment,
   and each path segment that looks like a token (`bot<id>:...`, 16+ characters, 6+ mixing letters and digits,
   6+ digits). Scheme, host, port and plain words (`/api/webhooks/`, `/sendMessage`) stay, so the error still
   says where the alert went;
2. the channel's own secret when the caller knows it (the service does): the whole value, its path, its
   token-like segments, query values, userinfo, fragment, each as sent, percent-encoded and JSON-escaped: this
   catches an echo without scheme or host, or a token of plain letters that rule 1 would keep; and a text that
   ends with the first 6+ characters of one (a cut through it);
3. what is left without a scheme: Discord webhook paths, bare Telegram bot tokens, `?key=value` / `&key=value`.
It errs towards hiding (a harmless `/v2024x/` segment goes too). Redact before cutting a text to length: a cut
through a token leaves a piece that no longer matches (the service does).
Migrations import this module (0002 redacts stored errors): keep `redact(text, secrets)` as it is.
"""

import logging
import re
from collections.abc import Iterable
from urllib.parse import quote, unquote, urlsplit

MASK = "***"
# scheme://rest, up to whitespace, a quote or an angle bracket (how URLs end inside messages, JSON and HTML)
_URL = re.compile(r"(?i)\b[a-z][a-z0-9+.-]{1,20}://[^\s\"'<>`]+")
_URL_PERCENT = re.compile(r"(?i)\b[a-z][a-z0-9+.-]{1,20}%3A%2F%2F[^\s\"'<>`&]+")
_TRAILING = ".,;:!?)]}"  # punctuation after a URL in prose belongs to the sentence
_TELEGRAM_SEGMENT = re.compile(r"^bot\d+:")
_DISCORD_PATH = re.compile(r"/api/webhooks/[^/\s\"'<>?#]+/[^/\s\"'<>?#]+")
_TELEGRAM_TOKEN = re.compile(r"\b\d{3,15}:[A-Za-z0-9_-]{20,}")
_QUERY_PAIR = re.compile(r"(?<=[?&])([A-Za-z0-9_.\[\]-]{1,64})=(?!\*\*\*)[^&#\s\"'<>]+")  # not re-masking


def token_like(segment: str) -> bool:
    """A path segment that may be a credential rather than a route word."""
    s = unquote(segment)
    digits, letters = any(c.isdigit() for c in s), any(c.isalpha() for c in s)
    return len(s) >= 16 or (len(s) >= 6 and digits and letters) or (len(s) >= 6 and s.isdigit())


def _segment(segment: str) -> str:
    if _TELEGRAM_SEGMENT.match(unquote(segment)):
        return "bot" + MASK
    return MASK if token_like(segment) else segment


def redact_url(url: str) -> str:
    """One URL with its credentials hidden: userinfo, query values, fragment, token-like path segments."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError:
        return MASK
    netloc = parts.netloc
    if "@" in netloc:
        netloc = MASK + "@" + netloc.rsplit("@", 1)[1]
    out = f"{parts.scheme}://{netloc}" + "/".join(_segment(s) for s in parts.path.split("/"))
    if parts.query:
        out += "?" + "&".join(p.split("=", 1)[0] + "=" + MASK if "=" in p else MASK if p else ""
                              for p in parts.query.split("&"))
    if parts.fragment:
        out += "#" + MASK
    return out


def _url_sub(match: re.Match) -> str:
    text = match.group(0)
    core = text.rstrip(_TRAILING)
    return redact_url(core) + text[len(core):]


def _percent_url_sub(match: re.Match) -> str:
    return quote(redact_url(unquote(match.group(0))), safe="*")


def _known_parts(secret: str) -> set[str]:
    parts = {secret}
    if "://" in secret:
        try:
            url = urlsplit(secret)
        except ValueError:
            return parts
        if len(url.path) > 1:
            parts.add(url.path)
        parts.update(s for s in url.path.split("/") if token_like(s))
        for pair in url.query.split("&"):
            value = pair.split("=", 1)[-1]
            parts.update({value, unquote(value)})
        parts.update({url.username or "", url.password or "", url.fragment})
    forms = set()
    for p in parts:
        if len(p) >= 4:  # shorter pieces ("v=2", "1") would wipe ordinary words
            forms.update({p, quote(p, safe=""), quote(p, safe="/:@")})
    return forms


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with URL credentials and, when given, the channel's own secrets replaced by ***; NUL characters
    dropped (an endpoint's answer may hold them; PostgreSQL refuses them in text and JSON: the delivery failed)."""
    text = str(text).replace("\\/", "/").replace("\x00", "")
    text = _URL.sub(_url_sub, text)
    text = _URL_PERCENT.sub(_percent_url_sub, text)
    known = set().union(*(_known_parts(s) for s in secrets if s))
    for part in sorted(known, key=len, reverse=True):  # the whole secret before its pieces
        text = text.replace(part, "/" + MASK if part.startswith("/") else MASK)
    for part in known:  # a text cut through a secret (rows stored before redaction came first) ends with its start
        cut = next((k for k in range(len(part) - 1, 5, -1) if text.endswith(part[:k])), 0)
        if cut:
            text = text[:-cut] + MASK
    text = _DISCORD_PATH.sub(f"/api/webhooks/{MASK}/{MASK}", text)
    text = _TELEGRAM_TOKEN.sub(MASK, text)
    return _QUERY_PAIR.sub(lambda m: f"{m.group(1)}={MASK}", text)


class RedactFilter(logging.Filter):
    """On the alert loggers: every line, arguments and traceback included, goes out redacted. The record's
    exception is rendered (redacted) into `exc_text` and dropped, so no handler formats the raw one."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact(record.getMessage()), ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        record.exc_info = None
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True
