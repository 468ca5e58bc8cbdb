from django.urls import path

from . import views

urlpatterns = [
    path("", views.overview, name="overview"),
    path("data/", views.data, name="data"),
    path("data/upload/", views.upload, name="upload"),
    path("data/template.csv", views.template_csv, name="template_csv"),
    path("data/<int:pk>/", views.batch_detail, name="batch_detail"),
    path("data/<int:pk>/release/", views.batch_release, name="batch_release"),
    path("data/<int:pk>/discard/", views.batch_discard, name="batch_discard"),
    path("models/", views.models, name="models"),
    path("models/compare/", views.model_compare, name="model_compare"),
    path("models/<str:version>/", views.model_detail, name="model_detail"),
    path("models/<str:version>/activate/", views.model_rollback, name="model_rollback"),
    path("runs/", views.runs, name="runs"),
    path("runs/start/", views.run_start, name="run_start"),
    path("runs/<int:pk>/", views.run_detail, name="run_detail"),
    path("deployments/", views.deployments, name="deployments"),
    path("predict/", views.predict, name="predict"),
    path("predict/batch/", views.predict_batch, name="predict_batch"),
    path("predict/jobs/<int:pk>/", views.scoring_job, name="scoring_job"),
    path("predict/jobs/<int:pk>/result.csv", views.scoring_result, name="scoring_result"),
    path("status/", views.status, name="status"),
    path("status/schedule/", views.schedule_change, name="schedule_change"),
    path("healthz", views.healthz, name="healthz"),
]
