"""The admin console: where approvers watch releases and act on them.

Every model is read-only in the ModelAdmin sense: nothing here saves a model
form. Lifecycle changes are buttons on the deployment page that lead to a
confirmation step (``DeploymentAdmin.action_view``); its POST validates a small
form and calls the same service as the REST API with ``expected_status`` (the
status the page showed), so a double submit or a stale page is refused instead
of acting twice. Permissions are checked on the server with the role's Django
permissions (``canary.roles``); hiding a button is only a courtesy.

The package, by what each module holds:

- ``display``: the read-only base admin, badges and number/date formatting;
- ``rulesets``: rule sets and versions, and "Test this version";
- ``actions``: the lifecycle buttons, their forms, consequences and service calls;
- ``panels``: the deployment page's event history and measurement panel;
- ``deployments``: the deployment list, page and confirmation view;
- ``home``: the index's block (monitor, running canaries, compensation pending);
- ``users``: users and API tokens, managed by Admins within their own powers.

Measurements come from ``deployments.admin_panels``, which ``monitoring``
fills in: this package must not import ``assignments`` or ``monitoring``.
"""

from django.contrib import admin

from deployments.admin import deployments, rulesets, users
from deployments.admin.display import ReadOnlyAdmin

__all__ = ["ReadOnlyAdmin", "deployments", "rulesets", "users"]

# The console's home leads with the monitor and the running canaries.
admin.site.index_template = "admin/deployments/index.html"
# The console names the product, not the framework.
admin.site.site_header = "Canary"
admin.site.site_title = "Canary console"
admin.site.index_title = "Releases"
