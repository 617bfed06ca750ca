"""Move the execution log to a table partitioned by day (PostgreSQL only).

Why: the log grows by ~85 GB a day at 1,000 canary executes/s; a day partition
is dropped whole by retention (``monitoring.partitions``) instead of deleting
rows, and the metrics, health and shadow queries (which all filter by
deployment and ``created_at``) only touch the partitions of their window.

What changes in the database, not in Django's state:

- ``monitoring_executionlog`` becomes ``PARTITION BY RANGE (created_at)`` with
  one partition per UTC day (``monitoring_executionlog_pYYYYMMDD``) and a
  default partition for rows outside every created range.
- PostgreSQL requires the partition key in every unique constraint, so the
  primary key is ``(id, created_at)``. Django's state keeps ``id`` as the
  primary key: ids stay unique in practice because stream rows use the stream
  entry id (one entry, one ``created_at``: a redelivery conflicts on
  ``(id, created_at)`` exactly as it did on ``id``) and direct inserts take a
  sequence that counts from 1, far below stream ids (ms << 20). Nothing relies
  on the database refusing a duplicate ``id`` alone: the sink says
  ``ON CONFLICT (id, created_at)``; updates by ``pk`` still hit one row.
- PostgreSQL 15 has no identity columns on partitioned tables: ``id`` takes its
  default from a sequence owned by the column, continuing the old identity.

The rows are copied one day at a time straight into their partition, inside the
migration's transaction (a failure leaves the old table as it was). Reversible:
backwards rebuilds a plain table and copies the rows back. SQLite keeps its
plain table (both directions are no-ops there).
"""

# ruff: noqa: S608 - SQL names only fixed identifiers and dates; values are parameters

from datetime import UTC, datetime, timedelta

from django.db import migrations

TABLE = "monitoring_executionlog"
SEQUENCE = "monitoring_executionlog_id_seq"
DAYS_AHEAD = 7

# NOTE: the same definitions as the model's Meta.indexes; on the partitioned
# parent they are partitioned indexes, created on every partition automatically.
INDEXES = [
    "CREATE INDEX execlog_window_idx ON {t} (deployment_id, served_version, created_at)",
    "CREATE INDEX execlog_deployment_time_idx ON {t} (deployment_id, created_at)",
    "CREATE INDEX execlog_disagreement_idx ON {t} (deployment_id, created_at DESC) "
    "WHERE NOT agreed",
]
INDEX_NAMES = ["execlog_window_idx", "execlog_deployment_time_idx", "execlog_disagreement_idx"]
FOREIGN_KEYS = [
    ("deployment_id", "deployments_deployment", "monitoring_execlog_deployment_fk"),
    ("version_id", "deployments_rulesetversion", "monitoring_execlog_version_fk"),
]


def _columns(cursor, table):
    cursor.execute(
        "SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) FROM pg_attribute "
        "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
        [table],
    )
    return cursor.fetchone()[0]


def _day_partition(cursor, day):
    name = f"{TABLE}_p{day:%Y%m%d}"
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    cursor.execute(
        f"CREATE TABLE {name} PARTITION OF {TABLE} FOR VALUES FROM (%s) TO (%s)",
        [start, start + timedelta(days=1)],
    )
    return name


def partition(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("SELECT pg_get_serial_sequence(%s, 'id')", [TABLE])
        old_sequence = cursor.fetchone()[0]
        cursor.execute(f"SELECT last_value, is_called FROM {old_sequence}")
        last_value, is_called = cursor.fetchone()
        for index in INDEX_NAMES:
            cursor.execute(f"DROP INDEX {index}")
        cursor.execute(f"ALTER TABLE {TABLE} RENAME TO {TABLE}_old")
        cursor.execute(f"ALTER SEQUENCE {old_sequence} RENAME TO {TABLE}_old_id_seq")
        cursor.execute(
            f"ALTER TABLE {TABLE}_old RENAME CONSTRAINT {TABLE}_pkey TO {TABLE}_old_pkey"
        )
        cursor.execute(
            f"CREATE TABLE {TABLE} (LIKE {TABLE}_old INCLUDING DEFAULTS) "
            "PARTITION BY RANGE (created_at)"
        )
        cursor.execute(f"ALTER TABLE {TABLE} ADD PRIMARY KEY (id, created_at)")
        cursor.execute(f"CREATE SEQUENCE {SEQUENCE} OWNED BY {TABLE}.id")
        cursor.execute("SELECT setval(%s, %s, %s)", [SEQUENCE, last_value, is_called])
        cursor.execute(f"ALTER TABLE {TABLE} ALTER COLUMN id SET DEFAULT nextval('{SEQUENCE}')")
        for column, target, name in FOREIGN_KEYS:
            cursor.execute(
                f"ALTER TABLE {TABLE} ADD CONSTRAINT {name} FOREIGN KEY ({column}) "
                f"REFERENCES {target} (id) DEFERRABLE INITIALLY DEFERRED"
            )
        for index in INDEXES:
            cursor.execute(index.format(t=TABLE))
        cursor.execute(f"CREATE TABLE {TABLE}_default PARTITION OF {TABLE} DEFAULT")
        cursor.execute(
            f"SELECT DISTINCT (created_at AT TIME ZONE 'UTC')::date FROM {TABLE}_old ORDER BY 1"
        )
        days = {row[0] for row in cursor.fetchall()}
        today = datetime.now(UTC).date()
        days |= {today + timedelta(days=offset) for offset in range(DAYS_AHEAD + 1)}
        columns = _columns(cursor, TABLE)
        for day in sorted(days):
            name = _day_partition(cursor, day)
            start = datetime(day.year, day.month, day.day, tzinfo=UTC)
            cursor.execute(
                f"INSERT INTO {name} ({columns}) SELECT {columns} FROM {TABLE}_old "
                "WHERE created_at >= %s AND created_at < %s",
                [start, start + timedelta(days=1)],
            )
        cursor.execute(f"DROP TABLE {TABLE}_old")
        cursor.execute(f"ANALYZE {TABLE}")


def unpartition(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(f"SELECT last_value, is_called FROM {SEQUENCE}")
        last_value, is_called = cursor.fetchone()
        for index in INDEX_NAMES:
            cursor.execute(f"DROP INDEX {index}")
        cursor.execute(f"ALTER TABLE {TABLE} RENAME TO {TABLE}_partitioned")
        cursor.execute(f"ALTER SEQUENCE {SEQUENCE} RENAME TO {TABLE}_partitioned_id_seq")
        cursor.execute(
            f"ALTER TABLE {TABLE}_partitioned RENAME CONSTRAINT {TABLE}_pkey "
            f"TO {TABLE}_partitioned_pkey"
        )
        # The historical model builds the plain table exactly as migration 0011 left it.
        schema_editor.create_model(apps.get_model("monitoring", "ExecutionLog"))
        columns = _columns(cursor, TABLE)
        cursor.execute(
            f"INSERT INTO {TABLE} ({columns}) OVERRIDING SYSTEM VALUE "
            f"SELECT {columns} FROM {TABLE}_partitioned"
        )
        cursor.execute(f"DROP TABLE {TABLE}_partitioned")
        cursor.execute("SELECT pg_get_serial_sequence(%s, 'id')", [TABLE])
        cursor.execute("SELECT setval(%s, %s, %s)", [cursor.fetchone()[0], last_value, is_called])


class Migration(migrations.Migration):
    dependencies = [("monitoring", "0012_governance_record")]

    operations = [migrations.RunPython(partition, unpartition, elidable=False)]
