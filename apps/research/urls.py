from django.urls import path

from apps.research import views

app_name = "research"

urlpatterns = [
    path("", views.studies_page, name="studies"),
    path("folds.json", views.folds_json, name="folds"),
    path("<int:study_id>/", views.study_detail, name="study"),
    path("<int:study_id>/progress.json", views.study_progress, name="study-progress"),
    path("<int:study_id>/pause/", views.study_pause, name="study-pause"),
    path("<int:study_id>/resume/", views.study_resume, name="study-resume"),
    path("<int:study_id>/cancel/", views.study_cancel, name="study-cancel"),
    path("<int:study_id>/apply/", views.study_apply, name="study-apply"),
    path("<int:study_id>/trials/", views.study_trials, name="study-trials"),
    path("<int:study_id>/trials/<int:trial_id>/", views.trial_detail, name="trial"),
]
