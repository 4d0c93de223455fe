"""The plug-in guards (apps.engine.plugins.check_spec): every built-in ghost and the example plug-in pass them,
and each way of breaking the contract is refused under its own check with a reason that says what is wrong."""

from pathlib import Path

import pandas as pd
import pytest

from apps.engine import registry
from apps.engine.plugins import (
    PluginDraftError,
    check_spec,
    checked_evaluate,
    load_time_bars,
    spec_from_object,
    synthetic_bars,
)
from apps.ghosts.plugins import import_plugin_file
from tests.datafiles import load_freqtrade_1m
from tests.plugins import cheaters

REPO = Path(__file__).resolve().parents[2]


def spec_of(folder: Path, kind: str, source: str):
    path = cheaters.write(folder, kind, source)
    return spec_from_object(import_plugin_file(path, path))


@pytest.mark.parametrize("kind", sorted(registry.BUILTIN_KINDS))
def test_every_builtin_ghost_passes_the_plugin_guards(kind):
    """The guards hold the built-in ghosts to the same contract: not stricter than the engine's own ghosts."""
    spec = registry.GHOSTS[kind]
    report = check_spec(spec, load_time_bars(spec), taken=registry.BUILTIN_KINDS - {kind})
    assert report.ok, report.reason


def test_the_example_plugin_passes_on_the_90_day_file():
    bars = load_freqtrade_1m()
    spec = spec_from_object(import_plugin_file(REPO / "plugins" / "streak_fader.py", REPO / "plugins" / "x.py"))
    report = check_spec(spec, bars, taken=registry.BUILTIN_KINDS)
    assert report.ok, report.reason
    assert report.warmup_minutes == 6 and report.drafts and 0.5 < report.drafts_per_day < 10
    assert report.bars == len(bars) and report.full_s > 0 and report.window_ms > 0
    assert any(line.startswith("speed: whole series") for line in report.lines())


def test_an_honest_plugin_passes(tmp_path):
    report = check_spec(spec_of(tmp_path, "honest_fader", cheaters.HONEST), synthetic_bars(),
                        taken=registry.GHOSTS)
    assert report.ok, report.reason
    assert report.drafts > 10


@pytest.mark.parametrize(("source", "check", "words"), [
    (cheaters.PEEKING, "look-ahead", "reads bars after the one it drafts for"),
    (cheaters.MUTATING, "input mutation", "mutated its input bars"),
    (cheaters.RAISING, "exceptions", "RuntimeError: the plug-in's own bug"),
    (cheaters.NAN_FRAGILE, "NaN handling", "no inputs beyond OHLCV"),
    (cheaters.BAD_LEVELS, "drafts", "a LONG needs stop < entry < target"),
    (cheaters.START_DEPENDENT, "live = backtest", "depends on where the series starts"),
    (cheaters.ROW_COUNTING, "live = backtest", "the live window of 16 minutes"),
    (cheaters.NOT_FROZEN, "contract", "Config must be frozen"),
])
def test_a_broken_plugin_is_refused_with_the_reason(tmp_path, source, check, words):
    report = check_spec(spec_of(tmp_path, "bad_ghost", source), synthetic_bars(), taken=registry.GHOSTS)
    assert not report.ok
    assert report.reason.startswith(f"{check}:"), report.reason
    assert words in report.reason


def test_a_plugin_cannot_take_a_builtin_kind(tmp_path):
    report = check_spec(spec_of(tmp_path, "spike_fader", cheaters.HONEST), synthetic_bars(), taken=registry.GHOSTS)
    assert report.reason.startswith("contract:") and "already registered" in report.reason


def test_checked_evaluate_raises_on_bad_drafts_at_run_time(tmp_path):
    spec = spec_of(tmp_path, "switched_ghost", cheaters.SWITCHED)
    module = import_plugin_file(tmp_path / "switched_ghost.py", tmp_path / "switched_ghost.py")
    spec = spec_from_object(module)
    fn = checked_evaluate(spec)
    bars = synthetic_bars(600)
    assert isinstance(fn(bars, spec.config_cls()), pd.DataFrame)
    module.BAD = True
    with pytest.raises(PluginDraftError, match="stop < entry < target"):
        fn(bars, spec.config_cls())
