"""Settings of tests/lab/test_worker.py's crash-test worker subprocesses ONLY: the test settings plus the lab
crash points of tests/lab/crashpoints.py."""

from hftweb.settings_test import *  # noqa: F403

INSTALLED_APPS = [*INSTALLED_APPS, "tests.lab.crashpoints.LabCrashPointsConfig"]  # noqa: F405
