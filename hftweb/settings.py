"""hftweb settings: one module, complete on its own, driven by the environment.

Every variable is documented in README.md ("Configuration"). `hftweb.settings_test` only overrides.
"""

import os
import re
import warnings
from decimal import Decimal
from pathlib import Path

import dj_database_url
from cryptography.fernet import Fernet
from django.core.checks.security.base import (
    SECRET_KEY_INSECURE_PREFIX,
    SECRET_KEY_MIN_LENGTH,
    SECRET_KEY_MIN_UNIQUE_CHARACTERS,
)
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool = False) -> bool:
    return os.environ.get(name, "1" if default else "0").strip().lower() in {"1", "true", "yes", "on"}


DEBUG = env_bool("DEBUG")
_RUN_DIR_FOR_KEYS = Path(os.environ.get("RUN_DIR", BASE_DIR / ".run"))


def _key_from_run_dir(name: str) -> str:
    """A key `make run` generated into RUN_DIR, so `manage.py ...` in the same checkout works as the README writes
    it without exporting the key (the environment still wins; a server without the file still refuses to start)."""
    try:
        return (_RUN_DIR_FOR_KEYS / name).read_text().strip()
    except OSError:
        return ""


SECRET_KEY = os.environ.get("SECRET_KEY", "") or _key_from_run_dir("secret_key")
# Without DEBUG, refuse to start on a key `check --deploy` would call weak (security.W009, same numbers): sessions,
# CSRF tokens, password reset links and the login device cookies are all signed with it.
if not DEBUG and (
    len(SECRET_KEY.strip()) < SECRET_KEY_MIN_LENGTH
    or len(set(SECRET_KEY.strip())) < SECRET_KEY_MIN_UNIQUE_CHARACTERS
    or SECRET_KEY.strip().startswith(SECRET_KEY_INSECURE_PREFIX)
):
    raise ImproperlyConfigured(
        f"SECRET_KEY is unset or weak: without DEBUG=1 it must be at least {SECRET_KEY_MIN_LENGTH} characters, "
        f"{SECRET_KEY_MIN_UNIQUE_CHARACTERS} of them distinct, random (make run generates one in .run/; else: "
        "python -c 'import secrets; print(secrets.token_urlsafe(50))')")
if not SECRET_KEY.strip():
    SECRET_KEY = "insecure-debug-only-key"

# Project-local runtime folder (sqlite file, redis data, pidfile). Created here because a fresh
# clone has none and sqlite cannot create the parent directory.
RUN_DIR = Path(os.environ.get("RUN_DIR", BASE_DIR / ".run"))
RUN_DIR.mkdir(parents=True, exist_ok=True)

BIND_HOST = os.environ.get("HFT_BIND", "127.0.0.1")
ALLOWED_HOSTS = [h for h in os.environ.get("ALLOWED_HOSTS", "127.0.0.1,localhost").split(",") if h]
CSRF_TRUSTED_ORIGINS = [o for o in os.environ.get("CSRF_TRUSTED_ORIGINS", "").split(",") if o]

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "channels",
    "django_celery_beat",
    "apps.accounts",
    "apps.audit",
    "apps.market",
    "apps.ghosts",
    "apps.signals",
    "apps.trading",
    "apps.revenue",
    "apps.alerts",
    "apps.lab",
    "apps.research",
    "apps.runtime",
    "apps.dashboard",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",  # static files, before sessions/auth (STATIC_ROOT below)
    "csp.middleware.CSPMiddleware",  # Content-Security-Policy (CONTENT_SECURITY_POLICY below)
    "apps.accounts.middleware.CSPViewUpdatesMiddleware",  # ... widened for HFT_CSP_VIEW_UPDATES' views only
    "django_permissions_policy.PermissionsPolicyMiddleware",  # Permissions-Policy (PERMISSIONS_POLICY below)
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "hftweb.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "apps.dashboard.context_processors.desk",
            ],
        },
    }
]
WSGI_APPLICATION = "hftweb.wsgi.application"
ASGI_APPLICATION = "hftweb.asgi.application"

# SQLite in WAL mode by default (web, worker and beat write one file); DATABASE_URL switches (README "Configuration").
# A SQLite file gets the same options however it is named (SQLITE_PATH or DATABASE_URL=sqlite:///...): WAL, and
# IMMEDIATE transactions, so a transaction that reads and then writes holds the write lock from its start (two
# DEFERRED ones that both read first cannot both upgrade: one fails with "database is locked").
def _sqlite_database(path: str, options: dict | None = None) -> dict:
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": path,
        "OPTIONS": {
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            **(options or {}),
        },
        "TEST": {"NAME": str(RUN_DIR / "test-db.sqlite3")},
    }


