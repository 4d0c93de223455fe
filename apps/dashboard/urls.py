from django.urls import path

from apps.dashboard import (
    views,
    views_alerts,
    views_equity,
    views_history,
    views_instruments,
    views_positions,
    views_risk,
    views_trades,
)

app_name = "dashboard"

urlpatterns = [
    path("", views.overview, name="overview"),
    path("ghosts/", views.ghosts_page, name="ghosts"),
    path("ghosts/<int:ghost_id>/toggle/", views.ghost_toggle, name="ghost-toggle"),
    path("ghosts/<int:ghost_id>/params/", views.ghost_params, name="ghost-params"),
    path("ghosts/<int:ghost_id>/auto-disable/", views_risk.ghost_auto_disable, name="ghost-auto-disable"),
    path("signals/<int:signal_id>/", views_risk.signal_detail, name="signal"),
    path("positions/<int:position_id>/close/", views_positions.position_close_view, name="position-close"),
    path("trades/", views_trades.trades_page_view, name="trades"),
    path("trades.csv", views_trades.trades_csv, name="trades-csv"),
    path("targets/", views.targets_page, name="targets"),
    path("equity/", views_equity.equity_page, name="equity"),
    path("risk/", views_risk.risk_page, name="risk"),
    path("risk/kill-switch/trip/", views_risk.kill_switch_trip_view, name="kill-switch-trip"),
    path("risk/kill-switch/reset/", views_risk.kill_switch_reset_view, name="kill-switch-reset"),
    path("audit/", views.audit_page, name="audit"),
    path("history/", views_history.history_page, name="history"),
    path("instruments/", views_instruments.instruments_page, name="instruments"),
    path("instruments/markets/", views_instruments.markets_load, name="markets-load"),
    path("instruments/<int:instrument_id>/feed/", views_instruments.instrument_feed, name="instrument-feed"),
    path("instruments/<int:instrument_id>/delete/", views_instruments.instrument_delete_page,
         name="instrument-delete"),
    path("instruments/ghosts/", views_instruments.ghost_instance_add, name="ghost-instance-add"),
    path("instruments/ghosts/<int:ghost_id>/delete/", views_instruments.ghost_instance_delete,
         name="ghost-instance-delete"),
    path("alerts/", views_alerts.alerts_page, name="alerts"),
    path("alerts/<int:channel_id>/edit/", views_alerts.alert_channel_edit, name="alert-channel-edit"),
    path("alerts/<int:channel_id>/toggle/", views_alerts.alert_channel_toggle, name="alert-channel-toggle"),
    path("alerts/test/", views_alerts.alert_test, name="alert-test"),
    path("state.json", views.state_json, name="state"),
    path("vendor/plotly.min.js", views.plotly_js, name="plotly-js"),
]
