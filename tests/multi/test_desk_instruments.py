"""HFT_INSTRUMENTS adds instruments to the desk at start (issue 11): each with its feed and one ghost of every desk
kind; without it `make run`'s desk is the one BTC/USDT."""

import pytest

from apps.engine.registry import DESK_KINDS
from apps.ghosts.models import Ghost
from apps.market.models import FeedStatus, Instrument
from apps.runtime.services import desk_ensure

pytestmark = pytest.mark.django_db


def test_default_desk_is_one_instrument(settings) -> None:
    settings.HFT_INSTRUMENTS = []
    desk_ensure()
    assert list(Instrument.objects.values_list("symbol", flat=True)) == ["BTC/USDT"]


def test_env_adds_instruments_with_feeds_and_ghosts(settings) -> None:
    settings.HFT_FEED, settings.HFT_INSTRUMENTS = "sim", ["binance:ETH/USDT", "binanceusdm:BTC/USDT:USDT"]
    summary = desk_ensure()
    desk_ensure()  # every start: nothing doubled
    assert "binance:ETH/USDT feed=sim" in summary and "binanceusdm:BTC/USDT:USDT feed=sim" in summary
    feeds = {(f.instrument.exchange.code, f.instrument.symbol): (f.source, f.state)
             for f in FeedStatus.objects.select_related("instrument__exchange")}
    assert feeds == {("binance", "BTC/USDT"): ("sim", "starting"), ("binance", "ETH/USDT"): ("sim", "starting"),
                     ("binanceusdm", "BTC/USDT:USDT"): ("sim", "starting")}
    for inst in Instrument.objects.all():
        kinds = sorted(Ghost.objects.filter(instrument=inst, kind__in=DESK_KINDS).values_list("kind", flat=True))
        assert kinds == sorted(DESK_KINDS)
    perp = Instrument.objects.get(symbol="BTC/USDT:USDT")
    assert (perp.market_type, perp.settle) == ("swap", "USDT")  # the symbol's own shape
    assert Ghost.objects.filter(name="spike-fader-eth-usdt-binance").exists()


def test_a_stopped_extra_starts_again_and_a_replay_leaves_extras_running(settings) -> None:
    settings.HFT_INSTRUMENTS = ["binance:SOL/USDT"]
    desk_ensure()
    FeedStatus.objects.filter(instrument__symbol="SOL/USDT").update(state=FeedStatus.State.STOPPED)
    settings.HFT_FEED = "replay:some/file.zip@60"  # names no market: the desk's BTC/USDT replays it
    desk_ensure()
    sol = FeedStatus.objects.get(instrument__symbol="SOL/USDT")
    assert (sol.source, sol.state) == ("sim", "starting")


def test_a_malformed_entry_is_named(settings) -> None:
    settings.HFT_INSTRUMENTS = ["ETHUSDT"]
    with pytest.raises(ValueError, match="HFT_INSTRUMENTS entry 'ETHUSDT' is not exchange:BASE/QUOTE"):
        desk_ensure()
