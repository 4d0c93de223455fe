"""What "no invalid row afterwards" means, checked after every generated request.

Every example starts from the same database (the world, restored by its savepoint's rollback), so the rows a
request wrote are the difference between the database now and the world's baseline. Each written row must:
- pass its model's field validation (`clean_fields`: lengths, choices, decimal digits, nulls);
- hold only strict JSON in its JSON fields (no NaN or Infinity: PostgreSQL's jsonb refuses them) nested no
  deeper than 64;
- hold no NUL character in its text (SQLite stores one; PostgreSQL, production's database, refuses the row);
- have its dates between 1970 and 2999 (apps.common.forms' bounds: a date the desk cannot do arithmetic on
  is a crash waiting for the next page that reads it);
- pass the domain's own validation where it has one (DOMAIN_CHECKS: a ghost's params through the engine's
  config, the risk limits through RiskLimits, a lab run's settings through lab_settings_validate...). A
  study's stored settings carry derived keys (grid_size, warmup_minutes) its validator does not take, so a
  study row gets the generic checks only.

Tables of more than BIG_TABLE rows in the world (candles, lab trades) are checked for new rows only.
`total_changes()` (SQLite's, or the transaction's row counts on PostgreSQL) says whether the request wrote anything
at all; most refused requests did not, and skip the comparison.
"""

import json
import math
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from django.apps import apps
from django.core.exceptions import ValidationError
from django.db import connection, models

from apps.common.forms import DATE_MAX, DATE_MIN
from apps.common.parsing import json_depth

BIG_TABLE = 1000
MAX_STORED_DEPTH = 64


def _models() -> list[type[models.Model]]:
    return [m for m in apps.get_models() if not m._meta.proxy and m._meta.managed]


def total_changes() -> int | None:
    """Rows inserted, updated or deleted so far, a count that grows with every write: on SQLite the connection's
    total_changes(); on PostgreSQL, inside a transaction (the world's, where the generated requests run), the
    transaction's own row counts from pg_stat_xact_user_tables (kept by the backend itself, not the stats
    collector; rolled-back savepoints' writes still count, so the number never goes back). Else None: always
    compare (in autocommit each statement is a transaction of its own, and those counts restart at zero)."""
    if connection.vendor == "sqlite":
        sql = "SELECT total_changes()"
    elif connection.vendor == "postgresql" and connection.in_atomic_block:
        sql = "SELECT COALESCE(SUM(n_tup_ins + n_tup_upd + n_tup_del), 0) FROM pg_stat_xact_user_tables"
    else:
        return None
    with connection.cursor() as c:
        c.execute(sql)
        return int(c.fetchone()[0])


def _rows(model: type[models.Model], since_pk: Any = None) -> dict[Any, tuple]:
    names = [f.attname for f in model._meta.concrete_fields]
    qs = model._default_manager.order_by()
    if since_pk is not None:
        qs = qs.filter(pk__gt=since_pk)
    return {row[names.index(model._meta.pk.attname)]: row for row in qs.values_list(*names)}


class Baseline:
    """The world's rows: all of each small table, the last pk of each big one."""

    def __init__(self) -> None:
        self.small: dict[type[models.Model], dict[Any, tuple]] = {}
        self.big_last: dict[type[models.Model], Any] = {}
        for m in _models():
            if m._default_manager.count() > BIG_TABLE:
                last = m._default_manager.order_by("-pk").values_list("pk", flat=True).first()
                self.big_last[m] = last
            else:
                self.small[m] = _rows(m)

    def written(self) -> list[models.Model]:
        """The rows that differ from the baseline now (new or changed), as model instances."""
        out: list[models.Model] = []
        for m, before in self.small.items():
            now = _rows(m)
            pks = [pk for pk, row in now.items() if before.get(pk) != row]
            out += list(m._default_manager.filter(pk__in=pks)) if pks else []
        for m, last in self.big_last.items():
            out += list(m._default_manager.filter(pk__gt=last)) if last is not None else []
        return out

    def changed_tables(self) -> list[str]:
        """Labels of the tables whose rows differ from the baseline (new, changed or deleted rows)."""
        out = [m._meta.label for m, before in self.small.items() if _rows(m) != before]
        out += [m._meta.label for m, last in self.big_last.items()
                if m._default_manager.filter(pk__gt=last).exists()]
        return out