# PostgreSQL: one connection per request or task, closed after it (CONN_MAX_AGE 0, Django's default). Daphne runs
# each request's view in a thread of its own, so a connection kept for reuse stayed open with a finished thread
# until garbage collection (Django's docs: no persistent connections under ASGI; tests/test_postgres_connections.py);
# Celery 5.7 closes every connection before and after each task whatever CONN_MAX_AGE says. No connection is ever
# reused, so there is nothing for CONN_HEALTH_CHECKS to check. A long task (a feed runner) keeps its connection while
# it runs: when the server ends it (restart, failover), the runner's next write fails, the feed shows the error and
# its task ends, and the supervisor starts it again on a new connection (seconds; tests/test_postgres_connections.py).
if os.environ.get("DATABASE_URL", "").strip():
    try:
        _db = dj_database_url.parse(os.environ["DATABASE_URL"].strip(), conn_max_age=0)
    except ValueError:  # dj_database_url.ParseError names neither the variable nor the fix; never echo the URL
        raise ImproperlyConfigured(
            "DATABASE_URL is not a valid URL (scheme://user:password@host:port/name): a password holding / # ? or % "
            "must be percent-encoded, or use letters and digits only (e.g. openssl rand -hex 24)") from None
    if _db["ENGINE"] == "django.db.backends.sqlite3":
        _db = _sqlite_database(_db["NAME"], _db.get("OPTIONS"))
    DATABASES = {"default": _db}
else:
    DATABASES = {"default": _sqlite_database(os.environ.get("SQLITE_PATH", str(RUN_DIR / "hftweb.sqlite3")))}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 10}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard:overview"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
# STATIC_ROOT: the Docker image collects into /app/staticfiles at build, outside RUN_DIR, so a volume over RUN_DIR
# cannot hide the collected files that HFT_STATIC=collected requires.
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT") or RUN_DIR / "staticfiles")
# Files served at the site's root: /favicon.ico, which browsers ask for even where a page names no icon (the admin).
WHITENOISE_ROOT = BASE_DIR / "webroot"
# Static files through WhiteNoise (issue 14, rough edges; it replaced a hand-written view). make run collects them
# first (devrun: collectstatic into STATIC_ROOT), then they are served with content-hashed names, gzip/brotli
# variants and a year's immutable cache. Without a collected manifest (the tests, a fresh manage.py command) the
# finders serve static/ under its plain names with a short cache, so nothing needs collecting first; HFT_STATIC=
# collected|finders forces either. A stale manifest in manifest mode only names the old hashes: make run rebuilds it.
_COLLECTED = (STATIC_ROOT / "staticfiles.json").is_file()
HFT_STATIC = os.environ.get("HFT_STATIC") or ("collected" if _COLLECTED else "finders")
if HFT_STATIC not in ("collected", "finders"):
    raise ImproperlyConfigured(f"HFT_STATIC must be collected or finders, not {HFT_STATIC[:40]!r}")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage" if HFT_STATIC == "collected"
                    else "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = HFT_STATIC == "finders"
if WHITENOISE_USE_FINDERS:  # STATIC_ROOT stays set for collectstatic; uncollected, WhiteNoise need not warn of it
    warnings.filterwarnings("ignore", message=f"No directory at: {re.escape(str(STATIC_ROOT))}")
# WhiteNoise (6.x) answers with a file's sync iterator; under ASGI Django reads it in a thread and warns on every
# static request. Static files are small and cached for a year by hashed name, so the warning is noise in the
# operator's log. The desk's own streams (CSV exports) are async iterators (apps/common/csv_stream.py); a sync one
# would still warn from anywhere but WhiteNoise's responses, which the filter cannot tell apart: keep it that way.
warnings.filterwarnings("ignore", message="StreamingHttpResponse must consume synchronous iterators",
                        module="django.core.handlers.asgi")

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
# channels-redis 4.3 waits for a socket's messages with a blocking BZPOPMIN of 5 s (its brpop_timeout); redis-py 8
# made the client's read timeout 5 s by default (it was None), so the read timed out first and Daphne closed every
# quiet websocket with 1011 every 5-6 s (django/channels_redis#422, redis/redis-py#4091). The read timeout must stay
# above the blocking pop; 15 s still notices a Redis that went silent without closing the connection.
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_timeout": 15, "socket_connect_timeout": 5}]},
    }
}
CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}

