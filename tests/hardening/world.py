"""One small but complete desk for the generated tests: every kind of object a URL can name exists, so the
fuzzer's requests reach past "404 no such thing" into the views' parsing and the services behind them.

Built once per test module inside a transaction that is rolled back at the end (tests/hardening/conftest.py);
each generated example runs in a savepoint of its own, so examples never see each other's writes.

- users: operator, viewer (the two roles), and a staff superuser (only to render admin for the matrix);
- the desk: binance BTC/USDT with two days of real 1m candles, its feed, an enabled spike fader, an open and
  a closed position with their signals, a portfolio target, an alert channel with a delivery, a history
  download, the kill switch row, audit events;
- the lab: a finished run (trades, signals, figures), a queued run, a queued backtest-against-the-desk run;
- research: a finished study with its trials, and a queued one (pause/resume/cancel have something to act on).
"""

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from tests.conftest import PASSWORD_SUFFIX

START = datetime(2025, 6, 21, tzinfo=UTC)
DAYS = 4  # 4 real days: a rolling 1-day-train/1-day-test study has 3 folds; a lab run finishes in ~1 s
END = START + timedelta(days=DAYS)
FADER = {"spike_threshold_pct": 0.5, "take_profit_pct": 0.4, "min_target_pct": 0.2, "min_stop_pct": 0.3,
         "min_volume_ratio": 1.0}  # tests/lab/conftest.SENSITIVE_FADER: trades on these days


@dataclass
class World:
    users: dict[str, Any]  # role -> user ("operator", "viewer", "staff")
    ids: dict[str, list[int]] = field(default_factory=dict)  # URL kwarg name -> ids that exist, per route family
    route_ids: dict[str, dict[str, list[int]]] = field(default_factory=dict)  # route name -> kwarg -> ids

    def ids_for(self, route: str, kwarg: str) -> list[int]:
        return self.route_ids.get(route, {}).get(kwarg) or self.ids.get(kwarg) or [1]


def build_world() -> World:
    from django.contrib.auth import get_user_model

    from apps.accounts.services import user_ensure
    from apps.alerts.services import alert_channel_create, alert_test_send
    from apps.ghosts.services import ghost_create
    from apps.lab.desk_compare import lab_desk_compare_create
    from apps.lab.models import BacktestSignal
    from apps.lab.services import lab_run_create, lab_run_execute
    from apps.market.models import FeedStatus
    from apps.market.services import instrument_ensure
    from apps.research.services import study_create, study_run_inline
    from apps.revenue.services import revenue_target_set
    from apps.signals.models import Signal
    from apps.trading.models import KillSwitch
    from tests.factories import make_position
    from tests.lab.conftest import import_real

    op, _ = user_ensure(username="olga", role="operator", password="olga" + PASSWORD_SUFFIX)
    viewer, _ = user_ensure(username="vera", role="viewer", password="vera" + PASSWORD_SUFFIX)
    staff = get_user_model().objects.create_superuser("root", "root@example.invalid", "root" + PASSWORD_SUFFIX)

    inst = instrument_ensure(exchange_code="binance", symbol="BTC/USDT")
    assert import_real(inst, START, END) == DAYS * 1440
    FeedStatus.objects.get_or_create(instrument=inst, defaults={"source": "sim"})
    ghost = ghost_create(name="fader-btc", kind="spike_fader", instrument=inst, enabled=True, actor=op)
    closed = make_position(ghost=ghost, opened_at=START + timedelta(hours=30), exit="101",
                           closed_at=START + timedelta(hours=31))
    opened = make_position(ghost=ghost, opened_at=START + timedelta(hours=40))
    revenue_target_set(ghost_id=None, amount=Decimal("25"), period="day", actor=op)
    KillSwitch.objects.get_or_create(pk=1)
    channel = alert_channel_create(actor=op, kind="webhook", name="hook", events=["fill"], chat_id="",
                                   secret="https://hooks.example.invalid/x", enabled=True)
    alert_test_send(actor=op, channel_key=f"db:{channel.pk}")

    lab = {"instrument_id": inst.pk, "start": START.isoformat(), "end": END.isoformat(),
           "ghosts": [{"kind": "spike_fader", "params": dict(FADER)}]}
    done = lab_run_execute(run_id=lab_run_create(actor=op, settings=lab, queue=False).pk)
    assert done.status == "done", done.error
    queued = lab_run_create(actor=op, settings=lab, queue=False)
    desk_run = lab_desk_compare_create(actor=op, instrument_id=inst.pk, start=START, end=END, queue=False)
    lab_signal = BacktestSignal.objects.filter(run_id=done.pk).order_by("pk").first()
    assert lab_signal is not None

    study_settings = {**lab, "target": "spike_fader", "params": dict(FADER), "ghosts": None,
                      "space": [{"name": "spike_threshold_pct", "low": 0.5, "high": 1.5, "step": 0.25}],
                      "objective": "net_pnl", "min_trades": 0, "scheme": "rolling", "train_days": 1,
                      "test_days": 1, "sampler": "random", "seed": 7, "budget_trials": 2, "batch_size": 2,
                      "sizing": {"mode": "stake", "stake": 1000}}
    del study_settings["ghosts"]
    study = study_run_inline(study_id=study_create(actor=op, settings=study_settings, queue=False).pk)
    assert study.status == "done", study.error
    waiting = study_create(actor=op, settings=study_settings, queue=False)
    trial_ids = list(study.trials.order_by("pk").values_list("pk", flat=True)[:2])

    w = World(users={"operator": op, "viewer": viewer, "staff": staff})
    w.ids = {
        "ghost_id": [ghost.pk],
        "instrument_id": [inst.pk],
        "signal_id": list(Signal.objects.order_by("pk").values_list("pk", flat=True)[:2]),
        "channel_id": [channel.pk],
        "run_id": [done.pk, queued.pk],
        "study_id": [study.pk, waiting.pk],
        "trial_id": trial_ids,
        "position_id": [closed.pk, opened.pk],
    }
    w.route_ids = {
        "lab:run-signal": {"run_id": [done.pk], "signal_id": [lab_signal.pk]},
        "lab:desk-compare-run": {"run_id": [desk_run.pk]},
        "research:trial": {"study_id": [study.pk], "trial_id": trial_ids},
    }
    return w
