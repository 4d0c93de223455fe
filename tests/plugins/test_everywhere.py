"""Plug-in ghosts reach the places built-in ones do: discovered from an installed package's entry point, backtested
by the engine, searched by the parameter search (bounds read from the plug-in's own __post_init__), offered by the
lab's form."""

import sys
from pathlib import Path

import pytest

from apps.engine import registry
from apps.engine.backtest import GhostSetup, run_backtest
from apps.engine.search_space import default_space
from apps.ghosts.plugins import loaded, plugins_load, refused
from tests.datafiles import load_freqtrade_1m

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def unload():
    yield
    plugins_load(folder="", entry_points=False)
    assert not any(registry.is_plugin(k) for k in registry.GHOSTS)


def test_an_installed_package_entry_point_is_loaded(tmp_path, monkeypatch, unload):
    """A distribution on sys.path with an `hftweb.ghosts` entry point (as `pip install` leaves one): a module and a
    GhostSpec object are both accepted; a name clash with the first is refused."""
    (tmp_path / "ep_streak.py").write_text((REPO / "plugins" / "streak_fader.py").read_text()
                                           .replace('KIND = "streak_fader"', 'KIND = "ep_streak"'))
    (tmp_path / "ep_spec.py").write_text(
        "import dataclasses\nimport ep_streak\nfrom apps.engine.plugins import spec_from_object\n"
        "GHOST_SPEC = dataclasses.replace(spec_from_object(ep_streak), title='Same, as a spec')\n")
    dist = tmp_path / "my_ghosts-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-ghosts\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[hftweb.ghosts]\nep_streak = ep_streak\nep_again = ep_spec:GHOST_SPEC\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    plugins_load(folder="", entry_points=True)
    assert [r.kind for r in loaded()] == ["ep_streak"]
    assert registry.GHOSTS["ep_streak"].title == "Streak fader (example plug-in)"
    (clash,) = refused()
    assert clash.source == "entry point ep_again = ep_spec:GHOST_SPEC" and "already registered" in clash.reason
    sys.modules.pop("ep_streak", None)
    sys.modules.pop("ep_spec", None)


def test_the_example_plugin_backtests_searches_and_shows_in_the_lab(unload):
    plugins_load(folder=REPO / "plugins", entry_points=False)
    assert [r.kind for r in loaded()] == ["streak_fader"] and not refused()
    bars = load_freqtrade_1m().iloc[:20_000]
    result = run_backtest(bars, [GhostSetup(ghost_id=1, name="streak", kind="streak_fader")])
    assert len(result.trades) > 0
    space = {r.name: r for r in default_space("streak_fader")}
    assert set(space) >= {"streak", "move_pct", "stop_pct", "target_pct", "max_hold_min"}
    streak = space["streak"]  # around the default, inside the plug-in's own check_range bounds (2..60)
    assert streak.kind == "int" and 2 <= streak.low < 5 < streak.high <= 60

    from apps.lab.forms import LabRunForm  # the lab reads the registry when the form is built

    assert "streak_fader" in LabRunForm().kinds
