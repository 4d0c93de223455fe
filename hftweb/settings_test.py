"""Test overrides only. Redis/Channels/Celery URLs are redirected by tests/conftest.py at session start."""

import os

# At least 50 characters, 5 distinct: settings refuse a weak key without DEBUG, and the tests run without it.
os.environ.setdefault("SECRET_KEY", "test-only-secret-key-not-for-production-0123456789abcdef")
# The tests' own alert-secrets key (base64 of "test-only-alerts-key-not-a-real!"), forced so that a developer's
# real key in the shell is never used by a test; subprocesses (Daphne, workers) inherit it.
TEST_SECRETS_KEY = "dGVzdC1vbmx5LWFsZXJ0cy1rZXktbm90LWEtcmVhbCE="
os.environ["HFT_SECRETS_KEY"] = TEST_SECRETS_KEY
# Static files from static/ through the finders (no collectstatic before a test, no stale manifest of a run dir).
os.environ["HFT_STATIC"] = "finders"

from .settings import *  # noqa: E402,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
HFT_LOGIN_MAX_ATTEMPTS = 5
# A replay in a test warms up on what the test stored, never on a download (tests that test it turn it on).
HFT_REPLAY_WARMUP_DOWNLOAD = False
# Nothing is collected in a test (HFT_STATIC=finders above): no STATIC_ROOT for WhiteNoise to look for and warn of
# under pytest, which resets the settings' warning filters per test.
STATIC_ROOT = None
