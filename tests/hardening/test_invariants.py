"""tests/hardening/invariants.py can fail: rows a request could leave behind, each refused for its reason."""

from datetime import UTC, datetime

import pytest

from apps.engine.risk import RiskLimits
from apps.ghosts.models import Ghost
from apps.market.models import HistoryDownload
from apps.revenue.models import RevenueTarget
from apps.trading.models import RiskSettings
from tests.hardening.invariants import Baseline, Watch, row_problems

pytestmark = pytest.mark.django_db


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
    t = RevenueTarget.objects.create(ghost=None, amount="5", period="fortnight")  # the CHECK keeps amount > 0
    assert any("period" in p for p in row_problems(t))


def test_watch_sees_the_rows_a_request_writes_and_only_those(desk):
    baseline = Baseline()
    watch = Watch(baseline)
    assert not watch.wrote() and watch.invalid_rows() == []
    Ghost.objects.filter(pk=desk["ghost"].pk).update(params={"spike_threshold_pct": "x"})
    assert watch.wrote() and watch.changed_tables() == ["ghosts.Ghost"]
    assert [p for p in watch.invalid_rows() if p.startswith("ghosts.Ghost")]
