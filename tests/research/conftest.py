"""Fixtures of the research tests: real 1m candles of the 90-day BTC/USDT file imported into the test database
(a 9-day slice: three 2-day-train / 1-day-test rolling folds fit, trials take ~30 ms), and study requests on it.

Synthetic candles for the planted-parameter test are built in test_planted.py itself."""

from datetime import UTC, datetime

import pytest

from tests.lab.conftest import SENSITIVE_FADER, import_real

START = datetime(2025, 6, 19, tzinfo=UTC)
END = datetime(2025, 6, 28, tzinfo=UTC)
DAYS = 9


@pytest.fixture
def btc9(db):
    """binance BTC/USDT with the real 1m candles of START..END (9 days)."""
    from apps.market.services import instrument_ensure

    inst = instrument_ensure(exchange_code="binance", symbol="BTC/USDT")
    assert import_real(inst, START, END) == DAYS * 1440
    return inst


def study_request(inst, **over) -> dict:
    """A small valid study: the sensitive spike fader, two of its params searched, rolling 3-day train /
    2-day test folds (3 folds), TPE seeded, 8 trials per fold in batches of 4, stake sizing (the trial's P&L
    does not depend on the stop distance the search moves)."""
    data = {
        "instrument_id": inst.pk, "start": START.isoformat(), "end": END.isoformat(),
        "target": "spike_fader", "params": dict(SENSITIVE_FADER),
        "space": [{"name": "spike_threshold_pct", "low": 0.5, "high": 1.5, "step": 0.05},
                  {"name": "take_profit_pct", "low": 0.2, "high": 0.45, "step": 0.05}],
        "objective": "net_pnl", "min_trades": 1, "scheme": "rolling", "train_days": 3, "test_days": 2,
        "sampler": "tpe", "seed": 7, "budget_trials": 8, "batch_size": 4,
        "sizing": {"mode": "stake", "stake": 1000}, "auto_disable": False, "kill_switch": False,
    }
    data.update(over)
    return data


@pytest.fixture(autouse=True)
def _fresh_process_cache():
    """Each test runs its trials like a fresh worker process: no study context (bars, runs) cached by an earlier
    test (row ids repeat between tests, and a study's fingerprint with them)."""
    from apps.research import services

    services._CONTEXTS.clear()
    yield
    services._CONTEXTS.clear()
