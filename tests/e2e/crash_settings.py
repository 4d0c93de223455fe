"""Settings of the crash-safety test's worker subprocesses ONLY (DJANGO_SETTINGS_MODULE in their environment):
the test settings plus the crash-point hooks of tests/e2e/crashpoints.py."""

from hftweb.settings_test import *  # noqa: F403

INSTALLED_APPS = [*INSTALLED_APPS, "tests.e2e.crashpoints.CrashPointsConfig"]  # noqa: F405
