"""Deleting an instrument (issue 11's leftover): refused with the reason while a position is open, its feed runs or
it traded live; otherwise the confirm page counts every row that goes (ghosts, signals, paper trades, P&L days, lab
runs, candles, ...), the POST needs the name typed and the counts' token, deletes exactly those rows and nothing of
another instrument, and audits the counts. Viewers get 403 on the page and the POST; a POST without the CSRF token
gets 403 too."""

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.test import Client

from apps.audit.models import AuditEvent
from apps.ghosts.models import Ghost
from apps.lab.models import BacktestRun
from apps.market.models import Candle, FeedStatus, Instrument
from apps.revenue.models import PnlDay
from apps.signals.models import Signal
from apps.trading.models import Fill, Order, Position
from apps.trading.selectors import equity
from tests.factories import make_candles, make_ghost, make_position, make_signal

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]
T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def url(inst) -> str:
    return f"/instruments/{inst.pk}/delete/"


@pytest.fixture
def eth(desk):
    """binance ETH/USDT beside the desk's BTC/USDT: a stopped feed, a ghost with a refused signal and one closed
    paper trade (+10 gross), a finished lab run, 30 candles. BTC/USDT has a closed trade of its own."""
    inst = Instrument.objects.create(exchange=desk["exchange"], symbol="ETH/USDT", base="ETH", quote="USDT")
    FeedStatus.objects.create(instrument=inst, source="sim", state=FeedStatus.State.STOPPED)
    ghost = make_ghost(name="fader-eth", instrument=inst)
    make_signal(ghost=ghost, bar_time=T0 - timedelta(hours=1), fate="blocked_risk", fate_detail="max open")
    make_position(ghost=ghost, opened_at=T0, entry="100", qty="1", exit="110")
    make_position(ghost=desk["ghost"], opened_at=T0, entry="100", qty="1", exit="105")
    BacktestRun.objects.create(instrument=inst, start=T0, end=T0 + timedelta(days=1), settings={}, status="done")
    make_candles(instrument=inst, start=T0, n=30)
    return inst


def test_the_page_counts_every_row_and_the_delete_takes_exactly_those(op_client, desk, eth):
    btc = desk["instrument"]
    def btc_rows() -> tuple[int, ...]:
        return (Position.objects.filter(instrument=btc).count(), Signal.objects.filter(instrument=btc).count(),
                Fill.objects.filter(order__instrument=btc).count(), PnlDay.objects.filter(instrument=btc).count())

    kept = btc_rows()
    eq_before = equity()
    page = op_client.get(url(eth))
    html = page.content.decode()
    assert page.status_code == 200 and 'id="instrument-delete-form"' in html
    counts = dict(page.context["plan"].counts)
    assert counts["ghost instances"] == 1 and counts["signals"] == 2  # the refused one and the trade's
    assert (counts["closed paper positions"], counts["orders"], counts["fills"], counts["P&L day rows"]) == (1, 2, 2, 1)
    assert (counts["lab runs"], counts["1m candles"], counts["feed status"]) == (1, 30, 1)
    total = page.context["plan"].total
    assert f"Delete binance:ETH/USDT and {total} rows" in html
    # the P&L that leaves the books is said: +10 gross minus the two fees of the factory (0.1 % each side)
    net = Decimal("10") - Decimal("0.1") - Decimal("0.11")
    assert page.context["plan"].realised_net == net and 'id="delete-pnl"' in html
    token = page.context["plan"].token

    r = op_client.post(url(eth), {"confirm": "ETH/USDT", "token": token})
    assert r.status_code == 400 and "type binance:ETH/USDT to confirm" in r.content.decode()
    make_candles(instrument=eth, start=T0 + timedelta(hours=1), n=1, seed=2)  # a row the operator has not seen
    r = op_client.post(url(eth), {"confirm": "binance:ETH/USDT", "token": token})
    assert r.status_code == 400 and "changed since the page was shown" in r.content.decode()
    assert Instrument.objects.filter(pk=eth.pk).exists() and not AuditEvent.objects.filter(action="instrument.deleted")

    token = op_client.get(url(eth)).context["plan"].token
    r = op_client.post(url(eth), {"confirm": "binance:ETH/USDT", "token": token, "reason": "tried it"})
    assert r.status_code == 302 and r["Location"] == "/instruments/"
    assert not Instrument.objects.filter(pk=eth.pk).exists()
    assert not Ghost.objects.filter(name="fader-eth").exists() and not BacktestRun.objects.exists()
    assert not Candle.objects.filter(instrument_id=eth.pk).exists()
    assert not Order.objects.filter(instrument_id=eth.pk).exists()
    assert btc_rows() == kept == (1, 1, 2, 1)
    assert equity() == eq_before - net  # the equity drops exactly the deleted trade's net P&L
    [a] = AuditEvent.objects.filter(action="instrument.deleted")
    assert a.object_id == str(eth.pk) and a.reason == "tried it" and a.actor.username == "olga"
    assert a.before["rows"]["1m candles"] == 31 and a.before["ghosts"] == ["fader-eth"]
    assert a.before["realised_net"] == str(net)
    assert "binance:ETH/USDT deleted with" in op_client.get("/instruments/").content.decode()


