from django.db import migrations, models


class Migration(migrations.Migration):
    """Rollups per hour instead of per minute: 60x fewer rows to merge for long windows."""

    dependencies = [("monitoring", "0007_rollup_schedule")]

    operations = [
        migrations.RemoveConstraint(model_name="executionrollup", name="uniq_rollup_minute"),
        migrations.RenameField(model_name="executionrollup", old_name="minute", new_name="hour"),
        migrations.AddConstraint(
            model_name="executionrollup",
            constraint=models.UniqueConstraint(
                fields=("deployment", "served_version", "hour"), name="uniq_rollup_hour"
            ),
        ),
    ]
