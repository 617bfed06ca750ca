"""Request-size limits shared by every endpoint that evaluates rules on a caller's input."""

from __future__ import annotations

from django.conf import settings
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request


def refuse_oversized_body(request: Request, *, field: str = "input") -> None:
    """Refuse a body over ``CANARY_MAX_INPUT_BYTES`` with a 400 naming ``field``.

    The declared ``Content-Length`` is checked before the body is read, so a huge
    body is refused without buffering or parsing it; a body sent without a length
    (chunked) is measured after reading, within Django's own upload cap.
    """
    limit = settings.CANARY_MAX_INPUT_BYTES
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > limit or len(request.body) > limit:
        raise ValidationError({field: [f"The request body is larger than {limit} bytes."]})
