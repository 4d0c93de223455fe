"""What the local Binance stand-ins (spot: tests/trading/fake_binance.py, USDⓈ-M: tests/fakes/binance_usdm.py)
share: a threaded HTTP/1.1 JSON server on a free loopback port that hands every request to the fake's
`route(method, path, query, headers)`, and Binance's signed-request check (X-MBX-APIKEY header, `timestamp` and
`signature` present, signature = HMAC-SHA256 of the query before `&signature=` with the test secret: what ccxt
computes, so a passing check proves the secret reached the request and nothing else did).

The two APIs word their errors differently; a subclass sets them in `SIGNING_ERRORS`."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

API_KEY = "test-api-key-0123456789"
API_SECRET = "test-secret-abcdefghijklmnop"


class BinanceJsonServer:
    """Base of a fake: `with Fake(...) as fake:` serves until the block ends."""

    # (code, msg) per failure: wrong key, no timestamp, no signature, bad signature.
    SIGNING_ERRORS: dict[str, tuple[int, str]] = {
        "key": (-2014, "API-key format invalid."),
        "timestamp": (-1102, "Mandatory parameter 'timestamp' was not sent, was empty/null, or malformed."),
        "signature": (-1102, "Mandatory parameter 'signature' was not sent, was empty/null, or malformed."),
        "bad": (-1022, "Signature for this request is not valid."),
    }
    # POST bodies only, or a POST's query string when the body is empty (the futures API accepts both).
    POST_QUERY_FALLBACK = False

    def __init__(self) -> None:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _handle(self, method: str) -> None:
                url = urlparse(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode() if length else ""
                if method in ("GET", "DELETE"):
                    query = url.query
                else:
                    query = (body or url.query) if fake.POST_QUERY_FALLBACK else body
                try:
                    status, payload = fake.route(method, url.path, query, self.headers)
                except Exception as exc:  # a bug in the fake must be visible, not a hung client
                    status, payload = 500, {"code": -1000, "msg": f"fake error: {exc!r}"}
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._handle("GET")

            def do_POST(self):
                self._handle("POST")

            def do_DELETE(self):
                self._handle("DELETE")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def route(self, method: str, path: str, query: str, headers) -> tuple[int, object]:
        raise NotImplementedError

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _check_signed(self, query: str, params: dict, headers) -> dict | None:
        """None when the request is signed as Binance wants, else Binance's error body."""
        def error(kind: str) -> dict:
            code, msg = self.SIGNING_ERRORS[kind]
            return {"code": code, "msg": msg}

        if headers.get("X-MBX-APIKEY") != API_KEY:
            return error("key")
        if "timestamp" not in params:
            return error("timestamp")
        if "signature" not in params:
            return error("signature")
        signed_part = query[: query.rindex("&signature=")]
        expected = hmac.new(API_SECRET.encode(), signed_part.encode(), hashlib.sha256).hexdigest()
        if params["signature"] != expected:
            return error("bad")
        return None
