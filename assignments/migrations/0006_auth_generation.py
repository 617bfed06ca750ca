"""The auth generation: a counter the database bumps on every way of revoking a token.

The data plane's fast path accepts a token Redis vouches for (``canary:tok:<digest>``)
only when the entry was written at the auth generation the process knows
(``canary.api.authentication.auth_generation``). Triggers bump the counter in
the revoking transaction itself, so no revocation can bypass it: a user
deactivated or deleted, a token deleted, re-assigned or cut short, by the ORM
(save, bulk ``update()``, ``delete()``), raw SQL, ``TRUNCATE`` or another
program. Nothing else changes it (logins, new tokens), so cached tokens stay
valid in between.

The table has no model: only the triggers write it, and ``flush`` (tests) must
not reset it. Reversible: going back drops the triggers, the function and the table.
"""

from django.conf import settings
from django.db import migrations

TABLE = "canary_auth_generation"

# NOTE: a token whose expiry is extended (knox's AUTO_REFRESH, off here) is not
# revoked; one whose expiry is brought forward may be.
REVOKING_UPDATE = (
    "OLD.user_id IS DISTINCT FROM NEW.user_id OR OLD.digest IS DISTINCT FROM NEW.digest "
    "OR (NEW.expiry IS NOT NULL AND (OLD.expiry IS NULL OR NEW.expiry < OLD.expiry))"
)


def _tables(apps):
    user = apps.get_model(settings.AUTH_USER_MODEL)._meta.db_table
    token = apps.get_model("knox", "AuthToken")._meta.db_table
    return user, token


def _postgresql(user: str, token: str) -> list[str]:
    bump = "EXECUTE FUNCTION canary_bump_auth_generation()"
    return [
        f"CREATE TABLE {TABLE} (id smallint PRIMARY KEY CHECK (id = 1), value bigint NOT NULL)",
        f"INSERT INTO {TABLE} (id, value) VALUES (1, 1)",  # noqa: S608 (fixed names)
        f"""CREATE FUNCTION canary_bump_auth_generation() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            UPDATE {TABLE} SET value = value + 1 WHERE id = 1;
            RETURN NULL;
        END $$""",  # noqa: S608 (fixed names)
        f"""CREATE TRIGGER canary_auth_user_deactivated AFTER UPDATE OF is_active ON {user}
        FOR EACH ROW WHEN (OLD.is_active IS DISTINCT FROM NEW.is_active) {bump}""",
        f"CREATE TRIGGER canary_auth_user_deleted AFTER DELETE ON {user} FOR EACH STATEMENT {bump}",
        f"""CREATE TRIGGER canary_auth_user_truncated AFTER TRUNCATE ON {user}
        FOR EACH STATEMENT {bump}""",
        f"""CREATE TRIGGER canary_auth_token_changed AFTER UPDATE ON {token}
        FOR EACH ROW WHEN ({REVOKING_UPDATE}) {bump}""",
        f"""CREATE TRIGGER canary_auth_token_deleted AFTER DELETE ON {token}
        FOR EACH STATEMENT {bump}""",
        f"""CREATE TRIGGER canary_auth_token_truncated AFTER TRUNCATE ON {token}
        FOR EACH STATEMENT {bump}""",
    ]


def _sqlite(user: str, token: str) -> list[str]:
    # NOTE: SQLite drops a table's triggers when Django rebuilds the table (an ALTER it
    # cannot do in place); a migration that rebuilds either table must create them again.
    bump = f"BEGIN UPDATE {TABLE} SET value = value + 1 WHERE id = 1; END"  # noqa: S608
    token_changed = REVOKING_UPDATE.replace("IS DISTINCT FROM", "IS NOT")
    return [
        f"CREATE TABLE {TABLE} (id integer PRIMARY KEY CHECK (id = 1), value bigint NOT NULL)",
        f"INSERT INTO {TABLE} (id, value) VALUES (1, 1)",  # noqa: S608 (fixed names)
        f"""CREATE TRIGGER canary_auth_user_deactivated AFTER UPDATE OF is_active ON {user}
        WHEN OLD.is_active IS NOT NEW.is_active {bump}""",
        f"CREATE TRIGGER canary_auth_user_deleted AFTER DELETE ON {user} {bump}",
        f"""CREATE TRIGGER canary_auth_token_changed AFTER UPDATE ON {token}
        WHEN {token_changed} {bump}""",
        f"CREATE TRIGGER canary_auth_token_deleted AFTER DELETE ON {token} {bump}",
    ]


def create(apps, schema_editor):
    user, token = _tables(apps)
    vendor = schema_editor.connection.vendor
    if vendor not in ("postgresql", "sqlite"):
        raise NotImplementedError(f"auth generation triggers for {vendor}")
    statements = _postgresql(user, token) if vendor == "postgresql" else _sqlite(user, token)
    for statement in statements:
        schema_editor.execute(statement)


def drop(apps, schema_editor):
    user, token = _tables(apps)
    triggers = {
        "canary_auth_user_deactivated": user,
        "canary_auth_user_deleted": user,
        "canary_auth_user_truncated": user,
        "canary_auth_token_changed": token,
        "canary_auth_token_deleted": token,
        "canary_auth_token_truncated": token,
    }
    postgresql = schema_editor.connection.vendor == "postgresql"
    for trigger, table in triggers.items():
        on = f" ON {table}" if postgresql else ""
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {trigger}{on}")
    if postgresql:
        schema_editor.execute("DROP FUNCTION IF EXISTS canary_bump_auth_generation()")
    schema_editor.execute(f"DROP TABLE IF EXISTS {TABLE}")


class Migration(migrations.Migration):
    dependencies = [
        ("assignments", "0005_client_token_roles"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
        ("knox", "0009_extend_authtoken_field"),
    ]

    operations = [migrations.RunPython(create, drop)]
