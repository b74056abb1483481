from django.urls import path

from portal.runs import views

app_name = "runs"

urlpatterns = [
    path("<int:run_id>/", views.run_detail, name="detail"),
    path("<int:run_id>/cancel/", views.run_cancel, name="cancel"),
    path("<int:run_id>/steps/<int:step_id>/retry/", views.step_retry, name="step-retry"),
    path("<int:run_id>/steps/<int:step_id>/skip/", views.step_skip, name="step-skip"),
    path("<int:run_id>/steps/<int:step_id>/decide/", views.step_decide, name="step-decide"),
]
