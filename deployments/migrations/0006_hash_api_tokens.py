"""API tokens stored as hashes: every existing token moves to knox, its plain text goes.

Each old token becomes a knox token with the SHA-512 digest knox computes and the
first 15 characters as its look-up prefix, so every client keeps working with the
token it holds; it never expires (it was issued without a lifetime). The plain-text
table is emptied. Going back keeps the knox tokens: the plain text is gone for good.
"""

import hashlib

from django.db import migrations

TOKEN_KEY_LENGTH = 15  # knox.settings.CONSTANTS.TOKEN_KEY_LENGTH


def hash_tokens(apps, schema_editor):
    from canary.roles import sync_roles

    old_model = apps.get_model("authtoken", "Token")
    new_model = apps.get_model("knox", "AuthToken")
    for old in old_model.objects.all():
        new_model.objects.get_or_create(
            digest=hashlib.sha512(old.key.encode()).hexdigest(),
            defaults={
                "token_key": old.key[:TOKEN_KEY_LENGTH],
                "user_id": old.user_id,
                "expiry": None,
            },
        )
    old_model.objects.all().delete()
    # The Admin role now manages knox's tokens instead of the plain-text ones.
    group_model = apps.get_model("auth", "Group")
    permission_model = apps.get_model("auth", "Permission")
    stale = permission_model.objects.filter(content_type__app_label="authtoken")
    for group in group_model.objects.all():
        group.permissions.remove(*stale)
    sync_roles(apps)


class Migration(migrations.Migration):
    dependencies = [
        ("deployments", "0005_ruleset_routing_generation"),
        ("authtoken", "0004_alter_tokenproxy_options"),
        ("knox", "0009_extend_authtoken_field"),
    ]

    operations = [migrations.RunPython(hash_tokens, migrations.RunPython.noop)]
