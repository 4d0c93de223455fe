"""Login throttling: slow the attacker down without locking the owner out.

After OWASP's "Slow Down Online Guessing Attacks with Device Cookies". Three counters in the shared cache
(Redis, so every web process sees them), all keyed on what authentication really uses:

- **per client IP, exponential back-off.** After ``HFT_LOGIN_IP_FREE_ATTEMPTS`` wrong passwords from one
  client IP (an IPv6 client counts per /64, the block one host is usually given), each further password check
  from it waits ``HFT_LOGIN_IP_BACKOFF_BASE`` seconds, doubled per wrong password, at most
  ``HFT_LOGIN_IP_BACKOFF_MAX``. The count is forgotten after ``HFT_LOGIN_IP_FORGET_SECONDS`` without a wrong
  password. The client IP is REMOTE_ADDR unless that is one of ``HFT_TRUSTED_PROXIES`` (see ``client_ip``).
- **per username, for clients without that user's device cookie.** ``HFT_LOGIN_MAX_ATTEMPTS`` wrong passwords
  within ``HFT_LOGIN_WINDOW_SECONDS`` (from the first) refuse further checks for the rest of the window.
- **per device cookie.** A successful login leaves a signed cookie naming the (hashed, normalised) username
  and a random device id. A browser that presents it for that username skips the two counters above, so an
  attacker behind the owner's proxy IP, or spraying the username from many IPs, cannot keep the owner out;
  the device has its own limit (same numbers), after which it is treated as an unknown client. A successful
  login from a known device clears the username's counter.

Every attempt is counted *before* its password check (atomic INCR / SET NX), not after a failure, so a burst
of parallel requests cannot all slip through while the slow password hash runs; a successful login gives its
count back. The check runs inside authentication (``ThrottledModelBackend``), so every form that calls
``authenticate(request, ...)``, the desk's login and the admin's, is covered.
"""

import hashlib
import ipaddress
import math
import secrets
import time
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache

from django.conf import settings
from django.core import signing
from django.core.cache import cache

DEVICE_COOKIE = "hft_device"
DEVICE_SALT = "apps.accounts.throttle.device"


def normalise_username(raw: str) -> str:
    """The username as authentication matches it, casefolded: the key of every per-username login counter.

    The login form strips the field (CharField) and NFKC-normalises it (UsernameField, as
    AbstractBaseUser.normalize_username), so " op", "op\\u3000" and a full-width "ｏp" all authenticate as "op";
    a counter keyed on the raw text gave each spelling five fresh guesses. Casefolding merges "OP" with "op"
    (two accounts to the database, one counter here): the throttle must never be weaker than authentication.
    NFKC again after casefold, as casefold can leave a string that is not NFKC-normal (Unicode's NFKC_Casefold).
    """
    once = unicodedata.normalize("NFKC", raw.strip()).strip().casefold()
    return unicodedata.normalize("NFKC", once)


def _digest(text: str) -> str:
    # Hashed: usernames and IPv6 addresses hold characters that are not valid cache keys, and a device
    # cookie should not spell the username out.
    return hashlib.sha256(text.encode()).hexdigest()[:32]


# --- the client's IP -----------------------------------------------------------------------------------


@lru_cache(maxsize=8)
def _networks(spec: tuple[str, ...]) -> tuple:
    return tuple(ipaddress.ip_network(s.strip(), strict=False) for s in spec if s.strip())


def trusted_proxies() -> tuple:
    return _networks(tuple(settings.HFT_TRUSTED_PROXIES))


def _ip(text: str):
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def client_ip(request) -> str:
    """REMOTE_ADDR, unless it is a trusted proxy: then the right-most X-Forwarded-For hop that is not one.

    Right-most, because each proxy appends the address it received from; everything left of the last
    untrusted hop was written by the client and can be anything. With ``HFT_TRUSTED_PROXIES`` empty (the
    default) X-Forwarded-For is ignored, so a client cannot choose its IP by sending the header.
    """
    remote = request.META.get("REMOTE_ADDR", "")
    proxies = trusted_proxies()
    addr = _ip(remote)
    if addr is None or not any(addr in net for net in proxies):
        return remote
    hops = [h for h in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if h.strip()]
    for hop in reversed(hops):
        hop_addr = _ip(hop)
        if hop_addr is None:
            break  # garbage in the chain: trust nothing further left
        if not any(hop_addr in net for net in proxies):
            return str(hop_addr)
        addr = hop_addr
    return str(addr)  # only proxies (or garbage) in the chain: the left-most trusted hop we reached


def _ip_bucket(ip: str) -> str:
    addr = _ip(ip)
    if addr is not None and addr.version == 6 and addr.ipv4_mapped is None:
        return str(ipaddress.ip_network(f"{addr}/64", strict=False))
    return str(addr.ipv4_mapped if addr is not None and addr.version == 6 else addr or ip or "?")


# --- counters ------------------------------------------------------------------------------------------


def _incr(key: str, timeout: int) -> int:
    """Atomic count; a new key lives `timeout` seconds from its first count (a fixed window)."""
    for _ in range(3):
        cache.add(key, 0, timeout)
        try:
            return cache.incr(key)
        except ValueError:  # expired between add and incr
            continue
    return cache.incr(key)


