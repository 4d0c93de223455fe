"""Runtime services: the desk a fresh `make run` starts with (instrument, feed, ghosts), a replay's warm-up."""

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils.text import slugify

from apps.market.models import Instrument

log = logging.getLogger(__name__)


def replay_warmup(*, instrument: Instrument, first: datetime, minutes: int,
                  heartbeat: Callable[[], bool] | None = None) -> str:
    """Before a fresh replay's first minute: the ghosts' window reaches back into what is stored before it. When
    fewer than `minutes` bars are stored there and HFT_REPLAY_WARMUP_DOWNLOAD is on, they are downloaded from
    the exchange first (a HistoryDownload row, as the History page shows; the live feed does the same before
    it streams). Whatever is still missing is the file's own head: the ghosts and the trend gate warm up on the
    replay's first bars, as a backtest of the file would, and trade once warm. Returns which, for the log."""
    from apps.market.history_services import DownloadRequestError, history_download_create, history_download_run
    from apps.market.models import Candle

    since = first - timedelta(minutes=minutes)
    stored = Candle.objects.filter(instrument=instrument, timeframe="1m", open_time__gte=since, open_time__lt=first)
    have = stored.count()
    if have >= minutes:
        return f"stored history ({have} bars before {first:%Y-%m-%d %H:%M})"
    if not settings.HFT_REPLAY_WARMUP_DOWNLOAD or minutes <= 0:
        return f"the file's own head ({have} of {minutes} warm-up minutes stored before it)"
    try:
        row = history_download_create(exchange_code=instrument.exchange.code, symbol=instrument.symbol,
                                      timeframe="1m", since=since, until=first)
        row = history_download_run(download_id=row.pk,
                                   on_progress=(lambda _p: heartbeat()) if heartbeat is not None else None)
    except DownloadRequestError as exc:
        log.warning("replay warm-up download for %s refused: %s", instrument, exc)
        return f"the file's own head (download refused: {exc})"
    got = stored.count()
    how = "stored history" if got >= minutes else "stored history and the file's own head"
    return f"{how} ({got} of {minutes} bars before {first:%Y-%m-%d %H:%M}; download {row.state})"


@transaction.atomic
def desk_ensure() -> str:
    """Default desk for `make run`: BTC/USDT with a feed and one enabled ghost of every desk kind (paper).

    A replay of files that name their market runs on that market's instrument instead (a COIN-M aggTrades
    file: Binance COIN-M's BTC/USD:BTC, quoted in USD; apps.market.replay_feed.replay_market), and the feed the
    desk ran before on another instrument is stopped: HFT_FEED names the desk's one feed.

    Re-run on every start: a kind added to the engine since the last start gets its ghost; existing ghosts,
    their params and on/off state are left as the operators set them.
    """
    from apps.engine.registry import DESK_KINDS
    from apps.ghosts.models import Ghost
    from apps.ghosts.services import ghost_create, plugin_ghosts_ensure
    from apps.market.models import Exchange, FeedStatus, Instrument
    from apps.market.replay_feed import replay_market
    from apps.market.services import instrument_ensure

    market = replay_market(settings.HFT_FEED) if settings.HFT_FEED.startswith("replay:") else None
    if market is not None:
        inst = instrument_ensure(exchange_code=market[0], symbol=market[1])
        others = FeedStatus.objects.exclude(instrument=inst)
    else:
        ex, _ = Exchange.objects.get_or_create(code="binance", defaults={"name": "Binance"})
        inst, _ = Instrument.objects.get_or_create(
            exchange=ex, symbol="BTC/USDT", defaults={"base": "BTC", "quote": "USDT"}
        )
        others = FeedStatus.objects.exclude(instrument=inst).filter(source__startswith="replay:")
    others.exclude(state=FeedStatus.State.STOPPED).update(state=FeedStatus.State.STOPPED)
    fs, _ = FeedStatus.objects.get_or_create(instrument=inst, defaults={"source": settings.HFT_FEED})
    if fs.state == FeedStatus.State.STOPPED or fs.source != settings.HFT_FEED:
        fs.state, fs.source = FeedStatus.State.STARTING, settings.HFT_FEED
        fs.save(update_fields=["state", "source", "updated_at"])
    # binance BTC/USDT keeps its ghosts' names (trend-filter-btc); another market's names tell it apart
    suffix = inst.base.lower() if market is None else slugify(f"{inst.symbol} {inst.exchange.code}")[:40]
    present = set(Ghost.objects.filter(instrument=inst).values_list("kind", flat=True))
    for kind in DESK_KINDS:  # lab-only kinds (the textbook fader) are not desk ghosts
        name = f"{kind.replace('_', '-')}-{suffix}"
        if kind not in present and not Ghost.objects.filter(name=name).exists():
            ghost_create(name=name, kind=kind, instrument=inst, enabled=True)
    plugin_ghosts_ensure(instrument=inst, suffix=suffix)  # plug-in kinds (issue 11): created disabled
    summary = f"{inst} feed={settings.HFT_FEED}, ghosts={Ghost.objects.filter(instrument=inst).count()}"
    extra = desk_instruments_ensure(settings.HFT_INSTRUMENTS)
    return summary + "".join(f"; {x}" for x in extra)


