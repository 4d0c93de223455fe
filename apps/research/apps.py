from django.apps import AppConfig


class ResearchConfig(AppConfig):
    """Parameter search with walk-forward validation (issue 10): studies of optuna trials on the `research`
    queue, each trial one run of the pure engine (apps.engine.trial), scored per fold."""

    name = "apps.research"
    label = "research"
