"""The throwaway desk several benchmarks run on: a temporary RUN_DIR holding its own SQLite file, a real
redis-server on a free port, and the desk's settings pointed at both (DEBUG on, so no keys are needed)."""

import os
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def throwaway_desk(**env: str) -> Iterator[Path]:
    """Yield the RUN_DIR; `env` adds settings (e.g. HFT_LIVE_TRADING="1"). Redis is stopped on the way out."""
    from tests.conftest import free_port, redis_binary

    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        redis = subprocess.Popen([redis_binary(), "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                                  "--appendonly", "no", "--dir", tmp], stdout=subprocess.DEVNULL)
        try:
            os.environ.update({"SQLITE_PATH": str(Path(tmp) / "bench.sqlite3"), "RUN_DIR": tmp, "DEBUG": "1",
                               "REDIS_URL": f"redis://127.0.0.1:{port}/0", "DJANGO_SETTINGS_MODULE": "hftweb.settings",
                               **env})
            os.environ.pop("DATABASE_URL", None)
            yield Path(tmp)
        finally:
            redis.terminate()
            redis.wait()
