"""Fill, fee and slippage model: one per exchange, shared by backtests and paper trading.

The prototype filled at the signal bar's close, charged a flat 0.2 % and, in its headline result,
forgot the entry fee (prototype-notes §0.4-0.5). Here every fill goes through one FillModel, so a
backtest and the paper account pay the same price for the same decision.

Conventions:
- `side` passed to `fill_price` is the side of the ORDER: +1 buys, -1 sells. Opening a long buys (+1);
  closing it sells (-1), so for exits pass the closing side, i.e. `-position_side`. Slippage is always
  adverse: a buy pays up, a sell receives less.
- Fees are charged on entry AND exit, on the filled notional (price x quantity), as a fraction.
- Market-type orders (entries at the next open, stops, time exits) pay the taker fee and slippage;
  `exit_fill` keeps targets at the target price (a resting limit fills at its own price).
"""

import dataclasses
import math

from apps.engine.types import check_range


@dataclasses.dataclass(frozen=True)
class FillModel:
    """taker_fee / maker_fee: fractions of notional (0.001 = 0.1 %); slippage_bps: adverse basis points.

    The default 5 bps slippage is the prototype's entry slippage (`price * 1.0005`).
    """

    taker_fee: float = 0.001
    maker_fee: float = 0.001
    slippage_bps: float = 5.0

    def __post_init__(self) -> None:
        check_range("fill_model", "taker_fee", self.taker_fee, 0, 0.05, hi_open=True,
                    unit="fraction of notional")
        check_range("fill_model", "maker_fee", self.maker_fee, -0.01, 0.05, hi_open=True,
                    unit="fraction of notional; negative is a rebate")
        check_range("fill_model", "slippage_bps", self.slippage_bps, 0, 1000, hi_open=True,
                    unit="basis points")

    def fill_price(self, side: int, ref_price: float) -> float:
        """Price a market order of `side` (+1 buy, -1 sell) gets at reference `ref_price`.

        For an exit pass the CLOSING side (-1 to close a long, +1 to close a short).
        """
        if side not in (1, -1):
            raise ValueError(f"side must be +1 (buy) or -1 (sell), got {side!r}")
        if not (math.isfinite(ref_price) and ref_price > 0):
            raise ValueError(f"reference price must be finite and > 0, got {ref_price!r}")
        return ref_price * (1.0 + side * self.slippage_bps / 10_000.0)

    def fee(self, notional: float, maker: bool = False) -> float:
        """Fee in quote currency on a fill of `notional` (sign ignored); taker unless `maker`."""
        return abs(notional) * (self.maker_fee if maker else self.taker_fee)

    def entry_fill(self, position_side: int, ref_price: float) -> float:
        """Entry at the next bar's open: a market order in the position's direction."""
        return self.fill_price(position_side, ref_price)

    def exit_fill(self, position_side: int, ref_price: float, reason: str) -> float:
        """Exit price for a position of `position_side` leaving at `ref_price` for `reason`.

        "target" fills at the target (a resting limit order); "end_of_data" is a mark at the last close,
        not a trade, so no slippage; everything else (stop, time, manual) is a market order closing the
        position and pays slippage.
        """
        if reason in ("target", "end_of_data"):
            return ref_price
        return self.fill_price(-position_side, ref_price)


# Base-tier (VIP 0 / regular user, no token discount) spot and futures fees as published by each
# exchange; check the schedule before going live. Keyed by the ccxt exchange id (Exchange.code).
FILL_MODELS: dict[str, FillModel] = {
    "binance": FillModel(taker_fee=0.001, maker_fee=0.001),          # Binance spot: 0.10 % / 0.10 %
    "binanceusdm": FillModel(taker_fee=0.0005, maker_fee=0.0002),    # Binance USDT-M futures: 0.05 % / 0.02 %
    "okx": FillModel(taker_fee=0.001, maker_fee=0.0008),             # OKX spot: 0.10 % taker / 0.08 % maker
    "kraken": FillModel(taker_fee=0.004, maker_fee=0.0025),          # Kraken spot: 0.40 % / 0.25 %
    "bybit": FillModel(taker_fee=0.001, maker_fee=0.001),            # Bybit spot: 0.10 % / 0.10 %
}
DEFAULT_EXCHANGE = "binance"


def fill_model_for(exchange_code: str | None) -> FillModel:
    """The fill model for a ccxt exchange id; Binance spot for unknown codes (the desk's default venue)."""
    return FILL_MODELS.get((exchange_code or "").lower(), FILL_MODELS[DEFAULT_EXCHANGE])
