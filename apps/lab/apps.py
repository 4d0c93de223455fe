from django.apps import AppConfig


class LabConfig(AppConfig):
    """The research lab (DESIGN §3 calls it `backtests/`): stored full-system backtest runs over history."""

    name = "apps.lab"
    label = "lab"
