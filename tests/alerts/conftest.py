"""Fixtures for the alert tests: a recording HTTP endpoint on 127.0.0.1, a closed port, eager Celery.

The endpoint is a real HTTP server in a thread (the network edge): it records every request (method, path,
headers, JSON body, arrival time on the monotonic clock) and answers from a script of status codes, the
last one repeating, so a test can say "500, 500, then 200".
"""

import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


@dataclass
class Received:
    method: str
    path: str
    headers: dict
    body: dict
    at: float  # time.monotonic() on arrival


@dataclass
class Endpoint:
    url: str
    script: list[int] = field(default_factory=lambda: [200])
    retry_after: str | None = None  # sent with 429/503 answers when set
    # the body of a failure answer, from the full URL requested (an endpoint that echoes its URL); None: scripted
    error_body: Callable[[str], str] | None = None
    requests: list[Received] = field(default_factory=list)

    def answer(self) -> int:
        return self.script.pop(0) if len(self.script) > 1 else self.script[0]

    def wait_for(self, n: int, timeout: float = 30.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.requests) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.requests


@pytest.fixture
def endpoint():
    state = Endpoint(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's naming)
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            state.requests.append(Received("POST", self.path, dict(self.headers), json.loads(raw or b"{}"),
                                           time.monotonic()))
            code = state.answer()
            out = b'{"ok":true}' if code < 300 else b'{"ok":false,"description":"scripted failure"}'
            if code >= 300 and state.error_body:
                out = state.error_body(state.url + self.path).encode()
            self.send_response(code)
            if state.retry_after and code in (429, 503):
                self.send_header("Retry-After", state.retry_after)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture
def closed_port() -> int:
    """A loopback port with nobody listening: connecting is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # released on close; nothing else binds it within a test


@pytest.fixture
def eager():
    """Run deliver_alert inline (retries too: Celery's eager apply re-applies at once, ignoring countdown)."""
    from hftweb.celery import app

    old = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = old



@pytest.fixture(autouse=True)
def _offline(no_internet):
    """No alert test may reach the real Telegram or Discord: only 127.0.0.1 resolves."""
