"""Live-execution fixtures: a local fake Binance spot server and the settings/env that point ccxt at it."""

import socket
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pandas as pd
import pytest

from tests.trading.fake_binance import API_KEY, API_SECRET, FakeBinanceSpot

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
PRICE = Decimal("95000.00")


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch):
    """No test here may reach a real exchange: resolving any host but the loopback fails loudly."""
    real = socket.getaddrinfo

    def guarded(host, *args, **kwargs):
        if host not in ("127.0.0.1", "localhost", "::1", None):
            raise OSError(f"test tried to reach {host!r}: only 127.0.0.1 is allowed")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", guarded)


@pytest.fixture
def fake_binance():
    with FakeBinanceSpot(price=PRICE) as fake:
        yield fake


@pytest.fixture
def live_settings(settings, monkeypatch, fake_binance):
    """HFT_LIVE_TRADING=1, keys in the environment, ccxt's real binance class pointed at the fake.
    Sandbox mode stays at its default (on): the fake's URLs are merged over the testnet URLs."""
    from apps.trading.live_client import live_clients_clear

    settings.HFT_LIVE_TRADING = True
    settings.HFT_LIVE_CCXT_CONFIG = {"urls": {"api": fake_binance.urls()}, "enableRateLimit": False}
    monkeypatch.setenv("HFT_BINANCE_API_KEY", API_KEY)
    monkeypatch.setenv("HFT_BINANCE_SECRET", API_SECRET)
    live_clients_clear()
    yield fake_binance
    live_clients_clear()


@pytest.fixture
def usdm(settings, monkeypatch):
    """Live trading on binanceusdm (keys in the environment), ccxt pointed at the fake, and a ghost trading the
    BTC/USDT perpetual."""
    from apps.ghosts.services import ghost_create
    from apps.market.models import Exchange, FeedStatus, Instrument
    from apps.trading.live_client import live_clients_clear
    from tests.fakes.binance_usdm import FakeBinanceUsdm

    with FakeBinanceUsdm(price=PRICE) as fake:
        settings.HFT_LIVE_TRADING = True
        settings.HFT_LIVE_CCXT_CONFIG = {"urls": {"api": fake.urls()}, "enableRateLimit": False}
        monkeypatch.setenv("HFT_BINANCEUSDM_API_KEY", API_KEY)
        monkeypatch.setenv("HFT_BINANCEUSDM_SECRET", API_SECRET)
        live_clients_clear()
        ex = Exchange.objects.create(code="binanceusdm", name="Binance USDⓈ-M")
        inst = Instrument.objects.create(exchange=ex, symbol="BTC/USDT:USDT", base="BTC", quote="USDT")
        FeedStatus.objects.create(instrument=inst, source="sim")
        ghost = ghost_create(name="fader-perp", kind="spike_fader", instrument=inst, enabled=True)
        yield fake, ghost
        live_clients_clear()


def new_signal(ghost, minute: int = 0, *, side: int = 1, entry: float = float(PRICE), stop_pct: float = 1.0,
               target_pct: float = 0.8):
    """A pending signal as the manager leaves it (through the real signal_record service)."""
    from apps.engine.types import Draft
    from apps.signals.services import signal_record

    draft = Draft(
        side=side, confidence=0.7, priority=2, entry=entry, stop=entry * (1 - side * stop_pct / 100),
        target=entry * (1 + side * target_pct / 100), size_mult=1.0, max_hold_s=3600.0, reason="test spike",
        bar_time=pd.Timestamp(T0 + timedelta(minutes=minute)),
    )
    signal, created = signal_record(ghost=ghost, bar_time=T0 + timedelta(minutes=minute), draft=draft)
    assert created
    return signal
