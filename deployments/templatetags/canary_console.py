"""Template tags of the console's index page: the monitor banner and the running canaries.

An inclusion tag rather than a custom ``AdminSite``: the stock site keeps every
registration, and the index template only asks for what it shows.
"""

from __future__ import annotations

from typing import Any

from django import template

from deployments.admin.home import index_block_context

register = template.Library()


@register.inclusion_tag("admin/deployments/index_block.html", takes_context=True)
def canary_index_block(context: template.Context) -> dict[str, Any]:
    """The monitor's heartbeat and one row per running canary, for whoever may see deployments."""
    request = context.get("request")
    if request is None:
        return {"visible": False}
    return index_block_context(request)
