import django.db.models.deletion
from django.db import migrations, models

# Only the indexes go: the foreign keys stay as they are, so a large table is not
# re-validated (Django would drop and re-add each constraint).
INDEXES = {
    "monitoring_executionlog_deployment_id_27d53a12": "deployment_id",
    "monitoring_executionlog_version_id_73628f48": "version_id",
}


class Migration(migrations.Migration):
    dependencies = [
        ("deployments", "0005_ruleset_routing_generation"),
        ("monitoring", "0009_window_index"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[
                migrations.RunSQL(
                    f"DROP INDEX IF EXISTS {name}",
                    f"CREATE INDEX IF NOT EXISTS {name} ON monitoring_executionlog ({column})",
                )
                for name, column in INDEXES.items()
            ],
            state_operations=[
                migrations.AlterField(
                    model_name="executionlog",
                    name="deployment",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="execution_logs",
                        to="deployments.deployment",
                    ),
                ),
                migrations.AlterField(
                    model_name="executionlog",
                    name="version",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to="deployments.rulesetversion",
                    ),
                ),
            ],
        )
    ]
