"""Settings of tests/research/test_worker.py's crash-test worker subprocesses ONLY: the test settings plus the
research crash points of tests/research/crashpoints.py."""

from hftweb.settings_test import *  # noqa: F403

INSTALLED_APPS = [*INSTALLED_APPS, "tests.research.crashpoints.ResearchCrashPointsConfig"]  # noqa: F405
