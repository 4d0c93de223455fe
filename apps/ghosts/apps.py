import logging

from django.apps import AppConfig

log = logging.getLogger(__name__)


class GhostsConfig(AppConfig):
    name = "apps.ghosts"
    label = "ghosts"

    def ready(self) -> None:
        # Ghost plug-ins (HFT_GHOSTS_DIR, the hftweb.ghosts entry points) are registered in every process before
        # it evaluates, lists or backtests a ghost; a broken one is refused, never a failed start.
        from apps.ghosts.plugins import plugins_load

        try:
            plugins_load()
        except Exception:
            log.exception("loading ghost plug-ins failed; the built-in ghosts run on")
