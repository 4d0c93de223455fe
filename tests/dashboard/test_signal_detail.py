""""Why did this ghost's signal not trade?": the signal page shows the draft, its fate in plain words with the
manager's own note, and the competition on the same instrument and bar. The fates are made by the engine's
real arbitration (apps.engine.manager.arbitrate with the real risk_check), so the page is tested against the
detail texts the manager really writes, not against strings invented here."""

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from django.urls import reverse
from django.utils.html import escape

from apps.dashboard.views_risk import FATE_WORDS, RISK_LIMIT_WORDS
from apps.engine.manager import Candidate, TrendGate, arbitrate
from apps.engine.risk import RiskLimits, RiskState, risk_check
from apps.engine.types import Draft
from apps.signals.models import Fate, Signal
from apps.signals.services import signal_set_fate
from tests.factories import make_ghost, make_instrument, make_signal

pytestmark = pytest.mark.django_db
BAR = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


def url(signal_id: int) -> str:
    return reverse("dashboard:signal", args=[signal_id])


def _draft(s: Signal) -> Draft:
    return Draft(side=1 if s.side == "long" else -1, confidence=float(s.confidence), priority=int(s.priority),
                 entry=float(s.entry), stop=float(s.stop), target=float(s.target), size_mult=1.0,
                 max_hold_s=float("nan"), reason=s.reason, bar_time=pd.Timestamp(s.bar_time))


def decide(signals: list[Signal], *, state: RiskState, trend: TrendGate | None = None) -> None:
    """What apps.runtime.manager.bar_decide does, minus the database reads it needs for bars and risk state."""
    candidates = [Candidate(ghost_id=s.ghost_id, ghost_name=s.ghost.name, draft=_draft(s)) for s in signals]
    decisions = arbitrate(
        candidates, now_s=BAR.timestamp() + 61, trend=trend or TrendGate(),
        risk=lambda c, mult: risk_check(ghost_id=c.ghost_id, entry=c.draft.entry, stop=c.draft.stop,
                                        size_mult=mult, state=state, limits=RiskLimits()))
    for s, d in zip(signals, decisions, strict=True):
        signal_set_fate(signal=s, fate=Fate(d.fate), detail=d.detail)


@pytest.fixture
def bar(desk):
    """Three ghosts on one BTC bar: the best is refused by risk (its ghost already holds a position), the
    second is taken, the third outscored. Plus noise that must not show as competition."""
    inst = desk["instrument"]
    best = desk["ghost"]  # fader-btc
    second = make_ghost(name="whale-btc", instrument=inst)
    third = make_ghost(name="cvd-btc", instrument=inst)
    a = make_signal(ghost=best, bar_time=BAR, confidence="0.9", fate=Fate.PENDING,
                    reason="1.4% spike in 12 min, faded")
    b = make_signal(ghost=second, bar_time=BAR, confidence="0.5", fate=Fate.PENDING, reason="whale burst")
    c = make_signal(ghost=third, bar_time=BAR, side="short", confidence="0.3", fate=Fate.PENDING,
                    reason="bearish divergence")
    state = RiskState(equity=10_000, day_start_equity=10_000, open_positions=1, open_by_ghost={best.pk: 1},
                      trades_today=1, kill_switch=False)
    decide([a, b, c], state=state)
    # Noise: the same ghost on the next bar, another instrument on the same bar.
    other_bar = make_signal(ghost=second, bar_time=BAR + timedelta(minutes=1), reason="next bar")
    eth = make_ghost(name="fader-eth", instrument=make_instrument(symbol="ETH/USDT"))
    other_inst = make_signal(ghost=eth, bar_time=BAR, reason="eth spike")
    return {"a": a, "b": b, "c": c, "noise": [other_bar, other_inst]}


def test_every_fate_has_plain_words():
    assert set(FATE_WORDS) == set(Fate.values)


def test_unknown_signal_is_404(viewer_client):
    assert viewer_client.get("/signals/999999/").status_code == 404


