"""Every model and every migration of the desk on the configured database (`make test` runs this module again on
PostgreSQL when HFT_TEST_DATABASE_URL is set).

- One row of every model, each field at its limit (the longest text a CharField allows, in characters beyond
  ASCII; the largest Decimal its digits allow, and the smallest step; the largest integers; datetimes with
  microseconds; JSON with nesting, unicode and big numbers; every byte value), written and read back unchanged.
  PostgreSQL only: SQLite keeps a DecimalField as a float (15-16 significant digits) and does not enforce
  max_length, so the limits are PostgreSQL's. A model added without a row here fails the test.
- Every app's migrations back to nothing and forward again (the data migrations' reverse functions included),
  and the models as the migrations leave them (`makemigrations --check`).
"""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.apps import apps
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection, models
from django.db.migrations.executor import MigrationExecutor

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]
ON_POSTGRES = settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"

WHEN = datetime(2099, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)
TEXT = ("Ωmega é ü — €uro 😀 'single' \"double\" back\\slash %_ LIKE\n\ttab\r\n" * 200)[:10_000]
# Floats below 1e16: PostgreSQL's jsonb keeps a number as a decimal, and prints one Python wrote as 1e+16 or more
# without the exponent (10000000000000000), which reads back as an int. The desk's JSON holds no such float.
JSON = {"zeta": 1, "alpha": [1, 0.1, 2.5, -0.125, 1e-300, 123456789.123456789, 2**63 - 1, -(2**63), 2**53 + 1],
        "nested": {"b": None, "a": True, "ünïcode 😀": "x\"y'z\\"}, "empty": {}, "list": [[], [{}]]}
BYTES = bytes(range(256)) * 64
CHARS = "Ωé😀x"  # 2-, 2-, 4- and 1-byte UTF-8: max_length counts characters, not bytes


def limit(field: models.Field):
    """The field's largest value (text at max_length, the biggest number its digits allow)."""
    if field.choices:
        return max((v for v, _ in field.flatchoices), key=len)
    if isinstance(field, models.SlugField):
        return ("a-9_" * 64)[: field.max_length]
    if isinstance(field, models.CharField):
        return (CHARS * 100)[: field.max_length]
    if isinstance(field, models.TextField):
        return TEXT
    if isinstance(field, models.DecimalField):
        return Decimal(10) ** (field.max_digits - field.decimal_places) - Decimal(10) ** -field.decimal_places
    if isinstance(field, models.PositiveSmallIntegerField | models.SmallIntegerField):
        return 32767
    if isinstance(field, models.PositiveIntegerField | models.IntegerField):
        return 2_147_483_647
    if isinstance(field, models.FloatField):
        return 1.7976931348623157e308
    if isinstance(field, models.BooleanField):
        return True
    if isinstance(field, models.DateTimeField):
        return WHEN
    if isinstance(field, models.DateField):  # after DateTimeField, its subclass
        return WHEN.date()
    if isinstance(field, models.JSONField):
        return JSON
    if isinstance(field, models.BinaryField):
        return BYTES
    raise AssertionError(f"no limit value for {field.model.__name__}.{field.name} ({type(field).__name__})")


def row(model, **given):
    """A saved row of `model`: `given`, the rest of its fields at their limits (auto fields left alone)."""
    values = {}
    for f in model._meta.concrete_fields:
        if f.primary_key and f.name not in given or f.name in given or getattr(f, "auto_now", False) \
                or getattr(f, "auto_now_add", False):
            continue
        assert not f.is_relation, f"{model.__name__}.{f.name}: give the related row"
        values[f.name] = limit(f)
    return model.objects.create(**{**values, **given})


