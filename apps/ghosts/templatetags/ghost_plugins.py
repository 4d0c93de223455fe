"""The Ghosts page's list of refused plug-ins, without a change to the page's view (a template tag reads the
loader's records of this process: the web process loaded the same folder as the workers)."""

from django import template

from apps.ghosts.plugins import PluginRecord, refused

register = template.Library()


@register.simple_tag
def refused_plugins() -> list[PluginRecord]:
    """The plug-ins found at start but refused, with the reason (apps.ghosts.plugins)."""
    return refused()


@register.filter
def is_plugin_kind(kind: str) -> bool:
    """True for a ghost kind that a plug-in registered (not built in)."""
    from apps.engine.registry import is_plugin

    return is_plugin(kind)
