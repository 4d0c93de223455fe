"""Writes that race, on the configured database: several threads (each with its own connection, as several worker
processes or web requests have) call the same service at the same moment.

On SQLite an IMMEDIATE transaction takes the whole database's write lock when it begins, so services never
really overlap. On PostgreSQL they do: only the rows a service locks (select_for_update), its conditional
UPDATEs (the lab's and research's claim tokens) and the unique constraints keep one outcome. Run on both
(`make test` runs this module again on PostgreSQL when HFT_TEST_DATABASE_URL is set).
"""

import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection

from apps.audit.models import AuditEvent
from apps.lab.models import BacktestRun, BacktestTrade
from apps.lab.services import lab_run_create, lab_run_execute
from apps.research.models import Study, Trial
from apps.research.services import study_create, study_step, trial_execute
from apps.revenue.models import RevenueTarget
from apps.revenue.services import revenue_target_set
from apps.trading.models import Fill, KillSwitch, Order, Position
from apps.trading.risk_services import kill_switch_trip
from apps.trading.services import position_close, signal_execute_paper
from tests.factories import make_ghost, make_signal
from tests.lab.conftest import btc, lab_request  # noqa: F401 - btc is a fixture
from tests.research.conftest import btc9, study_request  # noqa: F401 - btc9 is a fixture

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]
T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def race(fn, n: int = 4) -> list:
    """fn(i) in n threads released together once each has its own open connection; their results, in order.
    Any exception in a thread fails the test with it."""
    barrier = threading.Barrier(n)
    results: list = [None] * n
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            connection.ensure_connection()
            barrier.wait(timeout=60)
            results[i] = fn(i)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    if errors:
        raise errors[0]
    return results


def test_one_signal_filled_by_four_workers_at_once_opens_one_position(desk):
    ghost = desk["ghost"]
    for k in range(3):  # three rounds: the threads must overlap at least once for this to mean anything
        signal = make_signal(ghost=ghost, bar_time=T0 + timedelta(hours=k), fate="pending")
        at = T0 + timedelta(hours=k, minutes=1)
        out = race(lambda i, s=signal, at=at: signal_execute_paper(signal_id=s.pk, price=Decimal("100"), at=at))
        opened = [p for p in out if p is not None]
        assert len(opened) == 1 and Position.objects.filter(signal=signal).count() == 1
        assert Order.objects.filter(position__signal=signal).count() == 1
        assert Fill.objects.filter(order__position__signal=signal).count() == 1
        position_close(position_id=opened[0].pk, price=101.0, at=T0 + timedelta(hours=k, minutes=5), reason="target")


def test_one_position_closed_by_four_workers_at_once_exits_once(desk):
    signal = make_signal(ghost=desk["ghost"], bar_time=T0, fate="pending")
    position = signal_execute_paper(signal_id=signal.pk, price=Decimal("100"), at=T0 + timedelta(minutes=1))
    out = race(lambda i: position_close(position_id=position.pk, price=95.0 + i, at=T0 + timedelta(minutes=2 + i),
                                        reason="stop"))
    assert len([p for p in out if p is not None]) == 1
    position.refresh_from_db()
    exit_fill = Fill.objects.get(order__position=position, order__purpose="exit")
    assert position.status == "closed" and position.exit_price == exit_fill.price
    assert position.fees == sum(f.fee for f in Fill.objects.filter(order__position=position))


def test_a_first_revenue_target_set_by_two_requests_at_once_is_one_row(desk, operator):
    """The first target of a ghost (and of the portfolio) has no row to lock: both requests found none and
    both inserted; the second hit the one-target-per-owner constraint (IntegrityError, a 500) on PostgreSQL."""
    ghosts = [desk["ghost"], *(make_ghost(name=f"g{k}", instrument=desk["instrument"]) for k in range(3))]
    for owner in [*ghosts, None]:
        race(lambda i, g=owner: revenue_target_set(ghost_id=g.pk if g else None, amount=f"{10 + i}.00",
                                                   period="day", actor=operator))
        row = RevenueTarget.objects.get(ghost=owner)
        assert row.amount in {Decimal(f"{10 + i}.00") for i in range(4)}
        audits = AuditEvent.objects.filter(action="revenue_target.set", object_id=str(row.pk)).order_by("id")
        assert audits.count() == 4
        assert audits[0].before == {} and all(a.before for a in audits[1:])  # one creation, then updates


def test_the_kill_switch_tripped_by_four_requests_at_once_trips_once(desk, operator):
    assert not KillSwitch.objects.exists()  # its row is created by the first trip
    out = race(lambda i: kill_switch_trip(actor=operator, reason=f"operator {i} saw a bad print", flatten=False))
    assert all(ks.tripped for ks in out) and KillSwitch.objects.count() == 1
    assert AuditEvent.objects.filter(action="killswitch.tripped").count() == 1


def test_a_queued_lab_run_taken_by_three_workers_at_once_runs_once(btc, operator):  # noqa: F811
    run = lab_run_create(actor=operator, settings=lab_request(btc), queue=False)
    out = race(lambda i: lab_run_execute(run_id=run.pk), n=3)
    assert [r.status for r in out].count("done") >= 1
    run.refresh_from_db()
    assert run.status == "done", run.error
    seqs = list(BacktestTrade.objects.filter(run=run).values_list("seq", flat=True).order_by("seq"))
    assert seqs and seqs == list(range(1, len(seqs) + 1))  # one execution's trades, once
    assert BacktestRun.objects.count() == 1


def test_a_trial_delivered_three_times_at_once_is_stored_and_counted_once(btc9, operator):  # noqa: F811
    study = study_create(actor=operator, settings=study_request(btc9), queue=False)
    ids = study_step(study_id=study.pk, dispatch=False)
    race(lambda i: trial_execute(trial_id=ids[0], queue_next=False), n=3)  # each returns the row as it saw it
    trial = Trial.objects.defer(None).get(pk=ids[0])
    assert trial.status == "done" and trial.value is not None and len(trial.daily) == len(study.days)
    assert Study.objects.get(pk=study.pk).trials_done == 1
