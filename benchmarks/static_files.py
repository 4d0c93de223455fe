"""Static files through WhiteNoise behind uvicorn, as make run serves them (issue 14, rough edges).

Usage: .venv/bin/python benchmarks/static_files.py [N]
Collects static/ into a temporary RUN_DIR (HFT_STATIC=collected, as devrun does), starts uvicorn with the real
settings, then GETs the desk's stylesheet and script N times each over one keep-alive connection: p50/p95 per
request, bytes on the wire with and without gzip, the Cache-Control sent; then the same in finders mode (the
tests' mode). Prints os.getloadavg() with every figure: the machine is shared.
"""

import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(port: int, path: str, n: int, encoding: str) -> tuple[float, float, int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    times, size, cache = [], 0, ""
    for _ in range(n):
        t = time.perf_counter()
        conn.request("GET", path, headers={"Accept-Encoding": encoding})
        r = conn.getresponse()
        body = r.read()
        times.append((time.perf_counter() - t) * 1000)
        assert r.status == 200, (path, r.status)
        size, cache = len(body), r.getheader("Cache-Control") or ""
    conn.close()
    q = statistics.quantiles(times, n=20)
    return statistics.median(times), q[18], size, cache


def run(mode: str, n: int) -> None:
    with tempfile.TemporaryDirectory() as run_dir:
        env = {**os.environ, "RUN_DIR": run_dir, "DJANGO_SETTINGS_MODULE": "hftweb.settings", "HFT_STATIC": mode,
               "SECRET_KEY": os.environ.get("SECRET_KEY", "benchmark-only-secret-key-not-for-production-0123456789"),
               "HFT_SECRETS_KEY": os.environ.get("HFT_SECRETS_KEY", Fernet.generate_key().decode())}
        if mode == "collected":
            subprocess.run([sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"], cwd=ROOT, env=env,
                           check=True)
        port = free_port()
        web = subprocess.Popen([str(BIN / "uvicorn"), "--port", str(port), "--lifespan", "off", "--no-access-log",
                                "hftweb.asgi:application"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        try:
            for _ in range(200):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    time.sleep(0.1)
            manifest = Path(run_dir) / "staticfiles" / "staticfiles.json"
            names = json.loads(manifest.read_text())["paths"] if manifest.is_file() else {}
            for name in ("css/desk.css", "js/desk.js"):
                path = "/static/" + names.get(name, name)  # the hashed name the pages link, when collected
                for enc in ("identity", "gzip"):
                    p50, p95, size, cache = measure(port, path, n, enc)
                    print(f"{mode:9} {path:36} {enc:8} p50 {p50:5.2f} ms  p95 {p95:5.2f} ms  {size:7,} B  "
                          f"Cache-Control: {cache}  load {os.getloadavg()[0]:.2f}")
        finally:
            web.terminate()
            web.wait()


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    for m in ("collected", "finders"):
        run(m, count)