# Celery: queues per DESIGN §2. Feeds are long-running; prefetch 1 so a feed never hoards tasks.
CELERY_BROKER_URL = REDIS_URL
CELERY_RESULT_BACKEND = REDIS_URL
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A worker or beat that lost Redis retries for ever (Celery's default gives up after 100 tries): when Redis is back,
# the desk carries on (hftweb/celery.py: retries every 2 s at most, and the clean-up crash it used to exit with).
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
# A running acks_late task (a bar evaluation, a research trial) is left to finish when the connection drops (Celery
# 6 will cancel it by default); its ack is lost with the connection, so it is redelivered after the visibility
# timeout, and those tasks are idempotent.
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = False
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {
    "apps.market.tasks.*": {"queue": "feeds"},
    "apps.ghosts.tasks.*": {"queue": "ghosts"},
    # lab runs (minutes of CPU) on their own queue and worker, never in the way of feeds, ghosts or alerts
    "apps.lab.tasks.lab_run_task": {"queue": "research"},
    "apps.research.tasks.trial_task": {"queue": "research"},
    "apps.research.tasks.study_step_task": {"queue": "research"},
}
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# The default limits of tasks that set none of their own (a feed runner sets ten years: it runs as long as the desk).
# HFT_TASK_SOFT_TIME_LIMIT exists for tests/e2e/test_feed_time_limit.py, which cuts it to seconds.
CELERY_TASK_SOFT_TIME_LIMIT = int(os.environ.get("HFT_TASK_SOFT_TIME_LIMIT", "300"))
CELERY_TASK_TIME_LIMIT = CELERY_TASK_SOFT_TIME_LIMIT + 30
CELERY_RESULT_EXPIRES = 3600
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TIMEZONE = "UTC"
# A task message taken by a worker that then dies (SIGKILL, OOM, lost host) before acking it stays in Redis's
# unacked set for `visibility_timeout` seconds; then any worker's sweep (every 10 s with throttle 1) or the next
# worker start re-queues it. Kombu's default is one hour: a killed bar evaluation (acks_late) would wait that
# long. It must exceed the longest acks_late task (evaluate_bar: 60 s) and any countdown/ETA, or the message is
# delivered twice (our tasks are idempotent). The crash-safety test lowers it for its worker subprocesses.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": int(os.environ.get("HFT_BROKER_VISIBILITY_TIMEOUT", "120")),
    "unacked_restore_throttle": 1,
}

# Trading desk
# "sim", "live" (ccxt public data, paper trading) or "replay:<path>[@speed]". Unset, `make run` (devrun)
# probes api.binance.com for 3 s and sets "live" when it answers, else "sim"; elsewhere the default is "sim".
HFT_FEED = os.environ.get("HFT_FEED", "sim")
# Feeds an operator may run at once from the Instruments page: each feed runner holds one worker process for as long
# as it runs, and `make run`'s one worker has 3 (-c 3) shared by feeds, ghost evaluations and the default queue.
# Raise it together with the processes on the `feeds` queue (a feeds-only worker: celery worker -Q feeds -c N).
HFT_MAX_FEEDS = int(os.environ.get("HFT_MAX_FEEDS", "2"))
# It is stored as the feed's source (FeedStatus.source, 255 characters): longer, PostgreSQL refused the desk's setup
# with a DataError; a byte that is not UTF-8 (a file name's) reaches Python as a lone surrogate, which no database
# driver encodes. Refuse both here, saying which, rather than a traceback from the setup's first write.
_feed_shown = HFT_FEED[:80].encode("ascii", "backslashreplace").decode()  # printable whatever it holds
if len(HFT_FEED) > 255:
    raise ImproperlyConfigured(
        f"HFT_FEED is {len(HFT_FEED)} characters ('{_feed_shown[:40]}...'): at most 255 are stored; name a replay "
        "file by a shorter path (relative to MARKET_DATA_DIR or ../shared/data, e.g. replay:BTCUSDT-1m-2024-05.zip)")
if "\x00" in HFT_FEED or any("\ud800" <= ch <= "\udfff" for ch in HFT_FEED):
    raise ImproperlyConfigured(f"HFT_FEED '{_feed_shown}' holds a byte that is not UTF-8 (a file name's?): rename "
                               "the file, or name it by a path in UTF-8")
