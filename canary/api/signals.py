"""Revocation reaches the data plane's token cache at once (connected in ``canary.apps``)."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from rest_framework.authtoken.models import Token

from canary.api.authentication import forget_tokens


def token_deleted(sender: Any, instance: Token, **kwargs: Any) -> None:
    key = instance.key
    forget_tokens([key])
    transaction.on_commit(lambda: forget_tokens([key]))


def user_saved(sender: Any, instance: Any, **kwargs: Any) -> None:
    # A deactivated user (or any change to one) must re-authenticate in full.
    keys = list(Token.objects.filter(user_id=instance.pk).values_list("key", flat=True))
    if keys:
        forget_tokens(keys)
        transaction.on_commit(lambda: forget_tokens(keys))
