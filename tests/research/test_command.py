"""`manage.py optimize` on real candles: the same services and settings as the study form (a stored study that
equals one created through `study_create` with the same settings), the fold table and the out-of-sample
headline printed; a refused request names the field."""

import io
import json

import pytest
from django.core.management import CommandError, call_command

from apps.research.models import Study, Trial
from apps.research.services import study_create, study_run_inline
from tests.lab.conftest import SENSITIVE_FADER
from tests.research.conftest import study_request

pytestmark = pytest.mark.django_db


def run_command(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("optimize", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_command_runs_the_study_and_prints_folds_and_headline(btc9, operator) -> None:
    out, err = run_command(
        "--start", "2025-06-19", "--end", "2025-06-28", "--ghost", "spike_fader",
        "--fixed", f"spike_fader:{json.dumps(SENSITIVE_FADER)}",
        "--space", "spike_threshold_pct=0.5:1.5:0.05", "--space", "take_profit_pct=0.2:0.45:0.05",
        "--objective", "net_pnl", "--min-trades", "1", "--train-days", "3", "--test-days", "2", "--seed", "7",
        "--trials", "8", "--batch-size", "4", "--sizing", "stake", "--stake", "1000", "--no-auto-disable",
        "--no-kill-switch")
    study = Study.objects.get()
    assert study.status == "done" and study.created_by is None
    # exactly the study the services make of the form's settings
    same = study_run_inline(study_id=study_create(actor=operator, settings=study_request(btc9), queue=False).pk)
    assert same.settings == study.settings and same.fingerprint == study.fingerprint
    assert list(Trial.objects.filter(study=same).order_by("fold", "number").values_list("params", "value")) == \
        list(Trial.objects.filter(study=study).order_by("fold", "number").values_list("params", "value"))
    assert f"study {study.pk}: 3 folds, 24 trials" in err
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.lstrip().startswith("fold"))
    for k, f in enumerate(study.results["folds"]):
        row = lines[header + 1 + k]
        assert row.split()[0] == str(k + 1) and f"{f['train_start'][:10]}..{f['train_end'][:10]}" in row
        assert (f"{f['is_value']:,.3f}" if f["is_value"] is not None else "n/a") in row
    for label in ("Net P&L (out-of-sample)", "Sharpe", "Max drawdown", "deflated Sharpe ratio",
                  "probability of backtest overfitting", "stability"):
        assert label in out
    oos = {f["key"]: f["value"] for f in study.results["oos"]["figures"]}
    assert f"{oos['net_pnl']:,.2f}" in out


def test_a_refused_request_names_the_field(btc9) -> None:
    err = io.StringIO()
    with pytest.raises(CommandError, match="refused"):
        call_command("optimize", "--start", "2025-06-19", "--end", "2025-06-28", "--ghost", "spike_fader",
                     "--train-days", "8", "--test-days", "2", "--space", "take_profit_pct=0.4:60", stderr=err)
    assert not Study.objects.exists()
    text = err.getvalue()
    assert "train_days: no fold fits" in text and "space.take_profit_pct: high 60 is outside the allowed range" \
        in text
    with pytest.raises(CommandError, match="name=low:high"):
        run_command("--start", "2025-06-19", "--end", "2025-06-28", "--ghost", "spike_fader", "--space", "x=1")
