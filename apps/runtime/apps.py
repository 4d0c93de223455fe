from django.apps import AppConfig


class RuntimeConfig(AppConfig):
    """The desk's runtime: feed -> bars -> ghosts -> manager -> execution, shared by sim, live and replay.

    No models of its own: it wires the data apps (market, ghosts, signals, trading, revenue) together, and
    they import nothing from it.
    """

    name = "apps.runtime"
    label = "runtime"
