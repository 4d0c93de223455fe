"""Alert secrets at rest: Fernet (AES-128-CBC with HMAC-SHA256, from `cryptography`) under HFT_SECRETS_KEY.

A MultiFernet over settings.HFT_SECRETS_KEYS: the first key encrypts, every key is tried to decrypt. A key is
rotated by putting a new one first, running `manage.py alert_secrets_rotate` (every stored secret re-encrypted
under the first key), then dropping the old one. Tokens carry a random IV, so the column reveals nothing, not
even which channels share a secret; a prefix search on it finds nothing. Decryption happens only where a
secret is used (the worker's request), never to render a page: pages ask `secret_set`.
Migrations import this module (0004 encrypts the plain rows): keep these functions as they are.
"""

from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings


class SecretUnreadable(Exception):
    """A stored secret that no key in HFT_SECRETS_KEY opens (the key was replaced without keeping the old one)."""


@lru_cache(maxsize=4)
def _box(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(k) for k in keys])  # settings refused a malformed key at start


def _current() -> MultiFernet:
    return _box(tuple(settings.HFT_SECRETS_KEYS))  # read each time: tests and rotation change the setting


def secret_encrypt(plain: str) -> str:
    """A Fernet token (ASCII) for `plain`; "" stays "" (no secret)."""
    return _current().encrypt(plain.encode()).decode() if plain else ""


def secret_decrypt(token: str) -> str:
    """The plain secret; "" for none. Raises SecretUnreadable when no configured key opens it."""
    if not token:
        return ""
    try:
        return _current().decrypt(token.encode()).decode()
    except InvalidToken:
        raise SecretUnreadable("no key in HFT_SECRETS_KEY opens this secret") from None


def secret_rotate(token: str) -> str:
    """The same secret re-encrypted under the first key. Raises SecretUnreadable like secret_decrypt."""
    try:
        return _current().rotate(token.encode()).decode()
    except InvalidToken:
        raise SecretUnreadable("no key in HFT_SECRETS_KEY opens this secret") from None