def test_anonymous_is_sent_to_login(client, bar):
    r = client.get(url(bar["a"].pk))
    assert r.status_code == 302 and r["Location"].startswith(reverse("login"))


def test_blocked_by_risk_says_which_limit_and_shows_the_competition(viewer_client, bar):
    a, b, c = (Signal.objects.get(pk=bar[k].pk) for k in "abc")
    assert (a.fate, b.fate, c.fate) == (Fate.BLOCKED_RISK, Fate.TAKEN, Fate.OUTSCORED)
    r = viewer_client.get(url(a.pk))
    assert r.status_code == 200
    html = r.content.decode()
    # The fate in plain words, with the manager's own note (the limit's name and numbers).
    assert a.fate_detail.startswith("max_open_per_ghost: ")
    assert RISK_LIMIT_WORDS["max_open_per_ghost"] in html
    assert escape(a.fate_detail) in html and ">blocked risk<" in html
    # The draft.
    for text in ("long", "90%", "100.0000", "99.0000", "100.8000", "1.4% spike in 12 min, faded",
                 "(1.00% away)", "(0.80% away)"):
        assert text in html, text
    # The competition: the two others on this bar, with their fates; none of the noise.
    comp = html[html.index('id="competition"'):]
    assert f'id="rival-{b.pk}"' in comp and f'id="rival-{c.pk}"' in comp
    assert ">taken<" in comp and ">outscored<" in comp and "whale-btc" in comp and "cvd-btc" in comp
    assert f'href="{url(b.pk)}"' in comp
    for n in bar["noise"]:
        assert f'id="rival-{n.pk}"' not in html


def test_outscored_names_the_winner(viewer_client, bar):
    c = Signal.objects.get(pk=bar["c"].pk)
    html = viewer_client.get(url(c.pk)).content.decode()
    assert "scored higher" in html and "of whale-btc" in c.fate_detail and escape(c.fate_detail) in html
    assert "bearish divergence" in html and f'id="rival-{bar["a"].pk}"' in html


def test_conflict_and_trend_block_in_plain_words(viewer_client, desk):
    inst = desk["instrument"]
    longer = make_signal(ghost=desk["ghost"], bar_time=BAR, confidence="1.0", fate=Fate.PENDING)
    shorter = make_signal(ghost=make_ghost(name="liq-btc", instrument=inst), bar_time=BAR, side="short",
                          confidence="1.0", fate=Fate.PENDING)
    Signal.objects.filter(pk__in=[longer.pk, shorter.pk]).update(priority=10)
    longer.refresh_from_db()
    shorter.refresh_from_db()
    calm = RiskState(equity=10_000, day_start_equity=10_000, open_positions=0, open_by_ghost={}, trades_today=0,
                     kill_switch=False)
    decide([longer, shorter], state=calm)
    longer.refresh_from_db()
    assert longer.fate == Fate.CONFLICT
    html = viewer_client.get(url(longer.pk)).content.decode()
    assert "disagreed on the side" in html and "disagrees with liq-btc" in html

    trend_bar = BAR + timedelta(minutes=5)
    blocked = make_signal(ghost=desk["ghost"], bar_time=trend_bar, side="long", fate=Fate.PENDING)
    decide([blocked], state=calm, trend=TrendGate(allow_long=False, label="strong down / trending down"))
    blocked.refresh_from_db()
    html = viewer_client.get(url(blocked.pk)).content.decode()
    assert blocked.fate == Fate.BLOCKED_TREND and "the trend filter refused this side" in html
    assert "strong down / trending down" in html
    assert 'id="no-rivals"' in html


def test_signal_stream_and_ghosts_page_link_to_the_detail(viewer_client, bar):
    overview = viewer_client.get("/").content.decode()
    for k in "abc":
        assert f'href="{url(bar[k].pk)}"' in overview
    ghosts = viewer_client.get("/ghosts/").content.decode()
    # Each ghost's last signal links to its page (whale-btc's last is the next-bar one).
    assert f'href="{url(bar["noise"][0].pk)}"' in ghosts and f'href="{url(bar["a"].pk)}"' in ghosts
