from django.urls import path

from apps.lab import views, views_desk

app_name = "lab"

urlpatterns = [
    path("", views.runs_page, name="runs"),
    path("coverage.json", views.coverage_json, name="coverage"),
    path("runs/<int:run_id>/", views.run_detail, name="run"),
    path("runs/<int:run_id>/progress.json", views.run_progress, name="run-progress"),
    path("runs/<int:run_id>/cancel/", views.run_cancel, name="run-cancel"),
    path("runs/<int:run_id>/price.json", views.run_price, name="run-price"),
    path("runs/<int:run_id>/trades/", views.run_trades, name="run-trades"),
    path("runs/<int:run_id>/trades.csv", views.run_trades_csv, name="run-trades-csv"),
    path("runs/<int:run_id>/signals/<int:signal_id>/", views.run_signal, name="run-signal"),
    path("compare/", views.compare_page, name="compare"),
    path("criteria/", views.criteria_page, name="criteria"),
    path("desk/", views_desk.desk_compare_page, name="desk-compare"),
    path("desk/<int:run_id>/", views_desk.desk_compare_run, name="desk-compare-run"),
]
