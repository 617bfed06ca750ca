from django.db import migrations

JOBS = [
    ("canary-partitions", "monitoring.tasks.partitions_task", 60 * 60),
    ("canary-retention", "monitoring.tasks.retention_task", 24 * 60 * 60),
]


def create_lifecycle_tasks(apps, schema_editor):
    interval_model = apps.get_model("django_celery_beat", "IntervalSchedule")
    task_model = apps.get_model("django_celery_beat", "PeriodicTask")
    for name, task, every in JOBS:
        interval, _ = interval_model.objects.get_or_create(every=every, period="seconds")
        task_model.objects.get_or_create(
            name=name, defaults={"task": task, "interval": interval, "enabled": True}
        )


def remove_lifecycle_tasks(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(
        name__in=[name for name, _, _ in JOBS]
    ).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("monitoring", "0013_partition_execution_log"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create_lifecycle_tasks, remove_lifecycle_tasks)]
