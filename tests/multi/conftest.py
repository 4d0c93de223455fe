"""The live fixtures of tests/trading (a local fake Binance spot server and the settings pointing ccxt at it)."""

from tests.trading.conftest import _loopback_only, fake_binance, live_settings  # noqa: F401
