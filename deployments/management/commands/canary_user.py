"""Create or update a user in one role, issue an API token and print it as the last line.

Only a hash of the token is stored, so this is the one time it is shown. Each run
issues a new token; ``--rotate-token`` revokes the user's others first.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from knox.models import AuthToken

from canary.roles import ROLE_BY_NAME, sync_roles


class Command(BaseCommand):
    help = (
        "Create or update a user with a role (viewer, approver, admin), issue an API token "
        "and print it (shown this once: only its hash is stored)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--role", required=True, choices=sorted(ROLE_BY_NAME))
        parser.add_argument("--password", help="Set this password (admin console login).")
        parser.add_argument("--email", default="")
        parser.add_argument(
            "--rotate-token",
            action="store_true",
            help="Revoke the user's other tokens.",
        )
        parser.add_argument(
            "--expires-days",
            type=int,
            default=None,
            help="Days until the new token expires (0: never; default CANARY_TOKEN_TTL_DAYS).",
        )

    def handle(
        self,
        *args: Any,
        username: str,
        role: str,
        password: str | None,
        email: str,
        rotate_token: bool = False,
        expires_days: int | None = None,
        **options: Any,
    ) -> None:
        if expires_days is None:
            expires_days = settings.CANARY_TOKEN_TTL_DAYS
        if expires_days < 0:
            raise CommandError("--expires-days must be 0 (never) or more.")
        sync_roles()
        user_model = get_user_model()
        with transaction.atomic():
            user, created = user_model.objects.get_or_create(username=username)
            user.is_staff = True  # every role may open the admin console
            if email:
                user.email = email
            if password:
                user.set_password(password)
            elif created:
                user.set_unusable_password()
            user.save()
            user.groups.set([Group.objects.get(name=ROLE_BY_NAME[role])])
            if rotate_token:
                for stale in AuthToken.objects.filter(user=user):
                    stale.delete()  # one by one: each deletion reaches the token cache
            expiry = timedelta(days=expires_days) if expires_days else None
            issued, token = AuthToken.objects.create(user=user, expiry=expiry)
        verb = "Created" if created else "Updated"
        until = f"expires {issued.expiry:%Y-%m-%d %H:%M} UTC" if issued.expiry else "never expires"
        self.stdout.write(
            f"{verb} user '{username}' with role {ROLE_BY_NAME[role]}. New API token "
            f"(prefix {issued.token_key}, {until}); it is shown only now:"
        )
        self.stdout.write(token)
