from django.db import migrations

SWEEP = ("canary-webhook-sweep", "monitoring.tasks.webhook_sweep_task", 60)


def grant_roles_and_schedule_sweep(apps, schema_editor):
    from canary.roles import sync_roles

    sync_roles(apps)
    name, task, every = SWEEP
    interval_model = apps.get_model("django_celery_beat", "IntervalSchedule")
    interval, _ = interval_model.objects.get_or_create(every=every, period="seconds")
    apps.get_model("django_celery_beat", "PeriodicTask").objects.get_or_create(
        name=name, defaults={"task": task, "interval": interval, "enabled": True}
    )


def remove_sweep(apps, schema_editor):
    # Reversing leaves the grants: the permissions go with the models' tables.
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=SWEEP[0]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("monitoring", "0018_webhooks_and_triggers"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(grant_roles_and_schedule_sweep, remove_sweep)]
