from django.db import migrations

ROLLUP_TASK_NAME = "canary-rollups"
ROLLUP_TASK = "monitoring.tasks.rollup_task"


def create_rollup_task(apps, schema_editor):
    interval_model = apps.get_model("django_celery_beat", "IntervalSchedule")
    task_model = apps.get_model("django_celery_beat", "PeriodicTask")
    every_minute, _ = interval_model.objects.get_or_create(every=60, period="seconds")
    task_model.objects.get_or_create(
        name=ROLLUP_TASK_NAME,
        defaults={"task": ROLLUP_TASK, "interval": every_minute, "enabled": True},
    )


def remove_rollup_task(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(
        name=ROLLUP_TASK_NAME
    ).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("monitoring", "0006_rollups"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create_rollup_task, remove_rollup_task)]
