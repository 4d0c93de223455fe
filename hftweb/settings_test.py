"""Test overrides only. Redis/Channels/Celery URLs are redirected by tests/conftest.py at session start."""

import os

os.environ.setdefault("SECRET_KEY", "test-only-secret-key-not-for-production")

from .settings import *  # noqa: E402,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
HFT_LOGIN_MAX_ATTEMPTS = 5