def desk_instruments_ensure(specs: list[str]) -> list[str]:
    """HFT_INSTRUMENTS: each "exchange:symbol" gets its instrument (with ccxt's rules when that exchange's markets
    are cached: apps.market.markets), a feed started like the desk's (sim or live; sim beside a replay, whose file
    names one market) and one enabled ghost of every desk kind, named after the symbol and exchange. Called by
    desk_ensure after the desk's own feed, so a replay's "one feed" stop does not stop these. Raises ValueError
    naming the entry that is not exchange:BASE/QUOTE."""
    from apps.engine.registry import DESK_KINDS
    from apps.ghosts.models import Ghost
    from apps.ghosts.services import ghost_create, plugin_ghosts_ensure
    from apps.market.markets import MarketError, instrument_apply_market, markets_cached
    from apps.market.models import FeedStatus
    from apps.market.services import instrument_ensure

    source = settings.HFT_FEED if settings.HFT_FEED in ("sim", "live") else "sim"
    out = []
    for spec in specs:
        code, _, symbol = spec.partition(":")
        code, symbol = code.strip().lower(), symbol.strip()
        if not code or "/" not in symbol:
            raise ValueError(f"HFT_INSTRUMENTS entry {spec!r} is not exchange:BASE/QUOTE (e.g. binance:ETH/USDT)")
        inst = instrument_ensure(exchange_code=code, symbol=symbol)
        cached = markets_cached(code)
        if cached is not None and inst.markets_checked_at is None:
            try:
                instrument_apply_market(inst, cached.market(symbol), precision_mode=cached.precision_mode)
            except MarketError as exc:  # the feed still runs; the executors enforce no rule they do not know
                log.warning("HFT_INSTRUMENTS %s: %s", spec, exc)
        fs, _ = FeedStatus.objects.get_or_create(instrument=inst, defaults={"source": source})
        if fs.state == FeedStatus.State.STOPPED or fs.source != source:
            fs.state, fs.source = FeedStatus.State.STARTING, source
            fs.save(update_fields=["state", "source", "updated_at"])
        # spike-fader-eth-usdt-binance: the symbol's parts kept apart (slugify alone glues ETH/USDT into ethusdt)
        suffix = slugify(f"{inst.symbol.replace('/', ' ').replace(':', ' ')} {inst.exchange.code}")[:40]
        present = set(Ghost.objects.filter(instrument=inst).values_list("kind", flat=True))
        for kind in DESK_KINDS:
            name = f"{kind.replace('_', '-')}-{suffix}"
            if kind not in present and not Ghost.objects.filter(name=name).exists():
                ghost_create(name=name, kind=kind, instrument=inst, enabled=True)
        plugin_ghosts_ensure(instrument=inst, suffix=suffix)
        out.append(f"{inst} feed={source}, ghosts={Ghost.objects.filter(instrument=inst).count()}")
    return out
