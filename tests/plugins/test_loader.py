"""Plug-ins from a folder on the running desk (issue 11): registered or refused at load with the reason shown on
the Ghosts page, created disabled and toggled like any ghost, trading through the bar evaluation, and disabled
(audit with the traceback, alert) when they raise or return bad drafts at run time while the other ghosts run on."""

import sys

import pytest
from django.urls import reverse

from apps.audit.models import AuditEvent
from apps.engine import registry
from apps.ghosts.models import Ghost, GhostStatus
from apps.ghosts.plugins import loaded, plugins_load, refused
from apps.ghosts.services import ghost_set_enabled, plugin_ghosts_ensure
from apps.market.prices import price_set
from apps.runtime.evaluation import bar_evaluate
from apps.signals.models import Signal
from apps.trading.models import Position
from tests.apps.test_evaluation import store_spike_series
from tests.plugins import cheaters

pytestmark = pytest.mark.django_db
JSON = {"HTTP_ACCEPT": "application/json"}


@pytest.fixture
def plugin_dir(tmp_path):
    cheaters.write(tmp_path, "tmp_fader", cheaters.HONEST)
    cheaters.write(tmp_path, "switched_fader", cheaters.SWITCHED)
    cheaters.write(tmp_path, "peeker", cheaters.PEEKING)
    (tmp_path / "broken.py").write_text(cheaters.BROKEN_IMPORT)
    (tmp_path / "test_tmp_fader.py").write_text("raise SystemExit('a test module is not a plug-in')\n")
    (tmp_path / "_helpers.py").write_text("raise SystemExit('a private module is not a plug-in')\n")
    records = plugins_load(folder=tmp_path, entry_points=False)
    yield tmp_path, records
    plugins_load(folder="", entry_points=False)  # unregister: the next test sees the built-in ghosts only
    assert not any(registry.is_plugin(k) for k in registry.GHOSTS)


def test_passing_plugins_are_registered_and_cheaters_refused_with_the_reason(plugin_dir):
    _, records = plugin_dir
    assert sorted(r.kind for r in loaded()) == ["switched_fader", "tmp_fader"]
    assert registry.is_plugin("tmp_fader") and "tmp_fader" not in registry.DESK_KINDS
    why = {r.kind or r.source.rsplit("/", 1)[-1]: r.reason for r in refused()}
    assert set(why) == {"peeker", "broken.py"}, why  # test_*.py and _*.py are not plug-ins
    assert why["peeker"].startswith("look-ahead:") and "reads bars after the one it drafts for" in why["peeker"]
    assert why["broken.py"] == "does not import: ModuleNotFoundError: No module named 'a_module_that_does_not_exist'"
    assert len(records) == 4


def test_plugin_ghost_shows_on_the_ghosts_page_and_is_toggled(plugin_dir, desk, op_client, viewer_client):
    made = plugin_ghosts_ensure(instrument=desk["instrument"], suffix="btc")
    assert sorted(g.name for g in made) == ["switched-fader-btc", "tmp-fader-btc"]
    assert plugin_ghosts_ensure(instrument=desk["instrument"], suffix="btc") == []  # once
    ghost = Ghost.objects.get(name="tmp-fader-btc")
    assert not ghost.enabled and ghost.status == GhostStatus.DISABLED  # new code trades once an operator says so

    page = op_client.get(reverse("dashboard:ghosts")).content.decode()
    assert f'id="ghost-{ghost.pk}"' in page and "tmp_fader (test)" in page
    assert page.count('class="badge plugin"') == 2  # the two plug-in ghosts, not the built-in fader
    assert 'id="refused-plugins"' in page and "peeker" in page and "look-ahead:" in page
    assert "No module named" in page
    assert str(plugin_dir[0]) in page  # operators see where it came from
    viewer_page = viewer_client.get(reverse("dashboard:ghosts")).content.decode()
    assert "look-ahead:" in viewer_page and str(plugin_dir[0]) not in viewer_page

    url = reverse("dashboard:ghost-toggle", args=[ghost.pk])
    r = op_client.post(url, {"enabled": "1", "reason": "reviewed the plug-in"}, **JSON)
    assert r.status_code == 200 and r.json()["enabled"] is True
    assert Ghost.objects.get(pk=ghost.pk).status == GhostStatus.ACTIVE
    assert AuditEvent.objects.filter(action="ghost.enabled", object_id=str(ghost.pk)).exists()
    assert viewer_client.post(url, {"enabled": "0", "reason": "no"}, **JSON).status_code == 403


