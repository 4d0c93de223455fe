"""The ghosts page's performance figures (formula tooltips, samples, "n/a" with why) and the per-ghost
auto-disable rules editor (operators only, engine validation, reason, audit), through the test client.

Expected figures are worked out here from the ledger rows (Position.net_pnl) with the statistics module,
not with the engine functions the page uses."""

import asyncio
import json
import math
import re
import statistics
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.test import Client

from apps.audit.models import AuditEvent
from apps.engine.performance import AutoDisableRules, Performance
from apps.ghosts.models import Ghost
from apps.revenue.selectors import ghost_performance, performance_by_ghost
from apps.revenue.services import ghost_review, revenue_target_set
from tests.factories import make_ghost, make_position

pytestmark = pytest.mark.django_db
D0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
RULES = {"min_trades": "2", "win_rate_floor": "0.9", "profit_factor_floor": "1.5", "max_drawdown": "0.5",
         "loss_target_multiple": "0"}


def drain(layer, channel: str, timeout: float = 1.0) -> list[dict]:
    """Every event waiting on the channel (one event loop for all reads: the layer binds its queue to it)."""

    async def take() -> list[dict]:
        out = []
        while True:
            try:
                msg = await asyncio.wait_for(layer.receive(channel), timeout)
                # apps.common.realtime.desk_message: one event's JSON text, or a transaction's batch of them.
                out += [json.loads(t) for t in (msg["texts"] if msg["type"] == "desk.batch" else [msg["text"]])]
            except TimeoutError:
                return out
    return async_to_sync(take)()


def rules_url(ghost_id: int) -> str:
    return f"/ghosts/{ghost_id}/auto-disable/"


def card(html: str, ghost_id: int) -> str:
    start = html.index(f'id="ghost-{ghost_id}"')
    return html[start: html.index("</article>", start)]


def figure(html: str, key: str) -> str:
    m = re.search(rf'<div class="perf-{key}">(.*?)</div>', html, re.S)
    assert m, key
    return m.group(1)


def same(a: Performance, b: Performance) -> bool:
    def eq(x, y):
        return (isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y)) or x == y
    return all(eq(getattr(a, f), getattr(b, f)) for f in a.__dataclass_fields__)


@pytest.fixture
def traded(desk):
    """fader-btc: three trades closed on three days (win, loss, win); idle-btc: no trades; target on fader."""
    g = desk["ghost"]
    idle = make_ghost(name="idle-btc", instrument=desk["instrument"])
    spec = [("100", "103", 0), ("100", "99", 1), ("100", "102", 2)]  # entry, exit, day
    positions = [make_position(ghost=g, opened_at=D0 + timedelta(days=d), entry=e, exit=x, qty="1",
                               closed_at=D0 + timedelta(days=d, hours=1)) for e, x, d in spec]
    revenue_target_set(ghost_id=g.pk, amount="50", period="month", actor=None)
    return {"ghost": g, "idle": idle, "positions": positions}


def test_batched_performance_equals_the_selector_for_every_ghost(traded, desk):
    one = make_ghost(name="one-trade", instrument=desk["instrument"])
    make_position(ghost=one, opened_at=D0, entry="100", exit="100.5", closed_at=D0 + timedelta(minutes=3))
    ids = list(Ghost.objects.values_list("pk", flat=True))
    batch = performance_by_ghost(ids)
    for gid in ids:
        assert same(batch[gid], ghost_performance(gid)), gid


