"""Revocation reaches the data plane's token cache at once (connected in ``AssignmentsConfig``)."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from knox.models import AuthToken

from canary.api.authentication import forget_tokens


def token_deleted(sender: Any, instance: AuthToken, **kwargs: Any) -> None:
    digest = instance.digest
    forget_tokens([digest])
    transaction.on_commit(lambda: forget_tokens([digest]))


def user_saved(sender: Any, instance: Any, **kwargs: Any) -> None:
    # A deactivated user (or any change to one) must authenticate in full again.
    digests = list(AuthToken.objects.filter(user_id=instance.pk).values_list("digest", flat=True))
    if digests:
        forget_tokens(digests)
        transaction.on_commit(lambda: forget_tokens(digests))
