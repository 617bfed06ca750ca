from django.db import migrations

MONITOR_TASK_NAME = "canary-monitor"
MONITOR_TASK = "monitoring.tasks.canary_monitor_task"


def create_monitor_task(apps, schema_editor):
    # Every install has the monitor scheduled; beat applies the configured period at start.
    interval_model = apps.get_model("django_celery_beat", "IntervalSchedule")
    task_model = apps.get_model("django_celery_beat", "PeriodicTask")
    interval, _ = interval_model.objects.get_or_create(every=300, period="seconds")
    task_model.objects.get_or_create(
        name=MONITOR_TASK_NAME,
        defaults={"task": MONITOR_TASK, "interval": interval, "enabled": True},
    )


def remove_monitor_task(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(
        name=MONITOR_TASK_NAME
    ).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("monitoring", "0004_automation"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create_monitor_task, remove_monitor_task)]
