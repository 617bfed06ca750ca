"""Users for tests, made the way an operator makes them."""

import io

from django.core.management import call_command


def create_user(username: str, role: str) -> str:
    """Create a user through the management command and return its token."""
    out = io.StringIO()
    call_command("canary_user", username, "--role", role, stdout=out)
    return out.getvalue().strip().splitlines()[-1]


def issue_token(user: object) -> str:
    """A new API token for ``user``, as knox issues it (only its hash is stored)."""
    from knox.models import AuthToken

    return AuthToken.objects.create(user=user)[1]
