"""The Instruments page (issue 11): operators add instruments from the cached ccxt markets, start and stop feeds,
create and delete ghost instances, each audited; viewers read it and every POST of theirs is a 403 that changes
nothing. Markets come from ccxt's own parsing of listings served on 127.0.0.1 (tests/market/fake_exchange.py)."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.core.cache import cache

from apps.audit.models import AuditEvent
from apps.ghosts.models import Ghost
from apps.market import markets as mk
from apps.market.models import FeedStatus, Instrument
from apps.market.tasks import _lock_key
from tests.datafiles import require
from tests.factories import make_position
from tests.market.fake_exchange import FakeBinanceRest, FakeKrakenRest

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]  # passes on PostgreSQL too (make test runs it there)
URL = "/instruments/"


@pytest.fixture(autouse=True)
def _markets(no_internet, settings, tmp_path):
    """binance (BTC/USDT) and kraken (BTC/USDT) markets in the cache, as the page's Load markets leaves them."""
    settings.HFT_MARKETS_DIR = tmp_path / "markets"
    for code, server in (("binance", FakeBinanceRest([])), ("kraken", FakeKrakenRest({}))):
        with server:
            mk.markets_fetch(code, config={"urls": {"api": server.urls()}, "enableRateLimit": False})


def audits(action):
    return list(AuditEvent.objects.filter(action=action).order_by("pk"))


def test_operator_adds_a_kraken_instrument_with_its_rules(op_client, desk):
    page = op_client.get(URL + "?exchange=kraken")
    assert page.status_code == 200 and b'<option value="BTC/USDT">' in page.content
    r = op_client.post(URL, {"exchange": "kraken", "symbol": "btc/usdt"})
    assert r.status_code == 302
    inst = Instrument.objects.get(exchange__code="kraken", symbol="BTC/USDT")
    assert (inst.price_tick, inst.min_amount, inst.min_notional) == (Decimal("0.1"), Decimal("0.0001"), Decimal("0.5"))
    assert inst.exchange.taker_fee == Decimal("0.0026")  # kraken's default tier from ccxt, not the 0.1 % default
    [a] = audits("instrument.added")
    assert a.object_id == str(inst.pk) and a.after["price_tick"] == "0.1000000000"
    page = op_client.get(URL).content.decode()
    assert "kraken:BTC/USDT" in page and "no feed" in page


def test_unknown_symbol_and_uncached_exchange_are_refused_with_the_reason(op_client, desk):
    r = op_client.post(URL, {"exchange": "kraken", "symbol": "BTC/USTD"})
    assert r.status_code == 400
    assert "is not a market of kraken" in r.content.decode() and "did you mean BTC/USDT" in r.content.decode()
    r = op_client.post(URL, {"exchange": "okx", "symbol": "BTC/USDT"})
    assert r.status_code == 400 and "okx&#x27;s markets are not loaded yet" in r.content.decode()
    assert Instrument.objects.count() == 1 and not audits("instrument.added")


def test_feed_start_and_stop_audited_and_the_runner_asked(op_client, desk, django_capture_on_commit_callbacks):
    inst = Instrument.objects.create(exchange=desk["exchange"], symbol="ETH/USDT", base="ETH", quote="USDT")
    url = f"/instruments/{inst.pk}/feed/"
    with django_capture_on_commit_callbacks() as sent:
        assert op_client.post(url, {"action": "start", "kind": "sim"}).status_code == 302
    fs = FeedStatus.objects.get(instrument=inst)
    assert (fs.source, fs.state) == ("sim", "starting") and len(sent) >= 1  # the run_feed send, after commit
    assert audits("feed.started")[0].after == {"source": "sim", "state": "starting"}
    # a running feed is not switched in place
    r = op_client.post(url, {"action": "start", "kind": "live"})
    assert r.status_code == 400 and "stop it first" in r.content.decode()
    cache.set(_lock_key(inst.pk), "runner-token", 15)
    with django_capture_on_commit_callbacks(execute=True):
        assert op_client.post(url, {"action": "stop"}).status_code == 302
    assert FeedStatus.objects.get(instrument=inst).state == "stopped"
    assert cache.get(_lock_key(inst.pk)) is None  # the runner reads its vanished lock as the stop request
    assert len(audits("feed.stopped")) == 1


