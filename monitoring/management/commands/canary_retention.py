"""Drop execution-log partitions and rollups past retention; ``--dry-run`` only prints."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from monitoring.logstore.retention import partitions_run, retention_run


class Command(BaseCommand):
    help = "Apply CANARY_LOG_RETENTION_DAYS and CANARY_ROLLUP_RETENTION_DAYS now."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="Print, change nothing.")

    def handle(self, *args: Any, dry_run: bool = False, **options: Any) -> None:
        if not dry_run:
            # Days still in the default partition become partitions of their own first.
            partitions_run()
        report = retention_run(dry_run=dry_run)
        if report.skipped:
            self.stdout.write("another retention run holds the lease; nothing done")
            return
        self.stdout.write(f"log cutoff {report.log_cutoff:%Y-%m-%d %H:%M} UTC")
        for name in report.dropped:
            self.stdout.write(f"{'would drop' if dry_run else 'dropped'} {name}")
        for name, flagged in report.held.items():
            self.stdout.write(
                f"held {name}: {flagged} executions flagged for a pending compensation"
            )
        self.stdout.write(report.summary())