HFT_SIM_SEED = int(os.environ.get("HFT_SIM_SEED", "7"))
HFT_SIM_SPEED = float(os.environ.get("HFT_SIM_SPEED", "60"))
# Spike-process rate per simulated day; the default is apps.market.sim.CAL_SPIKES_PER_DAY (the calibrated market).
# 24 was the old lively demo: the per-minute std then runs x3.4 the calibration (issue 14).
HFT_SIM_SPIKES_PER_DAY = float(os.environ.get("HFT_SIM_SPIKES_PER_DAY", "0.05"))
HFT_REPLAY_SPEED = float(os.environ.get("HFT_REPLAY_SPEED", "60"))  # data seconds per wall second
# A replay with fewer bars stored before its first minute than the ghosts' warm-up downloads them first
# (apps.runtime.services.replay_warmup); off: the ghosts warm up on the file's own head.
HFT_REPLAY_WARMUP_DOWNLOAD = env_bool("HFT_REPLAY_WARMUP_DOWNLOAD", True)
HFT_BAR_GRACE_MS = int(os.environ.get("HFT_BAR_GRACE_MS", "2000"))  # late trades within this amend their bar
MARKET_DATA_DIR = os.environ.get("MARKET_DATA_DIR", "")  # where replay:<relative path> looks first
HFT_LIVE_TRADING = env_bool("HFT_LIVE_TRADING")
# Live orders go to the exchange's sandbox/testnet (ccxt set_sandbox_mode) unless HFT_LIVE_SANDBOX=0.
# Keys: HFT_<EXCHANGE>_API_KEY / HFT_<EXCHANGE>_SECRET, read only from the environment (apps/trading/live_client.py).
HFT_LIVE_SANDBOX = env_bool("HFT_LIVE_SANDBOX", True)
# Extra ccxt constructor config for live clients, merged after sandbox mode (tests point `urls` at a local
# fake exchange). Not read from the environment; keys placed here are ignored.
HFT_LIVE_CCXT_CONFIG: dict = {}
HFT_START_CAPITAL = Decimal(os.environ.get("HFT_START_CAPITAL", "10000"))
# More instruments at start besides the desk's one (issue 11): "binance:ETH/USDT,binance:SOL/USDT" (exchange:symbol,
# ccxt ids and unified symbols), each with a feed of HFT_FEED's kind (sim or live; sim beside a replay) and one
# ghost of every desk kind (apps.runtime.services.desk_ensure).
HFT_INSTRUMENTS = [s.strip() for s in os.environ.get("HFT_INSTRUMENTS", "").split(",") if s.strip()]
# Ghost plug-ins (issue 11): a folder of ghost modules loaded at every start (apps.ghosts.plugins), relative to the
# working directory; unset, only installed packages' `hftweb.ghosts` entry points. The repository's example: plugins/.
HFT_GHOSTS_DIR = os.environ.get("HFT_GHOSTS_DIR", "")
# A replay of COIN-M files (BTCUSD_PERP...) runs on Binance COIN-M's inverse contract, quoted in USD
# (apps.market.replay_feed.replay_market); everything else in USDT unless said.
HFT_QUOTE_CURRENCY = os.environ.get("HFT_QUOTE_CURRENCY") or (
    "USD" if HFT_FEED.startswith("replay:") and re.search(r"USD_(PERP|\d{6})(?![A-Z0-9])", HFT_FEED) else "USDT")
# A running lab run whose heartbeat (every 0.5 s) is older than this is marked failed by the sweeper.
HFT_LAB_STALE_S = float(os.environ.get("HFT_LAB_STALE_S", "60"))
# A research trial running longer than this (a trial takes seconds), or a study without progress for as long,
# is dispatched again by the sweeper (apps.research.services.studies_sweep).
HFT_RESEARCH_STALE_S = float(os.environ.get("HFT_RESEARCH_STALE_S", "120"))

