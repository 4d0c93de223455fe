"""ccxt markets -> Instrument rules (issue 11, many instruments). ccxt's own load_markets parses the exchanges'
market listings served from 127.0.0.1 (Binance spot exchangeInfo, Binance USDⓈ-M exchangeInfo, Kraken AssetPairs
with the values of ccxt's kraken fixture: tests/market/fake_exchange.py, tests/fakes/binance_usdm.py), the
result is cached under the run dir and read back with no server."""

from datetime import timedelta
from decimal import Decimal

import pytest

from apps.market import markets as mk
from apps.market.models import Instrument
from apps.market.services import instrument_ensure
from tests.fakes.binance_usdm import FakeBinanceUsdm
from tests.market.fake_exchange import FakeBinanceRest, FakeKrakenRest

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]  # passes on PostgreSQL too (make test runs it there)


@pytest.fixture(autouse=True)
def _offline(no_internet, settings, tmp_path):
    settings.HFT_MARKETS_DIR = tmp_path / "markets"


def fetch(code, server):
    return mk.markets_fetch(code, config={"urls": {"api": server.urls()}, "enableRateLimit": False})


def test_binance_spot_rules_from_exchange_info_and_the_cache_answers_offline():
    with FakeBinanceRest([]) as server:
        got = fetch("binance", server)
    assert got.symbols() == ["BTC/USDT"]
    facts = mk.market_facts(got.market("BTC/USDT"), precision_mode=got.precision_mode)
    assert facts["market_type"] == "spot" and not facts["inverse"] and facts["settle"] == ""
    assert facts["price_tick"] == Decimal("0.01") and facts["amount_step"] == Decimal("0.00001")
    assert facts["min_amount"] == Decimal("0.00001") and facts["contract_size"] == Decimal("1")
    # the server is gone: the cache file answers, without ccxt's raw `info`
    cached = mk.markets_cached("binance")
    assert cached is not None and cached.market("BTC/USDT")["precision"] == got.market("BTC/USDT")["precision"]
    assert "info" not in cached.market("BTC/USDT")
    assert mk.markets_get("binance").fetched_at == got.fetched_at


def test_binanceusdm_perp_is_a_linear_swap_with_min_notional():
    with FakeBinanceUsdm() as server:
        got = fetch("binanceusdm", server)
    facts = mk.market_facts(got.market("BTC/USDT:USDT"), precision_mode=got.precision_mode)
    assert (facts["market_type"], facts["inverse"], facts["settle"]) == ("swap", False, "USDT")
    assert facts["price_tick"] == Decimal("0.1") and facts["amount_step"] == Decimal("0.001")
    assert facts["min_amount"] == Decimal("0.001") and facts["min_notional"] == Decimal("100")
    assert facts["contract_size"] == Decimal("1")


def test_kraken_pair_rules_and_instrument_written():
    with FakeKrakenRest({}) as server:
        got = fetch("kraken", server)
    inst = instrument_ensure(exchange_code="kraken", symbol="BTC/USDT")
    assert inst.markets_checked_at is None and inst.price_tick is None
    changed = mk.instrument_apply_market(inst, got.market("BTC/USDT"), precision_mode=got.precision_mode)
    inst = Instrument.objects.get(pk=inst.pk)
    assert {"price_tick", "amount_step", "min_amount", "min_notional"} <= set(changed)
    assert inst.price_tick == Decimal("0.1") and inst.amount_step == Decimal("0.00000001")
    assert inst.min_amount == Decimal("0.0001") and inst.min_notional == Decimal("0.5")
    assert inst.markets_checked_at is not None


def test_unknown_symbol_says_so_with_near_names():
    with FakeBinanceRest([]) as server:
        got = fetch("binance", server)
    with pytest.raises(mk.MarketError, match=r"'BTC/USTD' is not a market of binance.*did you mean BTC/USDT"):
        got.market("BTC/USTD")