def test_feeds_beyond_the_cap_are_refused_with_the_reason(op_client, desk, settings):
    """Each feed runner holds a worker process: the page starts no more than HFT_MAX_FEEDS at once."""
    settings.HFT_MAX_FEEDS = 2
    eth, sol = (Instrument.objects.create(exchange=desk["exchange"], symbol=f"{b}/USDT", base=b, quote="USDT")
                for b in ("ETH", "SOL"))
    assert op_client.post(f"/instruments/{eth.pk}/feed/", {"action": "start", "kind": "sim"}).status_code == 302
    r = op_client.post(f"/instruments/{sol.pk}/feed/", {"action": "start", "kind": "sim"})
    assert r.status_code == 400 and "2 feeds run already" in r.content.decode()
    assert not FeedStatus.objects.filter(instrument=sol).exists()
    assert op_client.post(f"/instruments/{eth.pk}/feed/", {"action": "stop"}).status_code == 302
    assert op_client.post(f"/instruments/{sol.pk}/feed/", {"action": "start", "kind": "sim"}).status_code == 302


def test_replay_source_must_be_a_relative_data_file(op_client, desk):
    inst = desk["instrument"]
    FeedStatus.objects.filter(instrument=inst).update(state="stopped")
    url = f"/instruments/{inst.pk}/feed/"
    for name, why in (("/etc/passwd", "relative to the market-data folder"),
                      ("../../etc/passwd", "relative to the market-data folder"),
                      ("klines/nope.zip", "replay file not found"), ("", "name a file")):
        r = op_client.post(url, {"action": "start", "kind": "replay", "replay_file": name})
        assert r.status_code == 400 and why in r.content.decode(), name
    assert FeedStatus.objects.get(instrument=inst).state == "stopped" and not audits("feed.started")
    good = "klines/binance_vision_spot_BTCUSDT_1m/BTCUSDT-1m-2020-01-01.zip"
    require(good)  # the shared data kit, where replay paths resolve (skips with the reason without it)
    good += "@600"
    assert op_client.post(url, {"action": "start", "kind": "replay", "replay_file": good}).status_code == 302
    assert FeedStatus.objects.get(instrument=inst).source == f"replay:{good}"


def test_ghost_instances_created_validated_and_deleted(op_client, desk):
    inst = desk["instrument"]
    r = op_client.post("/instruments/ghosts/", {"name": "fader-2", "kind": "spike_fader", "instrument": inst.pk,
                                               "params": '{"spike_threshold_pct": 1.5}'})
    assert r.status_code == 302
    g = Ghost.objects.get(name="fader-2")
    assert not g.enabled and g.params["spike_threshold_pct"] == 1.5 and audits("ghost.created")
    for body, why in (({"params": '{"spike_threshold_pct": -1}'}, "parameters refused by spike_fader"),
                      ({"params": '{"nope": 1}'}, "parameters refused by spike_fader"),
                      ({"params": "[1]"}, "must be a JSON object"), ({"params": "{"}, "not JSON"),
                      ({"kind": "no_such"}, "is not a desk ghost"), ({"name": "Bad Name!"}, "lower-case letters"),
                      ({"name": "fader-2"}, "exists already"), ({"instrument": 99999}, "no such instrument")):
        post = {"name": "fader-3", "kind": "spike_fader", "instrument": inst.pk, "params": "{}", **body}
        r = op_client.post("/instruments/ghosts/", post)
        assert r.status_code == 400 and why in r.content.decode(), (body, r.content.decode()[-2000:])
    assert not Ghost.objects.filter(name="fader-3").exists()

    assert op_client.post(f"/instruments/ghosts/{g.pk}/delete/", {"reason": "typo"}).status_code == 302
    assert not Ghost.objects.filter(pk=g.pk).exists()
    [d] = audits("ghost.deleted")
    assert d.before["name"] == "fader-2" and d.reason == "typo"

    traded = desk["ghost"]  # enabled, and with a trade
    r = op_client.post(f"/instruments/ghosts/{traded.pk}/delete/", {})
    assert r.status_code == 400 and "disable it first" in r.content.decode()
    Ghost.objects.filter(pk=traded.pk).update(enabled=False, status="disabled")
    make_position(ghost=traded, opened_at=datetime(2025, 1, 1, tzinfo=UTC))
    r = op_client.post(f"/instruments/ghosts/{traded.pk}/delete/", {})
    assert r.status_code == 400 and "has 1 trade" in r.content.decode()
    assert Ghost.objects.filter(pk=traded.pk).exists() and len(audits("ghost.deleted")) == 1


