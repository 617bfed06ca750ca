from django.urls import re_path

from monitoring.api.backtests import (
    BacktestDifferencesView,
    BacktestView,
    DeploymentPreflightView,
    RuleSetBacktestsView,
)
from monitoring.api.views import (
    CompensationCompleteView,
    CompensationReplayView,
    CompensationView,
    DeploymentComparisonView,
    DeploymentHealthView,
    DeploymentMetricsView,
    DeploymentReadinessView,
    DeploymentShadowDifferencesView,
    DeploymentShadowView,
    DismissRegressionView,
    SchedulerJobsView,
)
from monitoring.api.webhooks import (
    TriggerDetailView,
    TriggerFireView,
    TriggerListView,
    WebhookDeliveriesView,
    WebhookDetailView,
    WebhookListView,
    WebhookRedeliverView,
)

urlpatterns = [
    re_path(r"^deployments/(?P<deployment_id>[^/]+)/metrics/?$", DeploymentMetricsView.as_view()),
    re_path(
        r"^deployments/(?P<deployment_id>[^/]+)/comparison/?$", DeploymentComparisonView.as_view()
    ),
    re_path(r"^deployments/(?P<deployment_id>[^/]+)/health/?$", DeploymentHealthView.as_view()),
    re_path(r"^deployments/(?P<deployment_id>[^/]+)/shadow/?$", DeploymentShadowView.as_view()),
    re_path(
        r"^deployments/(?P<deployment_id>[^/]+)/shadow/differences/?$",
        DeploymentShadowDifferencesView.as_view(),
    ),
    re_path(
        r"^deployments/(?P<deployment_id>[^/]+)/readiness/?$", DeploymentReadinessView.as_view()
    ),
    re_path(r"^deployments/(?P<deployment_id>[^/]+)/compensation/?$", CompensationView.as_view()),
    re_path(
        r"^deployments/(?P<deployment_id>[^/]+)/compensation/complete/?$",
        CompensationCompleteView.as_view(),
    ),
    re_path(
        r"^deployments/(?P<deployment_id>[^/]+)/compensation/replay/?$",
        CompensationReplayView.as_view(),
    ),
    re_path(
        r"^deployments/(?P<deployment_id>[^/]+)/dismiss-regression/?$",
        DismissRegressionView.as_view(),
    ),
    re_path(r"^scheduler/jobs/?$", SchedulerJobsView.as_view()),
    # Webhooks and triggers (SPEC 10.4).
    re_path(r"^webhooks/?$", WebhookListView.as_view()),
    re_path(r"^webhooks/(?P<webhook_id>[^/]+)/?$", WebhookDetailView.as_view()),
    re_path(r"^webhooks/(?P<webhook_id>[^/]+)/deliveries/?$", WebhookDeliveriesView.as_view()),
    re_path(
        r"^webhooks/(?P<webhook_id>[^/]+)/deliveries/(?P<delivery_id>[^/]+)/redeliver/?$",
        WebhookRedeliverView.as_view(),
    ),
    re_path(r"^triggers/?$", TriggerListView.as_view()),
    re_path(r"^triggers/(?P<trigger_id>[^/]+)/?$", TriggerDetailView.as_view()),
    re_path(
        r"^triggers/(?P<trigger_id>[^/]+)/(?P<secret>[A-Za-z0-9_-]+)/?$", TriggerFireView.as_view()
    ),
    # Before the start (SPEC 10.2): backtests and the preflight checklist.
    re_path(r"^rulesets/(?P<ruleset_id>[^/]+)/backtests/?$", RuleSetBacktestsView.as_view()),
    re_path(r"^backtests/(?P<backtest_id>[^/]+)/?$", BacktestView.as_view()),
    re_path(r"^backtests/(?P<backtest_id>[^/]+)/differences/?$", BacktestDifferencesView.as_view()),
    re_path(
        r"^deployments/(?P<deployment_id>[^/]+)/preflight/?$", DeploymentPreflightView.as_view()
    ),
]