def test_figures_with_formulas_samples_and_hand_worked_values(viewer_client, traded):
    g = traded["ghost"]
    nets = [float(p.net_pnl) for p in traded["positions"]]
    html = card(viewer_client.get("/ghosts/").content.decode(), g.pk)

    wins = [x for x in nets if x > 0]
    losses = [x for x in nets if x < 0]
    win = figure(html, "win_rate")
    assert f">{len(wins) / len(nets) * 100:.1f}%" in win and "2 of 3 closed trades" in win
    assert 'title="win rate = winning trades ÷ closed trades' in win

    pf = figure(html, "profit_factor")
    assert f">{sum(wins) / -sum(losses):.2f}" in pf and "gross profit ÷ gross loss" in pf

    # Daily equity: capital, then one close per day; returns day over day, the first from the capital.
    cap = float(settings.HFT_START_CAPITAL)
    levels = [cap + sum(nets[: i + 1]) for i in range(3)]
    rets = [levels[0] / cap - 1] + [levels[i] / levels[i - 1] - 1 for i in (1, 2)]
    sharpe = statistics.mean(rets) / statistics.stdev(rets) * math.sqrt(365)
    sh = figure(html, "sharpe")
    assert f">{sharpe:.2f}" in sh and "3 daily periods" in sh and "std(r, ddof=1) × √365" in sh

    downside = math.sqrt(statistics.mean([min(r, 0) ** 2 for r in rets]))
    so = figure(html, "sortino")
    assert f">{statistics.mean(rets) / downside * math.sqrt(365):.2f}" in so and "downside deviation" in so

    peak = max(cap, levels[0])
    dd = max((peak - lv) / peak for lv in levels)
    assert f">{dd * 100:.2f}%" in figure(html, "max_drawdown")
    assert "target progress = P&amp;L in the target" in figure(html, "target_progress")
    assert "score (0..1) = 0.25 × win rate" in figure(html, "score")
    assert "(neutral: fewer than 5 trades)" in figure(html, "score")  # 3 trades < the manager's 5


def test_undefined_figures_say_na_and_why(viewer_client, traded):
    html = card(viewer_client.get("/ghosts/").content.decode(), traded["idle"].pk)
    for key in ("win_rate", "profit_factor", "max_drawdown"):
        assert ">n/a<" in figure(html, key) and "n/a: no closed trades yet" in figure(html, key), key
    for key in ("sharpe", "sortino"):
        assert ">n/a<" in figure(html, key) and "n/a: fewer than 2 daily periods (0)" in figure(html, key), key
    assert "no target set" in figure(html, "target_progress")
    assert not re.search(r"\bnan\b|\binf\b", html, re.I), "an undefined figure leaked as NaN/inf"


# --- auto-disable rules ------------------------------------------------------------------------------------


def test_operator_edits_rules_with_reason_and_audit(op_client, operator, traded):
    g = traded["ghost"]
    page = card(op_client.get("/ghosts/").content.decode(), g.pk)
    assert f'action="{rules_url(g.pk)}"' in page and 'name="win_rate_floor"' in page and 'value="0.3"' in page
    r = op_client.post(rules_url(g.pk), {**RULES, "reason": "strict while we watch it"})
    assert r.status_code == 302 and r.url == f"/ghosts/#ghost-{g.pk}"
    g.refresh_from_db()
    assert AutoDisableRules.from_params(g.auto_disable) == AutoDisableRules(
        min_trades=2, win_rate_floor=0.9, profit_factor_floor=1.5, max_drawdown=0.5, loss_target_multiple=0.0)
    ev = AuditEvent.objects.get(action="ghost.auto_disable_changed", object_id=str(g.pk))
    assert ev.actor == operator and ev.reason == "strict while we watch it"
    assert ev.before["win_rate_floor"] == 0.3 and ev.after["win_rate_floor"] == 0.9
    assert 'value="0.9"' in card(op_client.get("/ghosts/").content.decode(), g.pk)


