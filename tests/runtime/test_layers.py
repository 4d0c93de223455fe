"""The runtime has one home (issue 13): apps.market holds market data and the feeds' adapters and imports
nothing from the apps above it (trading, ghosts, signals, revenue, the runtime itself); the pipeline, the feed
runner and the bar evaluation live in apps.runtime. Read with `ast` over the files, so an import inside a
function counts as much as one at the top."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ABOVE_MARKET = ("apps.trading", "apps.ghosts", "apps.signals", "apps.revenue", "apps.runtime", "apps.lab",
                "apps.research", "apps.dashboard")  # alerts: market/services alerts a feed going down


def imports_of(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}  # `from apps import trading` counts too
    return found


def offending(folder: Path, banned: tuple[str, ...], root: Path = ROOT) -> dict[str, list[str]]:
    bad = {}
    for path in sorted(folder.rglob("*.py")):
        if "migrations" in path.parts:
            continue
        hits = sorted(m for m in imports_of(path) if any(m == b or m.startswith(b + ".") for b in banned))
        if hits:
            bad[str(path.relative_to(root))] = hits
    return bad


def test_market_imports_nothing_from_trading_ghosts_or_the_runtime() -> None:
    assert offending(ROOT / "apps" / "market", ABOVE_MARKET) == {}


def test_the_check_sees_a_function_level_import_and_a_from_apps_import(tmp_path: Path) -> None:
    (tmp_path / "m.py").write_text("def f():\n    from apps.trading.execution import signal_execute\n")
    (tmp_path / "n.py").write_text("from apps import ghosts\n")
    (tmp_path / "ok.py").write_text("from apps.market.models import Candle\n")
    assert offending(tmp_path, ABOVE_MARKET, root=tmp_path) == {
        "m.py": ["apps.trading.execution", "apps.trading.execution.signal_execute"], "n.py": ["apps.ghosts"]}


def test_the_runtime_modules_live_in_apps_runtime() -> None:
    for name in ("pipeline", "evaluation", "manager", "tasks", "services"):
        assert (ROOT / "apps" / "runtime" / f"{name}.py").is_file()
    for gone in ("apps/market/pipeline.py", "apps/ghosts/evaluation.py", "apps/ghosts/tasks.py",
                 "apps/signals/manager.py"):
        assert not (ROOT / gone).exists(), gone
