"""The lot rules (apps.engine.lots) of an instrument, from its stored ccxt facts (paper) or from the exchange's
market dict (live: what the exchange enforces right now)."""

from decimal import Decimal

from apps.engine.lots import LotRules
from apps.market.models import Instrument


def instrument_label(instrument: Instrument) -> str:
    return f"{instrument.symbol} on {instrument.exchange.code}"


def lot_rules(instrument: Instrument) -> LotRules:
    """The instrument's rules as stored (apps.market.markets.market_facts); NULL fields are not enforced."""
    return LotRules(
        label=instrument_label(instrument),
        quote=instrument.quote,
        amount_step=instrument.amount_step,
        price_tick=instrument.price_tick,
        min_amount=instrument.min_amount or None,
        min_notional=instrument.min_notional or None,
        contract_size=instrument.contract_size or Decimal(1),
        contract=instrument.market_type != Instrument.MarketType.SPOT,
        inverse=instrument.inverse,
    )


def lot_rules_from_market(market: dict, *, label: str, precision_mode: int | None = None) -> LotRules:
    """The rules of a ccxt market dict (the live exchange's own), through the same reading as the stored facts."""
    from apps.market.markets import TICK_SIZE, market_facts

    facts = market_facts(market, precision_mode=TICK_SIZE if precision_mode is None else precision_mode)
    return LotRules(
        label=label,
        quote=facts["quote"],
        amount_step=facts["amount_step"],
        price_tick=facts["price_tick"],
        min_amount=facts["min_amount"] or None,
        min_notional=facts["min_notional"] or None,
        contract_size=facts["contract_size"],
        contract=facts["market_type"] != "spot",
        inverse=facts["inverse"],
    )
