"""Discover ghost plug-ins and register the ones that pass the guards (issue 11, "Your own ghosts").

Two sources, read at every process start (`GhostsConfig.ready`: web, workers, beat, manage.py):

- the folder `settings.HFT_GHOSTS_DIR` (unset: none): every ``*.py`` file and every package (a folder with
  ``__init__.py``) in it, except names starting with ``_`` or ``test_`` (a generated ghost's test sits beside it);
  each is imported as ``hftweb_ghosts.<name>``;
- the entry-point group ``hftweb.ghosts`` of the installed packages: each entry names a module following the
  contract or a GhostSpec (``[project.entry-points."hftweb.ghosts"] my_ghost = "my_pkg.my_ghost"``).

Each plug-in goes through `apps.engine.plugins.check_spec` on the synthetic series; one that passes is registered
in the engine registry (with its evaluate wrapped so bad drafts raise at run time), one that fails, or does not
import, is kept in `refused()` with the reason for the Ghosts page. Nothing here can stop the process: any error
is the plug-in's refusal.

No database work (it runs in AppConfig.ready); plug-in ghosts get their Ghost rows from
`apps.ghosts.services.plugin_ghosts_ensure`, disabled until an operator enables them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import importlib.util
import logging
import os
import signal
import sys
import threading
import time
import traceback
import types
from pathlib import Path
from typing import Any

from apps.engine import registry
from apps.engine.plugins import GhostReport, check_spec, checked_evaluate, load_time_bars, spec_from_object

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "hftweb.ghosts"
# The load-time guards of one plug-in take 0.1-3 s (benchmarks/plugins_load.py); past this it is refused as hung.
LOAD_TIMEOUT_S = float(os.environ.get("HFT_GHOST_LOAD_TIMEOUT", "30"))
MODULE_PREFIX = "hftweb_ghosts"


@dataclasses.dataclass(frozen=True)
class PluginRecord:
    """One plug-in found at load: where from, its kind (None when it did not import), and the verdict."""

    source: str  # the file, or "entry point <name> = <value>"
    kind: str | None
    title: str
    ok: bool
    reason: str  # "" when registered; else the first failure, one line
    detail: str = ""  # the full text (traceback, the check's detail)
    report: GhostReport | None = None
    seconds: float = 0.0


_LOADED: dict[str, PluginRecord] = {}
_REFUSED: list[PluginRecord] = []


def loaded() -> list[PluginRecord]:
    """The registered plug-ins of this process."""
    return list(_LOADED.values())


def refused() -> list[PluginRecord]:
    """The plug-ins found but refused at load, with the reason."""
    return list(_REFUSED)


def plugins_load(*, folder: str | Path | None = None, entry_points: bool = True) -> list[PluginRecord]:
    """(Re)load the plug-ins: the previous plug-in kinds are unregistered first. `folder` defaults to
    settings.HFT_GHOSTS_DIR. Returns every record, registered and refused."""
    if folder is None:
        from django.conf import settings

        folder = getattr(settings, "HFT_GHOSTS_DIR", "") or None
    for kind in list(_LOADED):
        registry.unregister(kind)
    _LOADED.clear()
    _REFUSED.clear()
    candidates: list[tuple[str, Any]] = []  # (source, loader) pairs, loaders called under a guard
    if folder:
        candidates += _folder_candidates(Path(folder))
    if entry_points:
        candidates += _entry_point_candidates()
    records = [_load_one(source, load) for source, load in candidates]
    for r in records:
        if not r.ok:
            log.warning("ghost plug-in %s refused: %s", r.source, r.reason)
    return records


def _folder_candidates(folder: Path) -> list[tuple[str, Any]]:
    if not folder.is_dir():
        return [(str(folder), _raiser(f"HFT_GHOSTS_DIR {folder} is not a folder"))]
    out: list[tuple[str, Any]] = []
    for path in sorted(folder.iterdir()):
        name = path.stem if path.suffix == ".py" else path.name
        if name.startswith(("_", "test_", ".")):
            continue
        if path.is_file() and path.suffix == ".py":
            out.append((str(path), lambda p=path: import_plugin_file(p, p)))
        elif path.is_dir() and (path / "__init__.py").is_file():
            out.append((str(path), lambda p=path: import_plugin_file(p / "__init__.py", p)))
    return out


def _entry_point_candidates() -> list[tuple[str, Any]]:
    try:
        eps = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    except Exception:  # a broken installed distribution must not stop the desk
        log.exception("reading the %s entry points failed", ENTRY_POINT_GROUP)
        return []
    return [(f"entry point {ep.name} = {ep.value}", ep.load) for ep in eps]


def _raiser(text: str):
    def fail() -> Any:
        raise FileNotFoundError(text)
    return fail


def import_plugin_file(path: Path, origin: Path) -> Any:
    """Import a plug-in file as hftweb_ghosts.<name> (registered in sys.modules: dataclass type hints, pickling
    a config to a lab worker and tracebacks all look the module up by that name)."""
    name = f"{MODULE_PREFIX}.{origin.stem if origin.suffix == '.py' else origin.name}"
    spec = importlib.util.spec_from_file_location(
        name, path, submodule_search_locations=[str(origin)] if path.name == "__init__.py" else None)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    if MODULE_PREFIX not in sys.modules:  # the parent, so a package plug-in's relative imports resolve
        parent = types.ModuleType(MODULE_PREFIX)
        parent.__path__ = []
        sys.modules[MODULE_PREFIX] = parent
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def _load_one(source: str, load: Any) -> PluginRecord:
    t0 = time.perf_counter()
    try:
        with _time_limit(LOAD_TIMEOUT_S):
            obj = load()
    except LoadTimeout:
        return _refuse(PluginRecord(source, None, "", False, f"too slow: importing it took over {LOAD_TIMEOUT_S:g} s",
                                    "", None, time.perf_counter() - t0))
    except Exception:
        tb = traceback.format_exc()
        return _refuse(PluginRecord(source, None, "", False, f"does not import: {_last(tb)}", tb, None,
                                    time.perf_counter() - t0))
    kind = getattr(obj, "kind", None) or getattr(obj, "KIND", None)
    kind = kind if isinstance(kind, str) else None
    title = str(getattr(obj, "title", None) or getattr(obj, "TITLE", "") or "")
    try:
        spec = spec_from_object(obj, origin=source)
        with _time_limit(LOAD_TIMEOUT_S):
            report = check_spec(spec, load_time_bars(spec), taken=registry.GHOSTS)
    except LoadTimeout:
        return _refuse(PluginRecord(source, kind, title, False,
                                    f"too slow: the load-time guards took over {LOAD_TIMEOUT_S:g} s (a hung or "
                                    "very slow evaluate; the desk evaluates every bar)", "", None,
                                    time.perf_counter() - t0))
    except Exception:  # the guards themselves failed on this plug-in (e.g. its Config raised oddly)
        tb = traceback.format_exc()
        return _refuse(PluginRecord(source, kind, title, False, _last(tb), tb, None, time.perf_counter() - t0))
    seconds = time.perf_counter() - t0
    if not report.ok:
        reason = report.reason or "refused"
        return _refuse(PluginRecord(source, spec.kind, str(spec.title), False, reason.splitlines()[0][:500],
                                    reason, report, seconds))
    registry.register(dataclasses.replace(spec, evaluate=checked_evaluate(spec)))
    record = PluginRecord(source, spec.kind, spec.title, True, "", "", report, seconds)
    _LOADED[spec.kind] = record
    log.info("ghost plug-in %s (%s) registered from %s: guards passed in %.2f s", spec.kind, spec.title,
             source, seconds)
    return record


class LoadTimeout(BaseException):
    """Raised into a plug-in's code by the load-time limit; a BaseException, so the plug-in's own `except
    Exception` cannot swallow it."""


@contextlib.contextmanager
def _time_limit(seconds: float):
    """SIGALRM after `seconds` raises LoadTimeout in the running code, so a plug-in that hangs cannot hold up the
    desk's start. Only in the main thread (where every start-up runs; signals cannot interrupt another thread);
    elsewhere no limit. A timer set before is restored."""
    if seconds <= 0 or threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGALRM"):
        yield
        return

    def expire(signum, frame):
        raise LoadTimeout()

    previous = signal.signal(signal.SIGALRM, expire)
    old_delay, old_interval = signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if old_delay:
            signal.setitimer(signal.ITIMER_REAL, old_delay, old_interval)


def _refuse(record: PluginRecord) -> PluginRecord:
    _REFUSED.append(record)
    return record


def _last(tb: str) -> str:
    lines = [s for s in tb.strip().splitlines() if s.strip()]
    return (lines[-1].strip() if lines else "error")[:500]