def _enable(name: str, make_user) -> Ghost:
    op = make_user(f"op-{name}", "operator")
    g = Ghost.objects.get(name=name)
    return ghost_set_enabled(ghost_id=g.pk, enabled=True, actor=op, reason="try the plug-in")


def test_an_enabled_plugin_trades_through_the_bar_evaluation(plugin_dir, desk, make_user):
    inst = desk["instrument"]
    plugin_ghosts_ensure(instrument=inst, suffix="btc")
    ghost_set_enabled(ghost_id=desk["ghost"].pk, enabled=False, actor=make_user("op", "operator"), reason="alone")
    ghost = _enable("tmp-fader-btc", make_user)
    last = store_spike_series(inst)  # +2 % in 15 minutes: the test fader shorts it
    price_set(inst.pk, 101.95, int(last.open_time.timestamp() * 1000) + 60_250)
    created = bar_evaluate(instrument_id=inst.pk, bar_time=last.open_time)
    assert [s.ghost_id for s in created] == [ghost.pk]
    signal = Signal.objects.get(ghost=ghost)
    assert signal.side == "short" and signal.fate == "taken"
    assert Position.objects.filter(ghost=ghost).count() == 1


@pytest.mark.parametrize(("switch", "words"), [
    ("FAIL", "ZeroDivisionError: plug-in blew up at run time"),
    ("BAD", "returned bad drafts: a LONG needs stop < entry < target"),
])
def test_a_plugin_failing_at_run_time_is_disabled_audited_and_alerted(
        plugin_dir, desk, make_user, monkeypatch, django_capture_on_commit_callbacks, switch, words):
    from apps.alerts.models import AlertDelivery
    from apps.alerts.services import alert_channel_create

    alert_channel_create(actor=None, kind="telegram", name="ops", events=["auto_disable"], chat_id="42",
                         secret="123456789:AAHfakeTokenForTests_0123456789abcdef")
    inst = desk["instrument"]
    plugin_ghosts_ensure(instrument=inst, suffix="btc")
    ghost = _enable("switched-fader-btc", make_user)
    last = store_spike_series(inst)
    price_set(inst.pk, 101.95, int(last.open_time.timestamp() * 1000) + 60_250)
    monkeypatch.setattr(sys.modules["hftweb_ghosts.switched_fader"], switch, True)
    with django_capture_on_commit_callbacks(execute=True):
        created = bar_evaluate(instrument_id=inst.pk, bar_time=last.open_time)

    ghost.refresh_from_db()
    assert not ghost.enabled and ghost.status == GhostStatus.DISABLED
    assert ghost.status_reason.startswith("plug-in disabled at run time:") and words in ghost.status_reason
    assert "Traceback" in ghost.last_error
    audit = AuditEvent.objects.get(action="ghost.plugin_disabled", object_id=str(ghost.pk))
    assert "Traceback" in audit.after["traceback"] and audit.after["enabled"] is False
    alert = AlertDelivery.objects.get(event="auto_disable")
    assert "switched-fader-btc" in alert.title and words in alert.body
    # the built-in ghost ran on: its signal from the same bar is there, and it stays enabled
    assert [s.ghost_id for s in created] == [desk["ghost"].pk]
    assert Ghost.objects.get(pk=desk["ghost"].pk).status == GhostStatus.ACTIVE
    # the next bar does not evaluate it at all
    assert not Signal.objects.filter(ghost=ghost).exists()


def test_a_hanging_plugin_is_refused_after_the_time_limit_and_the_others_load(tmp_path, monkeypatch):
    import time

    from apps.ghosts import plugins

    monkeypatch.setattr(plugins, "LOAD_TIMEOUT_S", 1.0)
    (tmp_path / "a_hang.py").write_text(cheaters.HONEST.replace("{kind}", "a_hang").replace(
        "def evaluate(bars, cfg):\n", "def evaluate(bars, cfg):\n    while True:\n        try:\n"
        "            pass\n        except Exception:\n            pass\n"))
    cheaters.write(tmp_path, "b_fine", cheaters.HONEST)
    t0 = time.monotonic()
    try:
        plugins_load(folder=tmp_path, entry_points=False)
        assert time.monotonic() - t0 < 10
        assert [r.kind for r in loaded()] == ["b_fine"]
        (hung,) = refused()
        assert hung.kind == "a_hang" and hung.reason.startswith("too slow: the load-time guards took over 1 s")
    finally:
        plugins_load(folder="", entry_points=False)
