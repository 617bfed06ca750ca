"""``{{ value|as_json }}``: a rule's output as JSON (what the API shows), not Python's repr."""

from __future__ import annotations

import json
from typing import Any

from django import template

register = template.Library()


@register.filter
def as_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)