def one_row_of_each() -> list[models.Model]:
    m = apps.get_model
    user = get_user_model().objects.create_user("ünïcode-user", password="x" * 20)
    ex = row(m("market", "Exchange"))
    inst = row(m("market", "Instrument"), exchange=ex)
    ghost = row(m("ghosts", "Ghost"), instrument=inst, enabled=True, status="degraded")
    signal = row(m("signals", "Signal"), ghost=ghost, instrument=inst, confidence=Decimal("1.0000"))
    position = row(m("trading", "Position"), ghost=ghost, instrument=inst, signal=signal)  # closed, with its exit
    order = row(m("trading", "Order"), position=position, instrument=inst)
    channel = row(m("alerts", "AlertChannel"), created_by=user)
    run = row(m("lab", "BacktestRun"), created_by=user, instrument=inst)
    lab_signal = row(m("lab", "BacktestSignal"), run=run)
    study = row(m("research", "Study"), created_by=user, instrument=inst)
    return [
        ex, inst, ghost, signal, position, order, channel, run, lab_signal, study,
        row(m("market", "Candle"), instrument=inst),
        row(m("market", "Candle"), instrument=inst, timeframe="5m", low=Decimal("1E-10"), open=Decimal("1E-10"),
            close=Decimal("1E-10"), volume=Decimal("1E-12"), trade_count=0),  # the smallest steps
        row(m("market", "FeedStatus"), instrument=inst),
        row(m("market", "LiquidationEvent"), instrument=inst),
        row(m("market", "LargeTrade"), instrument=inst),
        row(m("market", "HistoryDownload"), instrument=inst, requested_by=user),
        row(m("trading", "Fill"), order=order),
        row(m("trading", "RiskSettings"), id=1),
        row(m("trading", "KillSwitch"), id=1, changed_by=user),
        row(m("revenue", "RevenueTarget"), ghost=ghost),
        row(m("revenue", "PnlDay"), ghost=ghost, instrument=inst),
        row(m("revenue", "GhostLedger"), ghost=ghost),
        row(m("alerts", "AlertDelivery"), channel=channel),
        row(m("audit", "AuditEvent"), actor=user),
        row(m("lab", "BacktestTrade"), run=run, signal=lab_signal),
        row(m("lab", "SuccessCriteria"), updated_by=user),
        row(m("research", "Trial"), study=study),
    ]


@pytest.mark.skipif(not ON_POSTGRES, reason="PostgreSQL's limits (make test runs it when HFT_TEST_DATABASE_URL is "
                    "set): SQLite keeps decimals as floats and ignores max_length")
def test_a_row_of_every_model_at_its_field_limits_reads_back_unchanged():
    written = one_row_of_each()
    ours = {mdl for mdl in apps.get_models() if mdl.__module__.startswith("apps.")}
    assert ours - {type(o) for o in written} == set(), "a model without a row here"
    for obj in written:
        back = type(obj)._base_manager.get(pk=obj.pk)  # the base manager defers nothing
        for f in obj._meta.concrete_fields:
            mine, theirs = getattr(obj, f.attname), getattr(back, f.attname)
            if isinstance(f, models.BinaryField):
                mine, theirs = bytes(mine), bytes(theirs)  # PostgreSQL gives a memoryview
            assert theirs == mine, f"{type(obj).__name__}.{f.name}: wrote {mine!r:.80}, read {theirs!r:.80}"
            if isinstance(f, models.DateTimeField) and theirs is not None:
                assert theirs.utcoffset() is not None and theirs.utcoffset().total_seconds() == 0


def test_every_migration_runs_back_to_nothing_and_forward_again():
    ours = sorted({c.label for c in apps.get_app_configs() if c.name.startswith("apps.")})
    executor = MigrationExecutor(connection)
    leaves = {app: name for app, name in executor.loader.graph.leaf_nodes() if app in ours}
    assert leaves, "no migrations found"
    try:
        executor.migrate([(app, None) for app in leaves])  # every app to nothing, dependants first
        with connection.cursor() as cursor:
            left = [t for t in connection.introspection.table_names(cursor) if t.split("_")[0] in ours]
        assert left == [], f"tables left after migrating to zero: {left}"
    finally:
        MigrationExecutor(connection).migrate(list(leaves.items()))
    with connection.cursor() as cursor:
        tables = set(connection.introspection.table_names(cursor))
    assert {mdl._meta.db_table for mdl in apps.get_models() if mdl.__module__.startswith("apps.")} <= tables
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)  # models = migrations
