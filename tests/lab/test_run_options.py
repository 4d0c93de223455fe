"""`manage.py backtest` and `manage.py optimize` take their shared options from one argument group
(apps/lab/management/run_options.py), not each its own copy (issue 12 leftovers: duplication).

The group's options are parsed the same by both (same destinations, types, choices and defaults), and both turn
them into the same settings; the commands' own tests (tests/lab/test_command.py, tests/research/test_command.py)
run them end to end.
"""

import argparse

import pytest
from django.core.management import load_command_class
from django.core.management.base import CommandError

from apps.lab.management.run_options import add_run_options, run_settings

SHARED = ["--instrument", "--start", "--end", "--sizing", "--stake", "--equity-pct", "--capital", "--taker-fee",
          "--maker-fee", "--slippage-bps", "--limit", "--no-auto-disable", "--no-kill-switch", "--name"]


def _parser(app: str, name: str) -> argparse.ArgumentParser:
    return load_command_class(app, name).create_parser("manage.py", name)


def _shape(action: argparse.Action) -> tuple:
    return (action.dest, action.type, action.choices, action.default, action.required, action.nargs, action.const,
            type(action).__name__)


@pytest.mark.parametrize(("app", "name"), [("apps.lab", "backtest"), ("apps.research", "optimize")])
def test_each_command_takes_the_shared_group_as_it_is(app: str, name: str):
    parser = _parser(app, name)
    (group,) = [g for g in parser._action_groups if g.title == "run"]
    assert sorted(a.option_strings[0] for a in group._group_actions) == sorted(SHARED)
    reference = argparse.ArgumentParser(add_help=False)
    add_run_options(reference)
    want = {a.option_strings[0]: _shape(a) for a in reference._actions if a.option_strings}
    got = {a.option_strings[0]: _shape(a) for a in parser._actions if a.option_strings and a.option_strings[0] in want}
    assert got == {k: want[k] for k in SHARED}
    assert "run:" in parser.format_help()  # listed as one group in --help


def test_both_commands_make_the_same_settings_from_the_same_options():
    argv = ["--start", "2025-01-01", "--end", "2025-02-01", "--sizing", "stake", "--stake", "500", "--taker-fee",
            "0.0004", "--limit", "max_open_positions=2", "--limit", "max_notional_pct=50", "--capital", "2500",
            "--no-kill-switch"]
    made = []
    for app, name, extra in [("apps.lab", "backtest", []), ("apps.research", "optimize", ["--ghost", "spike_fader"])]:
        o = vars(_parser(app, name).parse_args(argv + extra))
        made.append(run_settings(o, {}))
    assert made[0] == made[1] == {
        "sizing": {"mode": "stake", "stake": 500.0}, "fee": {"taker_fee": 0.0004},
        "limits": {"max_open_positions": 2, "max_notional_pct": 50}, "start_capital": "2500", "kill_switch": False}


def test_options_lay_over_a_preset_key_by_key_and_a_bad_limit_is_refused():
    o = vars(_parser("apps.lab", "backtest").parse_args(["--start", "a", "--end", "b", "--stake", "250"]))
    preset = {"sizing": {"mode": "stake", "stake": 1000}, "fee": {"taker_fee": 0.001, "slippage_bps": 0}}
    assert run_settings(o, preset)["sizing"] == {"mode": "stake", "stake": 250.0}
    assert preset["fee"] == {"taker_fee": 0.001, "slippage_bps": 0}
    o["limit"] = ["max_open_positions=two"]
    with pytest.raises(CommandError, match="--limit 'max_open_positions=two'"):
        run_settings(o, {})
