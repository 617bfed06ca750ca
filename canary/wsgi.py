"""The WSGI application: Django, with the data plane's fast path in front of it, and
``Connection: close`` on any answer that leaves request body bytes unread."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "canary.settings")

django_application = get_wsgi_application()

from assignments.fastpath import DataPlaneFastPath  # noqa: E402 (needs Django set up)
from canary.keepalive import CloseAfterUnreadBody  # noqa: E402

application = CloseAfterUnreadBody(DataPlaneFastPath(django_application))
