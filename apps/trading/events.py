"""Typed browser payloads for fills and P&L."""

from typing import Literal, TypedDict

from apps.trading.models import Fill, Position

PORTFOLIO_GROUP = "portfolio"


class TradeFilled(TypedDict):
    type: Literal["trade.filled"]
    position_id: int
    ghost_id: int
    ghost: str
    purpose: str  # entry | exit
    side: str  # position side: long | short
    price: float
    quantity: float
    fee: float
    ts: str
    stop: float
    target: float
    exit_reason: str
    net_pnl: float | None


class PnlUpdated(TypedDict):
    type: Literal["pnl.updated"]
    equity: float
    today_pnl: float
    realised_today: float
    unrealised: float
    open_positions: int
    day: str
    ghosts: dict[str, float]  # ghost id -> P&L in its target period


def trade_payload(position: Position, fill: Fill, purpose: str) -> TradeFilled:
    net = position.net_pnl
    return TradeFilled(
        type="trade.filled",
        position_id=position.pk,
        ghost_id=position.ghost_id,
        ghost=position.ghost.name,
        purpose=purpose,
        side=position.side,
        price=float(fill.price),
        quantity=float(fill.quantity),
        fee=float(fill.fee),
        ts=fill.filled_at.isoformat(),
        stop=float(position.stop),
        target=float(position.target),
        exit_reason=position.exit_reason,
        net_pnl=None if net is None else float(net),
    )