def test_an_open_position_a_running_feed_and_a_live_trade_are_refused_with_the_reason(op_client, desk):
    btc, ghost = desk["instrument"], desk["ghost"]  # the desk fixture's feed is starting
    make_position(ghost=ghost, opened_at=T0)  # open
    page = op_client.get(url(btc))
    html = page.content.decode()
    assert page.status_code == 200 and 'id="instrument-delete-form"' not in html
    assert "1 open position on binance:BTC/USDT: close it first" in html
    assert "its feed is starting (sim): stop it first" in html
    r = op_client.post(url(btc), {"confirm": "binance:BTC/USDT", "token": page.context["plan"].token})
    assert r.status_code == 400 and "close it first" in r.content.decode()

    Position.objects.update(mode="live", status="closed", closed_at=T0 + timedelta(minutes=5), exit_price=101)
    FeedStatus.objects.update(state=FeedStatus.State.STOPPED)
    plan = op_client.get(url(btc)).context["plan"]
    assert plan.refusals == ("1 live trade on binance:BTC/USDT: a live trade record is the account's (the "
                             "exchange's orders and fills), so an instrument that traded live is kept",)
    r = op_client.post(url(btc), {"confirm": "binance:BTC/USDT", "token": plan.token})
    assert r.status_code == 400 and Instrument.objects.filter(pk=btc.pk).exists()
    assert not AuditEvent.objects.filter(action="instrument.deleted")


def test_the_desk_default_says_it_comes_back_at_the_next_start(op_client, desk, settings):
    settings.HFT_FEED = "sim"
    FeedStatus.objects.update(state=FeedStatus.State.STOPPED)
    html = op_client.get(url(desk["instrument"])).content.decode()
    assert "the desk&#x27;s default instrument: `make run` adds it again" in html


def test_viewers_and_forged_posts_get_403_and_nothing_changes(viewer_client, operator, desk, eth):
    before = (Instrument.objects.count(), Candle.objects.count(), AuditEvent.objects.count())
    assert viewer_client.get(url(eth)).status_code == 403
    assert viewer_client.post(url(eth), {"confirm": "binance:ETH/USDT", "token": "x"}).status_code == 403
    assert 'instrument-delete"' not in viewer_client.get("/instruments/").content.decode()  # no Delete link
    forged = Client(enforce_csrf_checks=True)
    forged.force_login(operator)
    token = forged.get(url(eth)).context["plan"].token
    assert forged.post(url(eth), {"confirm": "binance:ETH/USDT", "token": token}).status_code == 403  # no CSRF
    assert before == (Instrument.objects.count(), Candle.objects.count(), AuditEvent.objects.count())
    assert Client().get(url(eth)).status_code == 302  # anonymous: to the login


def test_an_unknown_instrument_is_404(op_client, desk):
    assert op_client.get("/instruments/999999/delete/").status_code == 404
    assert op_client.post("/instruments/999999/delete/", {}).status_code == 404


def _race_the_delete(operator, make_instrument, other: Callable[[Instrument, int], str],
                     gone_error: Callable[[Exception, Instrument], bool], refused_words: str) -> list[tuple]:
    """Four rounds of the delete (thread 0) against `other` (thread 1, returns what it did) on a fresh instrument,
    threads with their own connections (on PostgreSQL they really overlap). Either the delete goes first and the
    other finds no instrument (`gone_error` says its exception is that refusal), or the other goes first and the
    delete is refused with `refused_words`; never a row of a deleted instrument, never a database error.
    Returns (instrument id, outcome) per round."""
    from apps.dashboard.instrument_delete import InstrumentDeleteError, instrument_delete, instrument_delete_plan
    from tests.test_postgres_locking import race

    rounds = []
    for k in range(4):
        inst = make_instrument(k)
        plan = instrument_delete_plan(instrument_id=inst.pk)

        def act(i: int, inst=inst, plan=plan, k=k) -> str:
            try:
                if i == 0:
                    instrument_delete(instrument_id=inst.pk, actor=operator, confirm=plan.name, token=plan.token)
                    return "deleted"
                return other(inst, k)
            except InstrumentDeleteError as exc:
                assert refused_words in str(exc), exc
                return "refused"
            except Exception as exc:
                if gone_error(exc, inst):
                    return "no instrument"
                raise

        got = tuple(race(act, n=2))
        assert got == ("deleted", "no instrument") or (got[0] == "refused" and got[1] in ("started", "created")), got
        assert Instrument.objects.filter(pk=inst.pk).exists() == (got[0] == "refused")
        rounds.append((inst.pk, got))
    print(f"\nrace outcomes over 4 rounds: {sorted({got for _, got in rounds})}")
    return rounds


