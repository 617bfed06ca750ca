"""Users for tests, made the way an operator makes them."""

import io

from django.core.management import call_command


def create_user(username: str, role: str) -> str:
    """Create a user through the management command and return its token."""
    out = io.StringIO()
    call_command("canary_user", username, "--role", role, stdout=out)
    return out.getvalue().strip().splitlines()[-1]
