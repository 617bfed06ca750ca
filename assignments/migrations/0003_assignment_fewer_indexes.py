import django.db.models.deletion
from django.db import migrations, models

# Only the indexes go: the foreign keys stay as they are, so a large table is not
# re-validated (Django would drop and re-add each constraint).
INDEXES = {
    "assignments_assignment_deployment_id_7d11f322": "deployment_id",
    "assignments_assignment_version_id_89434c45": "version_id",
}


class Migration(migrations.Migration):
    dependencies = [
        ("assignments", "0002_roles"),
        ("deployments", "0005_ruleset_routing_generation"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[
                migrations.RunSQL(
                    f"DROP INDEX IF EXISTS {name}",
                    f"CREATE INDEX IF NOT EXISTS {name} ON assignments_assignment ({column})",
                )
                for name, column in INDEXES.items()
            ],
            state_operations=[
                migrations.AlterField(
                    model_name="assignment",
                    name="deployment",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="assignments",
                        to="deployments.deployment",
                    ),
                ),
                migrations.AlterField(
                    model_name="assignment",
                    name="version",
                    field=models.ForeignKey(
                        db_index=False,
                        help_text="The rule-set version this context is served.",
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to="deployments.rulesetversion",
                    ),
                ),
            ],
        )
    ]
