from django.apps import AppConfig


class GhostsConfig(AppConfig):
    name = "apps.ghosts"
    label = "ghosts"
