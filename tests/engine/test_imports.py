"""The engine (and the pure market modules) import nothing from Django, Celery, Channels or ccxt.

Checked on the source with `ast`, so a forbidden import inside a function body is caught too, without
importing anything.
"""

import ast
from pathlib import Path

import pytest

from tests.datafiles import REPO_ROOT, _flush_redis, services_use_test_redis  # noqa: F401

FORBIDDEN = {"django", "celery", "ccxt", "channels"}
PURE_FILES = sorted((REPO_ROOT / "apps" / "engine").rglob("*.py")) + [
    REPO_ROOT / "apps" / "market" / "sim.py",
    REPO_ROOT / "apps" / "market" / "bar_builder.py",
]


def imported_roots(path: Path) -> set[tuple[str, int]]:
    """Top-level package names imported anywhere in the file, with line numbers."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {(alias.name.split(".")[0], node.lineno) for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add((node.module.split(".")[0], node.lineno))
        elif isinstance(node, ast.Call) and getattr(node.func, "id", "") == "__import__" and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                found.add((arg.value.split(".")[0], node.lineno))
    return found


@pytest.mark.parametrize("path", PURE_FILES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_pure_module_imports_no_framework(path: Path) -> None:
    bad = sorted((name, line) for name, line in imported_roots(path) if name in FORBIDDEN)
    assert not bad, f"{path.relative_to(REPO_ROOT)} imports {bad}; the engine must stay framework-free"


def test_scanner_catches_forbidden_imports(tmp_path: Path) -> None:
    """The scan itself works: a file importing django inside a function is flagged."""
    f = tmp_path / "x.py"
    f.write_text("import numpy\n\ndef f():\n    from django.db import models\n    import celery.app\n")
    assert {n for n, _ in imported_roots(f)} & FORBIDDEN == {"django", "celery"}


def test_engine_package_is_scanned() -> None:
    names = {p.name for p in PURE_FILES}
    assert {"spike_fader.py", "registry.py", "guard.py", "fills.py", "exits.py", "sizing.py", "bars.py",
            "types.py"} <= names
