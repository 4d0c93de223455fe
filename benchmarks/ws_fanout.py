"""Push -> browser latency with N desk viewers (issue 13, fan-out).

A throwaway desk (own Redis and SQLite, see wsbench.py), the web server as `make run` starts it, N logged-in viewer
websockets, and a pusher process that calls apps.common.realtime.send_now (what a Celery task does) RATE times a
second to the `ghosts` group every socket joins. Each event carries its wall-clock send time; each client records
arrival - send. Prints p50/p95/p99/max per N, the frames delivered, the pusher's cost per send_now call, the web
processes' CPU, and the load average.

    .venv/bin/python benchmarks/ws_fanout.py                      # N = 1, 100, 500 at 4 pushes/s, 20 s each
    .venv/bin/python benchmarks/ws_fanout.py --viewers 500 --server uvicorn:2
    .venv/bin/python benchmarks/ws_fanout.py --code /tmp/before   # a `git worktree` of an older commit
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from wsbench import PY, ROOT, Clients, Desk, cpu_seconds, load, pct  # noqa: E402

PUSHER = r"""
import json, sys, time
import django
django.setup()
from apps.common.realtime import send_now
rate, seconds, group = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
send_now(group, {"type": "bench.warmup"})  # connections made before the clock starts
costs = []
t0 = time.monotonic()
for i in range(int(rate * seconds)):
    delay = t0 + i / rate - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    c0 = time.perf_counter()
    send_now(group, {"type": "bench.ping", "seq": i, "t": time.time(), "pad": "x" * 200})
    costs.append(time.perf_counter() - c0)
print(json.dumps(costs))
"""


async def run_one(desk: Desk, url: str, keys: list[str], rate: float, seconds: float, warmup_s: float) -> dict:
    lat: list[float] = []
    got = [0]

    def on_frame(i: int, now: float, frame: str) -> None:
        ev = json.loads(frame)
        if ev.get("type") == "bench.ping":
            got[0] += 1
            if ev["seq"] >= warmup_s * rate:
                lat.append((now - ev["t"]) * 1000)

    clients = Clients(url, keys, on_frame)
    connect_s = await clients.open()
    pids = desk.web_pids()
    cpu0, me0 = cpu_seconds(pids), cpu_seconds([os.getpid()])
    pusher = await asyncio.create_subprocess_exec(PY, "-c", PUSHER, str(rate), str(seconds), "ghosts",
                                                  cwd=desk.code, env=desk.env, stdout=subprocess.PIPE)
    out, _ = await pusher.communicate()
    await asyncio.sleep(2)  # stragglers
    cpu, me = cpu_seconds(pids) - cpu0, cpu_seconds([os.getpid()]) - me0
    costs = [c * 1000 for c in json.loads(out.decode().strip().splitlines()[-1])]
    await clients.close()
    expected = int(rate * seconds) * len(keys)
    return {"viewers": len(keys), "connect_s": connect_s, "p50": pct(lat, 50), "p95": pct(lat, 95),
            "p99": pct(lat, 99), "max": max(lat, default=float("nan")), "delivered": got[0], "expected": expected,
            "closed": clients.closed, "send_now_p50_ms": pct(costs, 50), "send_now_mean_ms": sum(costs) / len(costs),
            "web_cpu_pct": 100 * cpu / (seconds + 2), "client_cpu_pct": 100 * me / (seconds + 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--viewers", default="1,100,500", help="comma-separated N (default 1,100,500)")
    ap.add_argument("--rate", type=float, default=4.0, help="pushes per second (default 4)")
    ap.add_argument("--seconds", type=float, default=20.0, help="push for this long per N (default 20)")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds of pushes left out of the percentiles")
    ap.add_argument("--server", default=os.environ.get("HFT_WEB", "daphne"),
                    help="daphne | daphne:N | uvicorn:N (hftweb.devrun.web_specs; default $HFT_WEB or daphne)")
    ap.add_argument("--code", type=Path, default=ROOT, help="checkout to measure (default: this one)")
    args = ap.parse_args()
    try:
        import uvloop

        uvloop.install()  # the clients' own overhead, kept small
    except ImportError:
        pass
    ns = [int(n) for n in args.viewers.split(",")]
    desk = Desk(code=args.code.resolve())
    try:
        keys = desk.setup(max(ns))
        url = desk.serve(args.server)
        head = subprocess.run(["git", "-C", str(desk.code), "log", "-1", "--format=%h"], capture_output=True,
                              text=True).stdout.strip()
        print(f"ws_fanout: server {args.server}, code {desk.code} @ {head}, {args.rate:g} pushes/s for "
              f"{args.seconds:g} s per N; {load()}", flush=True)
        for n in ns:
            r = asyncio.run(run_one(desk, url, keys[:n], args.rate, args.seconds, args.warmup))
            print(f"  N={r['viewers']:>4}: push->client p50 {r['p50']:7.1f} ms  p95 {r['p95']:7.1f}  "
                  f"p99 {r['p99']:7.1f}  max {r['max']:7.1f}  delivered {r['delivered']}/{r['expected']}  "
                  f"closed {r['closed']}  send_now p50 {r['send_now_p50_ms']:.2f} ms (mean "
                  f"{r['send_now_mean_ms']:.2f})  web CPU {r['web_cpu_pct']:.0f}% clients {r['client_cpu_pct']:.0f}%  "
                  f"connect {r['connect_s']:.1f} s  "
                  f"{load()}", flush=True)
            time.sleep(1)
    finally:
        desk.stop()


if __name__ == "__main__":
    main()
