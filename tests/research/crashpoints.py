"""Test-only crash points of research trials, loaded ONLY by the worker subprocesses of
tests/research/test_worker.py through tests/research/crash_settings.py (production code has no hook). They
reuse `reach` of the e2e crash tests (tests/e2e/crashpoints.py): the first process to reach an armed point
disarms it, publishes "<point>:<pid>" and sleeps until the test SIGKILLs it.

- "trial_run": a claimed trial about to run through the engine (`services.run_trial`, wrapped here): the
  trial is "running" with its first attempt counted, nothing of its result exists;
- "trial_write": inside the transaction that stores a trial's result, at its LAST statement (the study's
  trials_done counter, after the trial row's UPDATE): SQL execute wrapper on every new connection.
"""

from django.apps import AppConfig

from tests.e2e.crashpoints import reach


def _wrapper(execute, sql, params, many, context):
    if sql.startswith('UPDATE "research_study"') and '"trials_done"' in sql:
        reach("trial_write")
    return execute(sql, params, many, context)


def _connected(sender, connection, **kwargs) -> None:
    if _wrapper not in connection.execute_wrappers:
        connection.execute_wrappers.append(_wrapper)


class ResearchCrashPointsConfig(AppConfig):
    name = "tests.research.crashpoints"
    label = "research_crashpoints"

    def ready(self) -> None:
        from django.db.backends.signals import connection_created

        from apps.research import services

        real = services.run_trial

        def run_trial(ctx, params, **kw):
            reach("trial_run")
            return real(ctx, params, **kw)

        services.run_trial = run_trial
        connection_created.connect(_connected, dispatch_uid="research-crashpoint-sql")