# Alerts (apps/alerts, README "Alerts"). Channel secrets come from the environment at send time
# (HFT_ALERT_TELEGRAM_TOKEN + HFT_ALERT_TELEGRAM_CHAT_ID, HFT_ALERT_DISCORD_WEBHOOK, HFT_ALERT_WEBHOOK_URL) and
# are deliberately not settings: Django's debug page masks *TOKEN* settings but not *_WEBHOOK / *_URL.
HFT_ALERT_TELEGRAM_API = os.environ.get("HFT_ALERT_TELEGRAM_API", "https://api.telegram.org")
HFT_ALERT_TIMEOUT = float(os.environ.get("HFT_ALERT_TIMEOUT", "5"))  # seconds per HTTP attempt
HFT_ALERT_MAX_RETRIES = int(os.environ.get("HFT_ALERT_MAX_RETRIES", "3"))  # retries after the first attempt
HFT_ALERT_RETRY_BACKOFF = float(os.environ.get("HFT_ALERT_RETRY_BACKOFF", "2"))  # s; doubles per retry
HFT_ALERT_RETRY_BACKOFF_MAX = float(os.environ.get("HFT_ALERT_RETRY_BACKOFF_MAX", "60"))  # s
HFT_ALERT_FEED_COOLDOWN = int(os.environ.get("HFT_ALERT_FEED_COOLDOWN", "300"))  # s between feed-down alerts per feed
# chat ids allowed to send operator commands to the alert bot (comma-separated); empty: commands off
HFT_TELEGRAM_COMMAND_CHATS = os.environ.get("HFT_TELEGRAM_COMMAND_CHATS", "")
# HFT_SECRETS_KEY encrypts alert channel secrets (bot tokens, webhook URLs) at rest (apps/alerts/crypto.py): one
# Fernet key, or several comma-separated newest first (the first encrypts, all decrypt: rotation, `manage.py
# alert_secrets_rotate`). Its own key, not derived from SECRET_KEY: changing one never loses the other.
_secrets_keys = os.environ.get("HFT_SECRETS_KEY", "") or _key_from_run_dir("hft_secrets_key")
HFT_SECRETS_KEYS = [k.strip() for k in _secrets_keys.split(",") if k.strip()]
if not HFT_SECRETS_KEYS:
    if not DEBUG:
        raise ImproperlyConfigured(
            "HFT_SECRETS_KEY must be set unless DEBUG=1: it encrypts the alert channels' secrets (make run "
            "generates one in .run/; else: python -c "
            "'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')")
    HFT_SECRETS_KEYS = ["aW5zZWN1cmUtZGVidWctb25seS1hbGVydHMta2V5ISE="]  # "insecure-debug-only-alerts-key!!"
for _n, _key in enumerate(HFT_SECRETS_KEYS, 1):
    try:
        Fernet(_key)
    except ValueError:
        raise ImproperlyConfigured(f"HFT_SECRETS_KEY: key {_n} of {len(HFT_SECRETS_KEYS)} is not a Fernet key "
                                   "(32 url-safe base64-encoded bytes)") from None

# Login throttling (apps/accounts/throttle.py, README "Login throttling"), counted in the cache (Redis).
# Wrong passwords per username from browsers without its device cookie, and per device cookie, per window:
HFT_LOGIN_MAX_ATTEMPTS = int(os.environ.get("HFT_LOGIN_MAX_ATTEMPTS", "5"))
HFT_LOGIN_WINDOW_SECONDS = int(os.environ.get("HFT_LOGIN_WINDOW_SECONDS", "300"))
# Per client IP: free wrong passwords, then one check per back-off (s) that doubles per wrong password.
HFT_LOGIN_IP_FREE_ATTEMPTS = int(os.environ.get("HFT_LOGIN_IP_FREE_ATTEMPTS", "10"))
HFT_LOGIN_IP_BACKOFF_BASE = int(os.environ.get("HFT_LOGIN_IP_BACKOFF_BASE", "1"))
HFT_LOGIN_IP_BACKOFF_MAX = int(os.environ.get("HFT_LOGIN_IP_BACKOFF_MAX", "900"))
HFT_LOGIN_IP_FORGET_SECONDS = int(os.environ.get("HFT_LOGIN_IP_FORGET_SECONDS", "3600"))  # quiet time that resets it
HFT_LOGIN_DEVICE_DAYS = int(os.environ.get("HFT_LOGIN_DEVICE_DAYS", "90"))  # device cookie lifetime
# Reverse proxies (IPs or CIDRs, comma-separated) whose X-Forwarded-For names the client. Empty: the header
# is ignored and the client IP is the TCP peer. Set it to exactly the proxies in front of the desk.
HFT_TRUSTED_PROXIES = [p.strip() for p in os.environ.get("HFT_TRUSTED_PROXIES", "").split(",") if p.strip()]
AUTHENTICATION_BACKENDS = ["apps.accounts.backends.ThrottledModelBackend"]