def test_unknown_exchange_and_unreachable_exchange_are_market_errors():
    with pytest.raises(mk.MarketError, match="not a ccxt exchange id"):
        mk.markets_fetch("nosuchexchange")
    with pytest.raises(mk.MarketError, match="not an exchange id"):
        mk.markets_cache_path("../etc")
    with FakeBinanceRest([]) as server:
        urls = server.urls()
    with pytest.raises(mk.MarketError, match="loading binance's markets failed"):  # server closed
        mk.markets_fetch("binance", config={"urls": {"api": urls}, "enableRateLimit": False, "timeout": 2000})


def test_market_facts_pure_rules():
    inverse = {"symbol": "BTC/USD:BTC", "type": "swap", "swap": True, "inverse": True, "linear": False,
               "base": "BTC", "quote": "USD", "settle": "BTC", "contractSize": 100,
               "precision": {"price": 0.1, "amount": 1}, "limits": {"amount": {"min": 1}, "cost": {}}}
    f = mk.market_facts(inverse)
    assert (f["market_type"], f["inverse"], f["settle"], f["contract_size"]) == ("swap", True, "BTC", Decimal("100"))
    assert f["amount_step"] == Decimal("1") and f["min_notional"] is None
    # DECIMAL_PLACES precision (2 -> 0.01); a step finer than the column holds is left unenforced, not zero
    places = {**inverse, "precision": {"price": 2, "amount": 20}}
    f = mk.market_facts(places, precision_mode=mk.DECIMAL_PLACES)
    assert f["price_tick"] == Decimal("0.01") and f["amount_step"] is None
    assert mk.market_facts({**inverse, "precision": {"price": 1e-13}})["price_tick"] is None
    with pytest.raises(mk.MarketError, match="option market"):
        mk.market_facts({**inverse, "symbol": "BTC/USD:BTC-250627-100000-C", "type": "option", "swap": False})
    assert mk.symbol_shape("BTC/USD:BTC") == {"base": "BTC", "quote": "USD", "market_type": "swap",
                                             "inverse": True, "settle": "BTC"}
    assert mk.symbol_shape("ETH/USDT:USDT-250627")["market_type"] == "future"
    assert mk.symbol_shape("ETH/USDT")["market_type"] == "spot"


def test_instrument_ensure_records_the_symbols_shape():
    inst = instrument_ensure(exchange_code="binancecoinm", symbol="BTC/USD:BTC")
    assert (inst.market_type, inst.inverse, inst.settle) == ("swap", True, "BTC")


def test_rules_refresh_after_a_load_updates_the_exchanges_instruments_and_audits():
    from apps.audit.models import AuditEvent
    from apps.market.services import instruments_rules_refresh

    btc = instrument_ensure(exchange_code="binance", symbol="BTC/USDT")
    gone = instrument_ensure(exchange_code="binance", symbol="LUNA/USDT")  # not listed any more
    other = instrument_ensure(exchange_code="kraken", symbol="BTC/USDT")
    with FakeBinanceRest([]) as server:
        got = fetch("binance", server)
    assert instruments_rules_refresh(exchange_code="binance", markets=got) == ["binance:BTC/USDT"]
    btc, gone, other = (Instrument.objects.get(pk=i.pk) for i in (btc, gone, other))
    assert btc.price_tick == Decimal("0.01") and btc.markets_checked_at is not None
    assert gone.price_tick is None and other.price_tick is None
    [a] = AuditEvent.objects.filter(action="instrument.rules_refreshed")
    assert a.object_id == str(btc.pk) and a.after["changed"]["amount_step"] == "0.000010000000"
    assert instruments_rules_refresh(exchange_code="binance") == []  # from the cache: nothing new to change


def test_markets_fetch_command_fails_with_the_exchanges_reason():
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match="not loaded: kraken"):
        call_command("markets_fetch", "kraken")  # no network in tests (no_internet)


def test_the_cache_is_parsed_once_per_file_version():
    with FakeBinanceRest([]) as server:
        first = fetch("binance", server)
    assert mk.markets_cached("binance") is mk.markets_cached("binance")  # parsed once
    later = mk.markets_store("binance", first.markets, precision_mode=first.precision_mode,
                             fetched_at=first.fetched_at + timedelta(days=1))
    assert mk.markets_cached("binance").fetched_at == later.fetched_at  # a new fetch is read again
