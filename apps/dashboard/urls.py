from django.urls import path

from apps.dashboard import views, views_history

app_name = "dashboard"

urlpatterns = [
    path("", views.overview, name="overview"),
    path("ghosts/", views.ghosts_page, name="ghosts"),
    path("ghosts/<int:ghost_id>/toggle/", views.ghost_toggle, name="ghost-toggle"),
    path("ghosts/<int:ghost_id>/params/", views.ghost_params, name="ghost-params"),
    path("trades/", views.trades_page, name="trades"),
    path("trades.csv", views.trades_csv, name="trades-csv"),
    path("targets/", views.targets_page, name="targets"),
    path("audit/", views.audit_page, name="audit"),
    path("history/", views_history.history_page, name="history"),
    path("state.json", views.state_json, name="state"),
    path("vendor/plotly.min.js", views.plotly_js, name="plotly-js"),
    # Daphne alone (DEBUG off) serves no static files; see views.static_asset.
    path("static/<path:path>", views.static_asset, name="static-asset"),
]
