from django.db import migrations


def grant_roles(apps, schema_editor):
    from canary.roles import sync_roles

    sync_roles(apps)


class Migration(migrations.Migration):
    dependencies = [("assignments", "0004_client_tokens")]

    # Reversing leaves the grants: the permissions go with the model's table.
    operations = [migrations.RunPython(grant_roles, migrations.RunPython.noop)]
