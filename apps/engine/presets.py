"""Lab presets built from the engine's pieces: `textbook_setup()`, the textbook rules of issue 9 as a backtest.

Here and not in apps.engine.textbook: a preset needs the backtest's GhostSetup and BacktestConfig, the backtest
needs the registry, and the registry needs the ghost modules, so a preset inside a ghost module made an import
circle (issue 13, tests/test_import_circles.py).
"""

from apps.engine.backtest import BacktestConfig, GhostSetup, Sizing
from apps.engine.fills import FillModel
from apps.engine.risk import RiskLimits
from apps.engine.textbook import KIND, TEXTBOOK_FEE, TEXTBOOK_STAKE, TextbookFaderConfig


def textbook_setup(long_only: bool = False) -> tuple[list[GhostSetup], BacktestConfig]:
    """The textbook rules as a lab run: one textbook_fader ghost at its defaults (long_only as given) and a
    BacktestConfig with a fixed 1,000 stake, 0.1 % fees each side and no slippage, one open position, no
    practical cap on trades per day (10,000, the limit's maximum), no auto-disable, no kill switch, and no
    trend gate (no trend_filter ghost in the set). Start capital: the desk's default 10,000."""
    ghost = GhostSetup(ghost_id=1, name="textbook", kind=KIND, config=TextbookFaderConfig(long_only=long_only))
    cfg = BacktestConfig(
        fill_model=FillModel(taker_fee=TEXTBOOK_FEE, maker_fee=TEXTBOOK_FEE, slippage_bps=0.0),
        limits=RiskLimits(max_open_positions=1, max_trades_per_day=10_000),
        sizing=Sizing(mode="stake", stake=TEXTBOOK_STAKE),
        auto_disable=False,
        kill_switch=False,
    )
    return [ghost], cfg