# Content-Security-Policy (django-csp; Django 5.2 has none built in). Scripts only from our own files: the
# templates hold no inline script or handler (JSON data blocks from json_script are not run), which
# tests/accounts/test_security_headers.py keeps true. Styles also allow 'unsafe-inline' because plotly.js
# injects its own <style> rules at run time (modebar, hover labels; it ships no stylesheet we could serve) and
# the progress bars' widths are style attributes. img-src data:/blob: for plotly's image export. connect-src 'self'
# covers the desk's fetches and its same-origin websocket (ws:/wss:).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:", "blob:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}
# The views whose pages need more, by view name (apps.accounts.middleware). The study page draws plotly's
# parallel coordinates with WebGL through regl, which compiles its draw calls with Function(): without
# 'unsafe-eval' the chart stays empty, without an error. That page only.
HFT_CSP_VIEW_UPDATES = {"research:study": {"script-src": ["'unsafe-eval'"]}}
# Permissions-Policy (django-permissions-policy): the desk uses none of these browser features.
PERMISSIONS_POLICY = {
    f: []
    for f in ("accelerometer", "autoplay", "camera", "display-capture", "geolocation", "gyroscope", "magnetometer",
              "microphone", "midi", "payment", "publickey-credentials-get", "screen-wake-lock", "usb",
              "xr-spatial-tracking")
}
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"  # Django's default, stated: no other window keeps a handle
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False  # the page's JS reads the token from the form field, not the cookie
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
# Behind TLS in production: HFT_HTTPS=1 turns on the settings `check --deploy` asks for.
if env_bool("HFT_HTTPS"):
    SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = True
    SECURE_SSL_REDIRECT = env_bool("HFT_SSL_REDIRECT", True)
    SECURE_HSTS_SECONDS = int(os.environ.get("HFT_HSTS_SECONDS", "31536000"))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "filters": {"forbidden_one_line": {"()": "hftweb.logfilters.ForbiddenWithoutTraceback"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "django.request": {"filters": ["forbidden_one_line"]},  # a 403 logs one line, not a traceback
        # Routine celery chatter (every task received/succeeded, every beat send: ~4 lines a second at
        # HFT_SIM_SPEED=120) hidden; a task's failure or retry (WARNING/ERROR) and the apps' own INFO stay.
        # LOG_CELERY_TASKS=1 brings the per-task lines back when debugging.
        **({} if env_bool("LOG_CELERY_TASKS") else {
            "celery.app.trace": {"level": "WARNING"},
            "celery.worker.strategy": {"level": "WARNING"},
            "celery.beat": {"level": "WARNING"},
        }),
    },
}

# Task modules autodiscover_tasks does not find (it imports each app's tasks.py only).
CELERY_IMPORTS = ("apps.market.feed_watch", "apps.market.markets_tasks", "apps.alerts.telegram_commands")
# Beat (DatabaseScheduler imports these on start). `expires` so a backlog never replays stale ticks.
CELERY_BEAT_SCHEDULE = {
    "supervise-feeds": {"task": "apps.market.tasks.supervise_feeds", "schedule": 10.0,
                        "options": {"expires": 9, "queue": "default"}},
    "risk-watch": {"task": "apps.trading.tasks.risk_watch_task", "schedule": 10.0,
                   "options": {"expires": 9, "queue": "default"}},
    # every live position's protective stop on the exchange, between reconciliations (apps/trading/live_watch.py)
    "protect-watch": {"task": "apps.trading.tasks.protect_watch_task", "schedule": 30.0,
                      "options": {"expires": 25, "queue": "default"}},
    "lab-runs-sweep": {"task": "apps.lab.tasks.lab_runs_sweep_task", "schedule": 30.0,
                       "options": {"expires": 29, "queue": "default"}},
    "research-sweep": {"task": "apps.research.tasks.studies_sweep_task", "schedule": 30.0,
                       "options": {"expires": 29, "queue": "default"}},
    # pushes a feed going down (its runner's lock lapsed) and coming back to open pages (apps/market/feed_watch.py)
    "feed-watch": {"task": "apps.market.feed_watch.feed_watch_task", "schedule": 5.0,
                   "options": {"expires": 4, "queue": "default"}},
    # operators' Telegram commands: a short getUpdates poll of the alert bot (apps/alerts/telegram_commands.py)
    "telegram-commands": {"task": "apps.alerts.telegram_commands.poll_telegram_commands", "schedule": 5.0,
                          "options": {"expires": 4, "queue": "default"}},
}