@pytest.mark.django_db(transaction=True)
def test_a_feed_start_racing_the_delete_either_wins_cleanly(desk, operator, settings):
    """A start and a delete at the same moment: the delete first and the start finds no instrument, or the start
    first and the delete is refused because the feed runs; never a feed row of a deleted instrument."""
    from apps.market.feed_services import feed_start

    settings.HFT_MAX_FEEDS = 10  # the rounds' started feeds are not the cap's business (each test flushes Redis)

    def make(k: int) -> Instrument:
        inst = Instrument.objects.create(exchange=desk["exchange"], symbol=f"X{k}/USDT", base=f"X{k}", quote="USDT")
        FeedStatus.objects.create(instrument=inst, source="sim", state=FeedStatus.State.STOPPED)
        return inst

    def start(inst: Instrument, k: int) -> str:
        feed_start(instrument_id=inst.pk, source="sim", actor=operator)
        assert FeedStatus.objects.filter(instrument_id=inst.pk).exists()
        return "started"

    _race_the_delete(operator, make, start, lambda exc, inst: isinstance(exc, Instrument.DoesNotExist),
                     "stop it first")


@pytest.mark.django_db(transaction=True)
def test_a_ghost_created_while_the_instrument_is_deleted_never_points_at_nothing(desk, operator):
    """The Instruments page's Create ghost racing the delete: the ghost first (and the delete, whose counts no longer
    hold, is refused) or the instrument first (and the create says there is none)."""
    from apps.ghosts.services import GhostError, ghost_instance_create

    def make(k: int) -> Instrument:
        return Instrument.objects.create(exchange=desk["exchange"], symbol=f"Y{k}/USDT", base=f"Y{k}", quote="USDT")

    def create(inst: Instrument, k: int) -> str:
        ghost_instance_create(name=f"g-{k}", kind="spike_fader", instrument_id=inst.pk, params={}, actor=operator)
        return "created"

    rounds = _race_the_delete(
        operator, make, create, lambda exc, inst: isinstance(exc, GhostError) and str(exc) == "no such instrument",
        "changed since the page was shown")
    for pk, got in rounds:
        assert Ghost.objects.filter(instrument_id=pk).exists() == (got[1] == "created")


@pytest.mark.django_db(transaction=True)
def test_a_lab_run_created_while_the_instrument_is_deleted_never_points_at_nothing(desk, operator):
    """A lab run requested on the instrument being deleted: the run first (and the delete refused: a run is queued
    on it) or the delete first (and the run refused: no instrument); never a run of a deleted instrument."""
    from apps.lab.services import LabError, lab_run_create

    def make(k: int) -> Instrument:
        inst = Instrument.objects.create(exchange=desk["exchange"], symbol=f"Z{k}/USDT", base=f"Z{k}", quote="USDT")
        make_candles(instrument=inst, start=T0, n=30)
        return inst

    def create(inst: Instrument, k: int) -> str:
        lab_run_create(actor=operator, queue=False, settings={
            "instrument_id": inst.pk, "start": T0.isoformat(), "end": (T0 + timedelta(minutes=30)).isoformat(),
            "ghosts": [{"kind": "spike_fader", "params": {}}]})
        return "created"

    def gone(exc: Exception, inst: Instrument) -> bool:
        return isinstance(exc, LabError) and exc.errors == {"instrument_id": [f"no instrument {inst.pk}"]}

    rounds = _race_the_delete(operator, make, create, gone, "1 lab run queued or running on it")
    for pk, got in rounds:
        assert BacktestRun.objects.filter(instrument_id=pk).exists() == (got[1] == "created")


@pytest.mark.django_db(transaction=True)
def test_a_study_created_while_the_instrument_is_deleted_never_points_at_nothing(desk, operator):
    """A parameter study requested on the instrument being deleted: the study first (and the delete refused: a
    study is queued on it) or the delete first (and the study refused: no instrument); never a database error."""
    from apps.research.services import ResearchError, study_create
    from tests.research.conftest import study_request

    day0 = T0.replace(hour=0)  # folds are whole UTC days

    def make(k: int) -> Instrument:
        inst = Instrument.objects.create(exchange=desk["exchange"], symbol=f"S{k}/USDT", base=f"S{k}", quote="USDT")
        make_candles(instrument=inst, start=day0 - timedelta(days=1), n=6 * 1440)  # warm-up, 3-day train, 2-day test
        return inst

    def create(inst: Instrument, k: int) -> str:
        study_create(actor=operator, queue=False, settings=study_request(
            inst, start=day0.isoformat(), end=(day0 + timedelta(days=5)).isoformat()))
        return "created"

    from apps.research.models import Study

    def gone(exc: Exception, inst: Instrument) -> bool:
        return isinstance(exc, ResearchError) and exc.errors == {"instrument_id": [f"no instrument {inst.pk}"]}

    rounds = _race_the_delete(operator, make, create, gone, "1 parameter study queued or running on it")
    for pk, got in rounds:
        assert Study.objects.filter(instrument_id=pk).exists() == (got[1] == "created")
