from django.urls import path

from onboarding import catalog_views, handoff_views, views

app_name = "onboarding"

urlpatterns = [
    path("", views.request_list, name="request-list"),
    path("mine/", views.request_mine, name="request-mine"),
    path("queue/", views.request_queue, name="request-queue"),
    path("drift/", views.drift_summary, name="drift-summary"),
    path("catalog/", catalog_views.catalog_list, name="catalog-list"),
    path("catalog/DATA_CATALOG.md", catalog_views.catalog_export, name="catalog-export"),
    path("new/", views.request_create, name="request-create"),
    path("DATA-<int:number>/", views.request_detail, name="request-detail"),
    path("DATA-<int:number>/edit/", views.request_edit, name="request-edit"),
    path("DATA-<int:number>/infer-schema/", views.schema_infer, name="schema-infer"),
    path("DATA-<int:number>/submit/", views.request_submit, name="request-submit"),
    path("DATA-<int:number>/samples/", views.sample_upload, name="sample-upload"),
    path(
        "DATA-<int:number>/samples/<int:sample_id>/delete/",
        views.sample_delete,
        name="sample-delete",
    ),
    path("DATA-<int:number>/samples/<int:sample_id>/mark/", views.sample_mark, name="sample-mark"),
    path("DATA-<int:number>/validate/", views.request_validate, name="request-validate"),
    path("DATA-<int:number>/validation/", views.request_validation, name="request-validation"),
    path("DATA-<int:number>/compare/", views.plan_compare, name="plan-compare"),
    path("DATA-<int:number>/compare/result/", views.plan_diff, name="plan-diff"),
    path("DATA-<int:number>/approve/", views.approval_grant, name="approval-grant"),
    path("DATA-<int:number>/rollout/", views.rollout_start, name="rollout-start"),
    path("DATA-<int:number>/rollout/panel/", views.rollout_panel, name="rollout-panel"),
    path("DATA-<int:number>/handoff/oncall/", handoff_views.handoff_oncall, name="handoff-oncall"),
    path("DATA-<int:number>/handoff/notify/", handoff_views.handoff_notify, name="handoff-notify"),
    path(
        "DATA-<int:number>/handoff/runbook/", handoff_views.handoff_runbook, name="handoff-runbook"
    ),
    path("DATA-<int:number>/handoff/review/", handoff_views.handoff_review, name="handoff-review"),
    path("DATA-<int:number>/handoff/undo/", handoff_views.handoff_undo, name="handoff-undo"),
    path("DATA-<int:number>/volume/", handoff_views.volume_measure, name="volume-measure"),
    path("DATA-<int:number>/volume/result/", handoff_views.volume_result, name="volume-result"),
    path("DATA-<int:number>/reject/", views.approval_reject, name="approval-reject"),
    path(
        "DATA-<int:number>/request-changes/",
        views.approval_request_changes,
        name="approval-request-changes",
    ),
]