def test_viewer_reads_and_every_post_is_refused(viewer_client, desk, django_capture_on_commit_callbacks):
    page = viewer_client.get(URL).content.decode()
    assert "binance:BTC/USDT" in page and "Read-only" in page
    assert 'id="instrument-add"' not in page and "feed-form" not in page and 'id="ghost-add"' not in page
    inst, ghost = desk["instrument"], desk["ghost"]
    Ghost.objects.filter(pk=ghost.pk).update(enabled=False, status="disabled")
    before = (Instrument.objects.count(), Ghost.objects.count(), AuditEvent.objects.count(),
              list(FeedStatus.objects.values_list("state", "source")))
    with django_capture_on_commit_callbacks() as sent:
        for url, body in ((URL, {"exchange": "kraken", "symbol": "BTC/USDT"}),
                          ("/instruments/markets/", {"exchange": "kraken"}),
                          (f"/instruments/{inst.pk}/feed/", {"action": "stop"}),
                          ("/instruments/ghosts/", {"name": "x", "kind": "spike_fader", "instrument": inst.pk}),
                          (f"/instruments/ghosts/{ghost.pk}/delete/", {})):
            assert viewer_client.post(url, body).status_code == 403, url
    assert not sent
    assert before == (Instrument.objects.count(), Ghost.objects.count(), AuditEvent.objects.count(),
                      list(FeedStatus.objects.values_list("state", "source")))


def test_markets_load_is_queued_for_a_worker(op_client, desk, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as sent:
        assert op_client.post("/instruments/markets/", {"exchange": "okx"}).status_code == 302
    assert len(sent) == 1 and mk.markets_fetch_state("okx")["state"] == "queued"
    [a] = audits("markets.load_requested")
    assert (a.object_id, a.object_type, a.after) == ("okx", "ExchangeMarkets", {"exchange": "okx"})
    assert a.actor.username == "olga"
    assert "queued" in op_client.get(URL + "?exchange=okx").content.decode()
    assert op_client.post("/instruments/markets/", {"exchange": "nope"}).status_code == 400


def test_markets_fetch_task_records_the_outcome():
    """The worker's load, with no network (no_internet): the exchange's failure is kept for the page."""
    from apps.market.markets_tasks import markets_fetch_task

    assert markets_fetch_task("binanceus").startswith("failed")
    state = mk.markets_fetch_state("binanceus")
    assert state["state"] == "failed" and "loading binanceus's markets failed" in state["error"]


def test_page_queries_do_not_grow_with_instruments_and_ghosts(op_client, desk):
    """Instruments with feeds in two queries, ghosts with an EXISTS on the ledger in one: ten times the rows, the
    same number of queries."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from apps.ghosts.services import ghost_create

    def queries() -> int:
        op_client.get(URL)  # warm: session, caches
        with CaptureQueriesContext(connection) as ctx:
            assert op_client.get(URL).status_code == 200
        return len(ctx.captured_queries)

    small = queries()
    for n in range(10):
        inst = Instrument.objects.create(exchange=desk["exchange"], symbol=f"C{n}/USDT", base=f"C{n}", quote="USDT")
        FeedStatus.objects.create(instrument=inst, source="sim", state="stopped")
        ghost_create(name=f"g-{n}", kind="spike_fader", instrument=inst)
    assert queries() == small


def test_a_plugin_kind_is_offered_and_created_like_a_builtin(op_client, desk):
    """Plug-in ghosts (issue 11, part G) register into the engine's registry: the page offers their kind and the
    instance is validated by the plug-in's own config."""
    import dataclasses

    from apps.engine.registry import GHOSTS, register, unregister

    register(dataclasses.replace(GHOSTS["spike_fader"], kind="fader_plugin", title="Fader plug-in"))
    try:
        assert b'<option value="fader_plugin"' in op_client.get(URL).content
        r = op_client.post("/instruments/ghosts/", {"name": "plug-1", "kind": "fader_plugin",
                                                   "instrument": desk["instrument"].pk, "params": ""})
        assert r.status_code == 302
        assert Ghost.objects.get(name="plug-1").kind == "fader_plugin"
        r = op_client.post("/instruments/ghosts/", {"name": "plug-2", "kind": "fader_plugin",
                                                   "instrument": desk["instrument"].pk,
                                                   "params": '{"spike_threshold_pct": 0}'})
        assert r.status_code == 400 and "parameters refused by fader_plugin" in r.content.decode()
    finally:
        unregister("fader_plugin")
