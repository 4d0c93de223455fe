"""Settings of the killed-desk test's worker subprocesses ONLY (DJANGO_SETTINGS_MODULE in their environment,
tests/trading/test_live_killed_desk.py): the test settings with live trading on against the test's local fake
Binance, whose URL comes from HFT_TEST_FAKE_BINANCE (the fake's `urls()` as JSON). The keys are the fake's,
set in the worker's environment by the test.

Like the test process (tests/trading/conftest.py), these workers may reach no host but the loopback: a
misconfigured URL fails loudly instead of calling a real exchange.
"""

import json
import os
import socket

from hftweb.settings_test import *  # noqa: F403

HFT_LIVE_TRADING = True
HFT_LIVE_CCXT_CONFIG = {"urls": {"api": json.loads(os.environ["HFT_TEST_FAKE_BINANCE"])}, "enableRateLimit": False}

_getaddrinfo = socket.getaddrinfo


def _loopback_only(host, *args, **kwargs):
    if host not in ("127.0.0.1", "localhost", "::1", None):
        raise OSError(f"killed-desk test worker tried to reach {host!r}: only 127.0.0.1 is allowed")
    return _getaddrinfo(host, *args, **kwargs)


socket.getaddrinfo = _loopback_only
