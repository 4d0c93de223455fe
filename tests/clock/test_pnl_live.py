"""The header's P&L marked to market between fills, and "today" turning with the data day, without a reload (QA under
HFT_SIM_SPEED=120: the header stayed at a price 200 away with a position open; at data 12-06 00:19 it still showed
12-05's Today). The feed runner's once-a-second status step pushes the P&L snapshot (the payload a fill pushes,
`pnl.updated`) when the instrument's open positions' marks moved or the feed's data day changed, at most once a
second per feed (apps.runtime.pipeline.FeedPipeline._push_pnl). Real pipeline, real database, real channel layer; the
pipeline's wall clock is the one a runner hands it, here stepped by the test."""

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from channels.layers import get_channel_layer
from django.conf import settings

from apps.market.bar_builder import Trade
from apps.runtime.pipeline import FeedPipeline
from apps.trading.events import PORTFOLIO_GROUP
from apps.trading.execution import position_exit
from apps.trading.models import ExitReason
from tests.conftest import desk_events
from tests.factories import FEE_RATE, make_position

pytestmark = pytest.mark.django_db
DATA = datetime(2026, 3, 2, 23, 58, 0, tzinfo=UTC)  # the data's clock, months from the wall's


def _ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


class Wall:
    """The monotonic seconds a runner hands its pipeline, moved by the test."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Portfolio:
    """A socket's view of the portfolio group: a channel in it, read on one event loop of its own (channels-redis
    binds a channel's receive buffer to the loop that first reads it)."""

    def __init__(self) -> None:
        self.layer = get_channel_layer()
        self.loop = asyncio.new_event_loop()
        self.channel = self.loop.run_until_complete(self.layer.new_channel())
        self.loop.run_until_complete(self.layer.group_add(PORTFOLIO_GROUP, self.channel))

    def pnl_events(self, timeout: float = 0.5) -> list[dict]:
        """The pnl.updated events sent since the last call (all that arrive until `timeout` s of quiet)."""
        async def take() -> list[dict]:
            out = []
            while True:
                try:
                    out += desk_events(await asyncio.wait_for(self.layer.receive(self.channel), timeout))
                except TimeoutError:
                    return [e for e in out if e["type"] == "pnl.updated"]
        return self.loop.run_until_complete(take())

    def close(self) -> None:
        self.loop.run_until_complete(self.layer.group_discard(PORTFOLIO_GROUP, self.channel))
        self.loop.close()


@pytest.fixture
def portfolio():
    p = Portfolio()
    yield p
    p.close()


def _step(feed: FeedPipeline, wall: Wall, at: datetime, price: float, n: int, *, seconds: float = 1.0) -> None:
    """One runner loop: a trade in, the stop cache refreshed, the publish step (status + P&L), `seconds` later."""
    wall.t += seconds
    feed.refresh_positions()
    feed.consume([Trade(ts_ms=_ms(at), price=price, amount=0.01, side="sell", id=str(n))], now_ms=_ms(at))
    feed.publish()


def test_a_moved_price_pushes_the_marked_pnl_at_most_once_a_second(desk, portfolio, django_capture_on_commit_callbacks):
    inst = desk["instrument"]
    position = make_position(ghost=desk["ghost"], opened_at=DATA - timedelta(hours=1), entry="97331", qty="0.5")
    fee = Decimal("97331") * Decimal("0.5") * FEE_RATE
    wall = Wall()
    feed = FeedPipeline(inst, on_bar=None, has_liquidations=False, wall_clock=wall)

    _step(feed, wall, DATA, 97331.0, 1)
    first = portfolio.pnl_events()
    assert len(first) == 1 and first[0]["open_positions"] == 1 and first[0]["day"] == "2026-03-02"
    assert first[0]["unrealised"] == pytest.approx(float(-fee), abs=1e-6)

    # 97,331 -> 97,130: the marks move, the header hears it within a second, with no fill in between.
    _step(feed, wall, DATA + timedelta(seconds=20), 97130.0, 2)
    [moved] = portfolio.pnl_events()
    marked = (Decimal("97130") - Decimal("97331")) * Decimal("0.5") - fee
    assert moved["unrealised"] == pytest.approx(float(marked), abs=1e-6)
    assert moved["today_pnl"] == pytest.approx(float(marked), abs=1e-6) and moved["realised_today"] == 0
    assert moved["equity"] == pytest.approx(float(settings.HFT_START_CAPITAL + marked), abs=1e-6)
    assert moved["ghosts"][str(desk["ghost"].pk)] == pytest.approx(float(marked), abs=1e-6)

    # Bounded: steps a quarter-second apart push nothing until a second has passed; an unmoved price pushes nothing.
    for k in range(3):
        _step(feed, wall, DATA + timedelta(seconds=21 + k), 97100.0 - k, 3 + k, seconds=0.25)
    assert portfolio.pnl_events() == []
    feed.publish(force=True)  # a forced status step (a state change) does not lift the bound either
    assert portfolio.pnl_events() == []
    wall.t += 0.25
    feed.publish()
    [late] = portfolio.pnl_events()
    assert late["unrealised"] == pytest.approx(float((Decimal("97098") - Decimal("97331")) * Decimal("0.5") - fee),
                                               abs=1e-6)
    _step(feed, wall, DATA + timedelta(seconds=30), 97098.0, 9)
    assert portfolio.pnl_events() == []

    # Closed: the fill pushes its own snapshot; then no open position on the instrument, nothing more from the feed.
    with django_capture_on_commit_callbacks(execute=True):
        position_exit(position_id=position.pk, price=97050.0, at=DATA + timedelta(seconds=35),
                      reason=ExitReason.MANUAL)
    [on_fill] = portfolio.pnl_events()
    assert on_fill["open_positions"] == 0 and on_fill["unrealised"] == 0
    _step(feed, wall, DATA + timedelta(seconds=40), 97000.0, 10)
    assert portfolio.pnl_events() == []


def test_crossing_the_data_day_pushes_the_new_day_with_today_reset(desk, portfolio):
    inst = desk["instrument"]
    # A close at 23:50 data time: today's P&L while the data day is 2 March, not on the 3rd.
    make_position(ghost=desk["ghost"], opened_at=DATA - timedelta(minutes=30), entry="100", qty="2", exit="101",
                  closed_at=DATA - timedelta(minutes=8))
    net = (Decimal("101") - Decimal("100")) * 2 - (Decimal("100") + Decimal("101")) * 2 * FEE_RATE
    wall = Wall()
    feed = FeedPipeline(inst, on_bar=None, has_liquidations=False, wall_clock=wall)

    _step(feed, wall, DATA, 100.5, 1)  # the runner's first step says which day it is
    [before] = portfolio.pnl_events()
    assert before["day"] == "2026-03-02" and before["open_positions"] == 0
    assert before["today_pnl"] == pytest.approx(float(net), abs=1e-6) == before["realised_today"]
    _step(feed, wall, DATA + timedelta(minutes=1), 100.6, 2)  # no position, same day: nothing to say
    assert portfolio.pnl_events() == []

    _step(feed, wall, DATA + timedelta(minutes=2, seconds=30), 100.7, 3)  # data 03-03 00:00:30
    [after] = portfolio.pnl_events()
    assert after["day"] == "2026-03-03"
    assert after["today_pnl"] == 0 and after["realised_today"] == 0 and after["unrealised"] == 0
    assert after["equity"] == pytest.approx(before["equity"], abs=1e-9)  # the close still counts in equity
    _step(feed, wall, DATA + timedelta(minutes=3), 100.8, 4)
    assert portfolio.pnl_events() == []
