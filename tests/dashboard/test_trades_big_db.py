"""benchmarks/build_big_db.py (the issue-13 database the page, P&L and fan-out benchmarks share) builds a ledger that
obeys the models: a small build, read back with sqlite3, has the asked-for counts, every foreign key resolves, each
position's fees are its fills' fees, its gross is (exit - entry) x qty x side, one taken signal per position and at
most one open position per ghost, and the desk's clock (the feeds' last trade) is the data's end."""

import sqlite3
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> sqlite3.Connection:
    path = tmp_path_factory.mktemp("bigdb") / "small.sqlite3"
    env_run = tmp_path_factory.mktemp("bigdb-run")
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "build_big_db.py"), str(path), "--positions", "600", "--ghosts", "6",
         "--days", "3", "--audit", "40", "--candle-days", "1", "--end", "2026-03-10"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={"PATH": "/usr/bin:/bin", "RUN_DIR": str(env_run), "DEBUG": "1"},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "positions 600" in out.stdout
    db = sqlite3.connect(path)
    yield db
    db.close()


def one(db: sqlite3.Connection, sql: str):
    return db.execute(sql).fetchone()[0]


def test_counts_and_keys(built):
    assert one(built, "SELECT COUNT(*) FROM trading_position") == 600
    assert one(built, "SELECT COUNT(*) FROM signals_signal WHERE fate = 'taken'") == 600
    opened = one(built, "SELECT COUNT(*) FROM trading_position WHERE status = 'open'")
    assert opened == 3  # the newest position of every other ghost
    assert one(built, "SELECT COUNT(*) FROM trading_order") == 1200 - opened
    assert one(built, "SELECT COUNT(*) FROM trading_fill") == 1200 - opened
    assert one(built, "SELECT COUNT(*) FROM audit_auditevent") >= 40
    assert one(built, "SELECT COUNT(*) FROM ghosts_ghost") == 6
    assert built.execute("PRAGMA foreign_key_check").fetchall() == []
    assert one(built, "PRAGMA integrity_check") == "ok"
    assert one(built, "SELECT MAX(last_trade_at) FROM market_feedstatus") == "2026-03-09 23:59:59"


def test_ledger_adds_up(built):
    rows = built.execute(
        """SELECT p.id, p.side, p.status, p.quantity, p.entry_price, p.exit_price, p.gross_pnl, p.fees,
                  (SELECT SUM(f.fee) FROM trading_fill f JOIN trading_order o ON o.id = f.order_id
                   WHERE o.position_id = p.id),
                  (SELECT COUNT(*) FROM trading_position q WHERE q.ghost_id = p.ghost_id AND q.status = 'open')
           FROM trading_position p"""
    ).fetchall()
    wins = 0
    for pk, side, status, qty, entry, exit_price, gross, fees, fill_fees, open_count in rows:
        assert open_count <= 1
        assert abs(Decimal(str(fees)) - Decimal(str(fill_fees))) <= Decimal("0.00000002"), pk
        if status == "closed":
            sign = 1 if side == "long" else -1
            expect = (Decimal(str(exit_price)) - Decimal(str(entry))) * Decimal(str(qty)) * sign
            assert abs(Decimal(str(gross)) - expect) <= Decimal("0.00000002"), pk
            wins += gross > fees
        else:
            assert gross is None and exit_price is None
    assert 0.2 < wins / len(rows) < 0.6  # a believable desk: some wins, more losses after fees
