"""Test-only crash points, loaded ONLY by the worker subprocesses of tests/e2e/test_crash_safety.py through
tests/e2e/crash_settings.py (never by the desk's settings): production code has no hook at all.

A crash point is a model save the evaluation path makes anyway (Django's post_save signal):
- "signal":    a Signal row was just inserted, inside signal_record's transaction (the evaluation);
- "position":  the Position insert inside signal_execute_paper's transaction (the fill);
- "fill":      the entry Fill insert, same transaction, before the signal is marked taken;
- "taken":     the signal's fate set to TAKEN: the last write before that transaction commits;
- "committed": after the fill's transaction committed, before the task returns and is acked.

The test arms one point by name in Redis. The first process that reaches it disarms it (atomic DELETE),
publishes "<point>:<pid>" and then sleeps, holding its transaction open, until the test SIGKILLs it.
The retry after the restart finds nothing armed and runs through.
"""

import os
import time

from django.apps import AppConfig

ARM_KEY = "crashpoint:arm"
HIT_KEY = "crashpoint:hit"
HOLD_SECONDS = 120  # far beyond the test's kill; if the test died, the task time limit (60 s) ends it


def reach(point: str) -> None:
    import redis

    r = redis.Redis.from_url(os.environ["REDIS_URL"])
    if r.get(ARM_KEY) != point.encode() or r.delete(ARM_KEY) != 1:
        return
    r.set(HIT_KEY, f"{point}:{os.getpid()}")
    time.sleep(HOLD_SECONDS)


def _signal_saved(sender, instance, created, **kwargs) -> None:
    if created:
        reach("signal")
    elif instance.fate == "taken":
        reach("taken")


def _position_saved(sender, instance, created, **kwargs) -> None:
    if created:
        reach("position")


def _fill_saved(sender, instance, created, **kwargs) -> None:
    from django.db import transaction

    if created:
        reach("fill")
        transaction.on_commit(lambda: reach("committed"))


class CrashPointsConfig(AppConfig):
    name = "tests.e2e.crashpoints"
    label = "crashpoints"

    def ready(self) -> None:
        from django.db.models.signals import post_save

        from apps.signals.models import Signal
        from apps.trading.models import Fill, Position

        post_save.connect(_signal_saved, sender=Signal, dispatch_uid="crashpoint-signal")
        post_save.connect(_position_saved, sender=Position, dispatch_uid="crashpoint-position")
        post_save.connect(_fill_saved, sender=Fill, dispatch_uid="crashpoint-fill")
