"""Test-only crash points of the lab run, loaded ONLY by the worker subprocesses of tests/lab/test_worker.py
through tests/lab/crash_settings.py (production code has no hook): they reuse `reach` of the e2e crash tests
(tests/e2e/crashpoints.py: the first process to reach an armed point disarms it, publishes "<point>:<pid>"
and sleeps inside its open transaction until the test SIGKILLs it).

A point is a save the run makes anyway (post_save of BacktestRun):
- "lab_walking": the run's row saved with stage "walking" (the stage change's heartbeat transaction), i.e.
  mid-run: bars loaded, ghosts evaluated, the walk about to start;
- "lab_done": the row saved with status "done": the LAST write of the results transaction, after every
  signal and trade row was inserted and before the commit.
"""

from django.apps import AppConfig

from tests.e2e.crashpoints import reach


def _run_saved(sender, instance, created, **kwargs) -> None:
    if instance.status == "done":
        reach("lab_done")
    elif instance.status == "running" and instance.stage == "walking":
        reach("lab_walking")


class LabCrashPointsConfig(AppConfig):
    name = "tests.lab.crashpoints"
    label = "lab_crashpoints"

    def ready(self) -> None:
        from django.db.models.signals import post_save

        from apps.lab.models import BacktestRun

        post_save.connect(_run_saved, sender=BacktestRun, dispatch_uid="lab-crashpoint-run")
