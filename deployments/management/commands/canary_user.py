"""Create or update a user in one role and print its API token as the last line."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction
from rest_framework.authtoken.models import Token

from canary.roles import ROLE_BY_NAME, sync_roles


class Command(BaseCommand):
    help = "Create or update a user with a role (viewer, approver, admin) and print its token."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--role", required=True, choices=sorted(ROLE_BY_NAME))
        parser.add_argument("--password", help="Set this password (admin console login).")
        parser.add_argument("--email", default="")
        parser.add_argument(
            "--rotate-token",
            action="store_true",
            help="Revoke the user's current token and issue a new one.",
        )

    def handle(
        self,
        *args: Any,
        username: str,
        role: str,
        password: str | None,
        email: str,
        rotate_token: bool = False,
        **options: Any,
    ) -> None:
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
                Token.objects.filter(user=user).delete()
            token, _ = Token.objects.get_or_create(user=user)
        verb = "Created" if created else "Updated"
        self.stdout.write(f"{verb} user '{username}' with role {ROLE_BY_NAME[role]}.")
        self.stdout.write(token.key)
