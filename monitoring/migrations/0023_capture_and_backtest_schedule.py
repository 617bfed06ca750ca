from django.db import migrations

JOBS = [
    ("canary-capture-retention", "monitoring.tasks.capture_retention_task", 60 * 60),
    ("canary-backtest-sweep", "monitoring.tasks.backtest_sweep_task", 60),
]


def create_tasks(apps, schema_editor):
    interval_model = apps.get_model("django_celery_beat", "IntervalSchedule")
    task_model = apps.get_model("django_celery_beat", "PeriodicTask")
    for name, task, every in JOBS:
        interval, _ = interval_model.objects.get_or_create(every=every, period="seconds")
        task_model.objects.get_or_create(
            name=name, defaults={"task": task, "interval": interval, "enabled": True}
        )


def remove_tasks(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(
        name__in=[name for name, _, _ in JOBS]
    ).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("monitoring", "0022_captured_inputs_and_backtests"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create_tasks, remove_tasks)]