def test_edited_rules_are_the_ones_the_review_applies(op_client, traded, django_capture_on_commit_callbacks):
    g = traded["ghost"]
    assert ghost_review(ghost_id=g.pk) == []  # defaults: 3 trades < 10, nothing judged
    assert op_client.post(rules_url(g.pk), {**RULES, "reason": "strict"}).status_code == 302
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)("ghosts", channel)
    with django_capture_on_commit_callbacks(execute=True):
        reasons = ghost_review(ghost_id=g.pk)
    assert any("win rate 66.7% over 3 trades < floor 90%" in r for r in reasons), reasons
    g.refresh_from_db()
    assert not g.enabled and g.status_reason.startswith("auto-disabled: win rate")
    alerts = [e for e in drain(layer, channel) if e["type"] == "alert"]
    assert len(alerts) == 1, alerts
    alert = alerts[0]
    assert alert["level"] == "error" and alert["ghost_id"] == g.pk and "auto-disabled" in alert["message"]
    # Re-enabling needs a reason, and is audited.
    r = op_client.post(f"/ghosts/{g.pk}/toggle/", {"enabled": "1", "reason": ""}, HTTP_ACCEPT="application/json")
    assert r.status_code == 400 and not Ghost.objects.get(pk=g.pk).enabled
    r = op_client.post(f"/ghosts/{g.pk}/toggle/", {"enabled": "1", "reason": "reviewed the trades"},
                       HTTP_ACCEPT="application/json")
    assert r.status_code == 200 and Ghost.objects.get(pk=g.pk).enabled
    assert AuditEvent.objects.filter(action="ghost.enabled", reason="reviewed the trades").exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"win_rate_floor": "1.5"}, "auto_disable.win_rate_floor must be &gt;= 0 and &lt;= 1 (fraction), got 1.5"),
        ({"max_drawdown": "0"}, "auto_disable.max_drawdown must be &gt; 0"),
        ({"min_trades": "0"}, "auto_disable.min_trades must be &gt;= 1"),
        ({"min_trades": "ten"}, "Min trades: &#x27;ten&#x27; is not a whole number (closed trades)"),
        ({"profit_factor_floor": "inf"}, "Profit-factor floor: must be a finite number"),
        ({"reason": ""}, "a reason is required"),
    ],
)
def test_bad_rules_say_what_is_wrong_and_save_nothing(op_client, traded, change, message):
    g = traded["ghost"]
    r = op_client.post(rules_url(g.pk), {**RULES, "reason": "try", **change})
    assert r.status_code == 400
    html = card(r.content.decode(), g.pk)
    assert "Nothing was saved" in html and message in html
    assert Ghost.objects.get(pk=g.pk).auto_disable == {}
    assert not AuditEvent.objects.filter(action="ghost.auto_disable_changed").exists()
    for name, typed in change.items():
        if name != "reason":
            assert f'name="{name}" id="rule-{g.pk}-{name}" value="{typed}"' in html  # typed text kept


def test_viewer_sees_rules_read_only_and_cannot_post(viewer_client, traded):
    g = traded["ghost"]
    page = card(viewer_client.get("/ghosts/").content.decode(), g.pk)
    assert "Auto-disable rules" in page and 'name="win_rate_floor"' not in page and ">0.3<" in page
    assert viewer_client.post(rules_url(g.pk), {**RULES, "reason": "viewer"}).status_code == 403
    assert Ghost.objects.get(pk=g.pk).auto_disable == {} and not AuditEvent.objects.filter(
        action="ghost.auto_disable_changed").exists()


def test_anonymous_csrf_and_unknown_ghost(client, operator, op_client, traded):
    g = traded["ghost"]
    r = client.post(rules_url(g.pk), {**RULES, "reason": "anon"})
    assert r.status_code == 302 and "/login" in r["Location"]
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(operator)
    assert strict.post(rules_url(g.pk), {**RULES, "reason": "no token"}).status_code == 403
    assert Ghost.objects.get(pk=g.pk).auto_disable == {}
    assert op_client.post(rules_url(987654), {**RULES, "reason": "x"}).status_code == 404


def test_service_refuses_non_objects_and_keeps_unchanged_rules_unaudited(operator, traded):
    from apps.ghosts.services import GhostError, ghost_update_auto_disable

    g = traded["ghost"]
    with pytest.raises(GhostError, match="JSON object"):
        ghost_update_auto_disable(ghost_id=g.pk, params=[1, 2], actor=operator, reason="x")
    with pytest.raises(GhostError, match="unknown auto_disable parameter"):
        ghost_update_auto_disable(ghost_id=g.pk, params={"win_rate": 0.5}, actor=operator, reason="x")
    ghost_update_auto_disable(ghost_id=g.pk, params={"min_trades": 20}, actor=operator, reason="first")
    ghost_update_auto_disable(ghost_id=g.pk, params={"min_trades": 20}, actor=operator, reason="same again")
    assert AuditEvent.objects.filter(action="ghost.auto_disable_changed").count() == 1
    assert Ghost.objects.get(pk=g.pk).auto_disable["min_trades"] == 20
    assert Decimal(str(Ghost.objects.get(pk=g.pk).auto_disable["win_rate_floor"])) == Decimal("0.3")
