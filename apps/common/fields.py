"""Decimal field shapes used for money and quantities (DESIGN §3: Decimal in the database)."""

from django.db import models


def price_field(**kw) -> models.DecimalField:
    # BTC at 1e6 with 10 decimals for sub-cent alts: 24 digits.
    return models.DecimalField(max_digits=24, decimal_places=10, **kw)


def qty_field(**kw) -> models.DecimalField:
    return models.DecimalField(max_digits=28, decimal_places=12, **kw)


def money_field(**kw) -> models.DecimalField:
    # Quote-currency amounts (P&L, fees, equity): 8 decimals keeps fee rounding exact to the cent.
    return models.DecimalField(max_digits=24, decimal_places=8, **kw)