def _strict_json(value: Any) -> str | None:
    try:
        text = json.dumps(value, allow_nan=False)
    except (ValueError, TypeError) as e:
        return f"not strict JSON ({e})"
    depth = json_depth(text, stop_above=MAX_STORED_DEPTH)
    return f"JSON nested deeper than {MAX_STORED_DEPTH}" if depth > MAX_STORED_DEPTH else None


def _in_range(value: date) -> bool:
    day = value.date() if isinstance(value, datetime) else value
    return DATE_MIN <= day <= DATE_MAX


# --- the domain's own validation, per model ---------------------------------------------------------------------


def _ghost(g) -> None:
    from apps.engine.performance import AutoDisableRules
    from apps.engine.registry import config_from_params

    assert config_from_params(g.kind, g.params).to_params() == g.params, "params not the engine's normal form"
    if g.auto_disable:
        assert AutoDisableRules.from_params(g.auto_disable).to_params() == g.auto_disable, "auto_disable not normal"


def _risk_settings(r) -> None:
    from apps.engine.risk import RiskLimits

    assert RiskLimits.from_params(r.params).to_params() == r.params, "limits not the engine's normal form"


def _target(t) -> None:
    assert t.amount.is_finite() and t.amount > 0, f"amount {t.amount}"


def _channel(ch) -> None:
    from apps.alerts.models import SUBSCRIBABLE

    assert set(ch.events) <= set(SUBSCRIBABLE), f"events {ch.events}"


def _criteria(c) -> None:
    from apps.lab.forms import CriteriaForm

    form = CriteriaForm({**{k: str(getattr(c, k)) for k in CriteriaForm.LABELS}, "reason": "check"})
    assert form.is_valid(), form.errors.as_text()


def _run(r) -> None:
    from apps.lab.services import lab_settings_validate

    lab_settings_validate(r.settings)


def _download(d) -> None:
    assert d.until is None or d.since < d.until, f"since {d.since} not before until {d.until}"


DOMAIN_CHECKS: dict[str, Callable[[Any], None]] = {
    "ghosts.Ghost": _ghost,
    "trading.RiskSettings": _risk_settings,
    "revenue.RevenueTarget": _target,
    "alerts.AlertChannel": _channel,
    "lab.SuccessCriteria": _criteria,
    "lab.BacktestRun": _run,
    "market.HistoryDownload": _download,
}


def row_problems(obj: models.Model) -> list[str]:
    """Why a written row is invalid (empty when it is fine)."""
    label = f"{obj._meta.label}#{obj.pk}"
    problems = []
    try:
        obj.clean_fields()
    except ValidationError as e:
        problems.append(f"{label}: {e.message_dict}")
    for f in obj._meta.concrete_fields:
        value = getattr(obj, f.attname)
        if value is None:
            continue
        if isinstance(f, models.JSONField) and (why := _strict_json(value)):
            problems.append(f"{label}.{f.name}: {why}")
        elif isinstance(f, models.DateField) and not _in_range(value):  # DateTimeField is a DateField
            problems.append(f"{label}.{f.name}: {value} outside {DATE_MIN}..{DATE_MAX}")
        elif isinstance(f, models.CharField | models.TextField) and "\x00" in str(value):
            problems.append(f"{label}.{f.name}: holds a NUL character (PostgreSQL refuses the row: a 500 there)")
        elif isinstance(f, models.FloatField) and not math.isfinite(value):
            problems.append(f"{label}.{f.name}: {value}")
        elif isinstance(f, models.DecimalField) and isinstance(value, Decimal) and not value.is_finite():
            problems.append(f"{label}.{f.name}: {value}")
    check = DOMAIN_CHECKS.get(obj._meta.label)
    if check is not None:
        try:
            check(obj)
        except (AssertionError, ValueError) as e:
            problems.append(f"{label}: {type(e).__name__}: {e}")
    return problems


class Watch:
    """Around one request: did it write, and is every row it wrote valid?"""

    def __init__(self, baseline: Baseline) -> None:
        self.baseline = baseline
        self.start = total_changes()

    def wrote(self) -> bool:
        now = total_changes()
        return True if now is None else now != self.start

    def invalid_rows(self) -> list[str]:
        if not self.wrote():
            return []
        return [p for obj in self.baseline.written() for p in row_problems(obj)]

    def changed_tables(self) -> list[str]:
        return self.baseline.changed_tables() if self.wrote() else []
