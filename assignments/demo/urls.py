from django.urls import path

from assignments.demo.views import demo_bundle, demo_page, demo_rule_list

urlpatterns = [
    path("", demo_page, name="demo"),
    path("canary-demo.js", demo_bundle, name="demo-bundle"),
    path("rules", demo_rule_list, name="demo-rules"),
]