def _decr(key: str) -> None:
    try:
        cache.decr(key)
    except ValueError:  # already expired: nothing to give back
        pass


def _username_key(username: str) -> str:
    return f"login:user:{_digest(normalise_username(username))}"


def _ip_key(ip: str) -> str:
    return f"login:ip:{_digest(_ip_bucket(ip))}"


def _device_key(device: str) -> str:
    return f"login:device:{_digest(device)}"


def backoff_seconds(wrong_beyond_free: int) -> int:
    """Wait after the n-th wrong password beyond the free ones: base, 2 base, 4 base ... at most max (s)."""
    base, cap = settings.HFT_LOGIN_IP_BACKOFF_BASE, settings.HFT_LOGIN_IP_BACKOFF_MAX
    return int(min(cap, base * 2 ** min(wrong_beyond_free - 1, 30)))


# --- device cookies ------------------------------------------------------------------------------------


def device_cookie_value(username: str) -> str:
    return signing.dumps([_digest(normalise_username(username)), secrets.token_urlsafe(16)], salt=DEVICE_SALT)


def device_of(request, username: str) -> str | None:
    """The device id of a valid, unexpired device cookie issued for this username, else None."""
    raw = request.COOKIES.get(DEVICE_COOKIE)
    if not raw:
        return None
    try:
        user_digest, device = signing.loads(raw, salt=DEVICE_SALT, max_age=settings.HFT_LOGIN_DEVICE_DAYS * 86400)
    except (signing.BadSignature, ValueError, TypeError):
        return None
    return device if user_digest == _digest(normalise_username(username)) else None


def device_cookie_set(response, username: str) -> None:
    """A fresh device cookie after a successful login (a new id each time, as OWASP advises)."""
    response.set_cookie(
        DEVICE_COOKIE,
        device_cookie_value(username),
        max_age=settings.HFT_LOGIN_DEVICE_DAYS * 86400,
        httponly=True,
        samesite="Lax",
        secure=settings.SESSION_COOKIE_SECURE,
    )


# --- one attempt ---------------------------------------------------------------------------------------


@dataclass
class Attempt:
    """What `attempt_begin` counted for one password check, so `attempt_end` can settle it."""

    username: str
    ip: str
    device: str | None = None  # set when the attempt goes the known-device way
    counted: list[str] = field(default_factory=list)
    slot: str | None = None
    retry_after: int = 0  # > 0: refused, try again in this many seconds

    @property
    def refused(self) -> bool:
        return self.retry_after > 0


def attempt_begin(request, username: str) -> Attempt:
    """Count this attempt; `refused` when a limit is reached (nothing stays counted then)."""
    attempt = Attempt(username=username, ip=client_ip(request))
    limit, window = settings.HFT_LOGIN_MAX_ATTEMPTS, settings.HFT_LOGIN_WINDOW_SECONDS
    device = device_of(request, username)
    if device is not None:
        key = _device_key(device)
        if _incr(key, window) <= limit:
            attempt.device, attempt.counted = device, [key]
            return attempt
        _decr(key)  # this device used up its guesses: from here on it is an unknown client

    ip_key = _ip_key(attempt.ip)
    wrong_from_ip = _incr(ip_key, settings.HFT_LOGIN_IP_FORGET_SECONDS)
    attempt.counted.append(ip_key)
    beyond_free = wrong_from_ip - settings.HFT_LOGIN_IP_FREE_ATTEMPTS
    if beyond_free > 0:
        # One password check per back-off period: SET NX of a slot that expires with the period, holding
        # its end for Retry-After.
        wait = backoff_seconds(beyond_free)
        slot = f"login:ip-slot:{_digest(_ip_bucket(attempt.ip))}"
        if cache.add(slot, time.time() + wait, wait):
            attempt.slot = slot
        else:
            until = cache.get(slot) or time.time() + 1
            return _refuse(attempt, math.ceil(max(1.0, until - time.time())))

    user_key = _username_key(username)
    attempt.counted.append(user_key)
    if _incr(user_key, window) > limit:
        return _refuse(attempt, window)
    return attempt


def _refuse(attempt: Attempt, retry_after: int) -> Attempt:
    for key in attempt.counted:
        _decr(key)
    if attempt.slot:
        cache.delete(attempt.slot)
    attempt.counted, attempt.slot, attempt.retry_after = [], None, retry_after
    return attempt


def attempt_end(attempt: Attempt, *, success: bool) -> None:
    """A wrong password stays counted; the right one gives its counts back (and a known device clears the
    username's counter: the owner just proved who they are from a browser they used before)."""
    if not success:
        if attempt.device is None:
            cache.touch(_ip_key(attempt.ip), settings.HFT_LOGIN_IP_FORGET_SECONDS)  # forget after quiet time
        return
    for key in attempt.counted:
        _decr(key)
    if attempt.slot:
        cache.delete(attempt.slot)
    if attempt.device is not None:
        cache.delete_many([_username_key(attempt.username), _device_key(attempt.device)])


def unlock(*, username: str | None = None, ip: str | None = None) -> None:
    """Clear a username's and/or a client IP's counters (manage.py login_unlock)."""
    keys = []
    if username is not None:
        keys.append(_username_key(username))
    if ip is not None:
        keys += [_ip_key(ip), f"login:ip-slot:{_digest(_ip_bucket(ip))}"]
    cache.delete_many(keys)
