from django.urls import re_path

from assignments.api.ofrep import OfrepBulkView, OfrepFlagView

urlpatterns = [
    re_path(r"^evaluate/flags/?$", OfrepBulkView.as_view(), name="ofrep-bulk"),
    re_path(r"^evaluate/flags/(?P<key>[^/]+)/?$", OfrepFlagView.as_view(), name="ofrep-flag"),
]
