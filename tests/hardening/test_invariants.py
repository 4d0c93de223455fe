"""tests/hardening/invariants.py can fail: rows a request could leave behind, each refused for its reason.

Marked postgres: `make test` runs them again on PostgreSQL (.ci/run), production's database, where two used to fail:
a CharField value past its max_length (PostgreSQL refuses it at the INSERT, SQLite stores it), and Watch, which
could not tell whether a request wrote on PostgreSQL (it said "wrote" always, so every request paid the full
comparison and the test of it failed).
"""

from datetime import UTC, datetime

import pytest

from apps.engine.risk import RiskLimits
from apps.ghosts.models import Ghost
from apps.market.models import HistoryDownload
from apps.revenue.models import RevenueTarget
from apps.trading.models import RiskSettings
from tests.hardening.invariants import Baseline, Watch, row_problems

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]


def test_the_world_as_services_write_it_is_valid(desk):
    assert [p for m in (Ghost, RiskSettings) for o in m.objects.all() for p in row_problems(o)] == []


def test_params_the_engine_refuses_are_an_invalid_row(desk):
    Ghost.objects.filter(pk=desk["ghost"].pk).update(params={"spike_threshold_pct": -1})
    assert any("spike_threshold_pct" in p for p in row_problems(Ghost.objects.get(pk=desk["ghost"].pk)))


def test_json_nested_past_64_or_holding_nan_is_an_invalid_row(db):
    # SQLite's JSON_VALID check refuses NaN at the INSERT (PostgreSQL's jsonb too): check the value in memory
    deep: list = []
    for _ in range(70):
        deep = [deep]
    row = RiskSettings.objects.create(pk=1, params={**RiskLimits().to_params(), "x": deep})
    assert any("JSON nested deeper than 64" in p for p in row_problems(RiskSettings.objects.get(pk=row.pk)))
    row.params = {**RiskLimits().to_params(), "max_notional_pct": float("nan")}
    assert any("not strict JSON" in p for p in row_problems(row))


def test_a_date_in_9999_is_an_invalid_row(desk):
    d = HistoryDownload.objects.create(instrument=desk["instrument"], since=datetime(9999, 12, 31, tzinfo=UTC))
    assert any("outside 1970-01-01..2999-12-31" in p for p in row_problems(d))


def test_a_field_its_model_refuses_is_an_invalid_row(desk):
    # not a choice, within the column's 8 characters (PostgreSQL refuses a longer value at the INSERT); the CHECK
    # keeps amount > 0
    t = RevenueTarget.objects.create(ghost=None, amount="5", period="quarter")
    assert any("period" in p and "not a valid choice" in p for p in row_problems(t))


def test_watch_sees_the_rows_a_request_writes_and_only_those(desk):
    baseline = Baseline()
    watch = Watch(baseline)
    assert not watch.wrote() and watch.invalid_rows() == []
    Ghost.objects.filter(pk=desk["ghost"].pk).update(params={"spike_threshold_pct": "x"})
    assert watch.wrote() and watch.changed_tables() == ["ghosts.Ghost"]
    assert [p for p in watch.invalid_rows() if p.startswith("ghosts.Ghost")]


def test_watch_counts_a_write_that_a_savepoint_rolled_back(desk):
    """The generated requests run in savepoints rolled back after each: the count must not go back with them."""
    from django.db import transaction

    watch = Watch(Baseline())
    try:
        with transaction.atomic():
            Ghost.objects.filter(pk=desk["ghost"].pk).update(name="renamed")
            raise RuntimeError("undo")
    except RuntimeError:
        pass
    assert watch.wrote()  # it did write (then undid it): the comparison runs and finds nothing changed
    assert watch.changed_tables() == [] and watch.invalid_rows() == []
    later = Watch(Baseline())
    assert not later.wrote()
