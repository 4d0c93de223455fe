"""The desk creates one ghost per DESK kind; lab-only kinds (the textbook fader, issue 9) stay in the lab."""

import pytest

from apps.engine.registry import DESK_KINDS, GHOSTS
from apps.ghosts.models import Ghost
from apps.runtime.services import desk_ensure

pytestmark = pytest.mark.django_db


def test_desk_ensure_creates_the_desk_ghosts_and_not_the_lab_ones() -> None:
    assert "textbook_fader" in GHOSTS and "textbook_fader" not in DESK_KINDS
    desk_ensure()
    desk_ensure()  # re-run on every start: nothing added twice, still no lab ghost
    kinds = list(Ghost.objects.values_list("kind", flat=True))
    assert sorted(kinds) == sorted(DESK_KINDS)


COINM_DAY = "trades/binance_vision_cm_BTCUSD_PERP_aggTrades/BTCUSD_PERP-aggTrades-2026-05-08.zip"


def test_a_coin_m_replay_runs_on_its_own_market_not_on_btc_usdt(settings) -> None:
    """The README's COIN-M replay was labelled "BTC/USDT Binance" in USDT: the desk put it on its default
    instrument. A file that names its market now gets that market's instrument, quoted in USD."""
    from apps.market.models import FeedStatus
    from apps.market.replay_feed import replay_label

    desk_ensure()  # the desk as a first `make run` leaves it (BTC/USDT, sim)
    settings.HFT_FEED = f"replay:{COINM_DAY}@120"
    desk_ensure()
    fs = FeedStatus.objects.exclude(state=FeedStatus.State.STOPPED).select_related("instrument__exchange").get()
    inst = fs.instrument
    assert (inst.exchange.code, inst.exchange.name, inst.symbol, inst.base, inst.quote) == (
        "binancecoinm", "Binance COIN-M", "BTC/USD:BTC", "BTC", "USD")
    assert fs.source == settings.HFT_FEED
    assert replay_label(fs.source) == "REPLAY BTCUSD_PERP-aggTrades-2026-05-08.zip @120"
    assert sorted(Ghost.objects.filter(instrument=inst).values_list("kind", flat=True)) == sorted(DESK_KINDS)
    btc_usdt = FeedStatus.objects.get(instrument__symbol="BTC/USDT")
    assert btc_usdt.state == FeedStatus.State.STOPPED  # HFT_FEED names the desk's one feed
    settings.HFT_FEED = "sim"
    desk_ensure()  # and back: the replay's feed stops, BTC/USDT runs the sim again
    assert FeedStatus.objects.get(instrument=inst).state == FeedStatus.State.STOPPED
    assert FeedStatus.objects.get(instrument__symbol="BTC/USDT").state == FeedStatus.State.STARTING
