"""Drive real canary traffic at a rule set, in process or over HTTP, and watch what happens.

In process, every request goes through ``assignments.services.dataplane_execute``:
execution logs, assignments, the circuit breaker (and its automatic rollback)
and the Prometheus counters are the real ones. With ``--url`` the same traffic
goes through ``POST /api/v1/rulesets/{id}/execute`` of a running server.
``--scenario`` creates what the operations guide's scenarios need and picks
their traffic; see docs/scenarios.md.

The program lives in ``monitoring.simulation.program``; this command only parses arguments.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from monitoring.simulation import traffic as sim
from monitoring.simulation.program import simulate


class Command(BaseCommand):
    help = (
        "Send paced canary traffic to a rule set (in process through the data plane, or over "
        "HTTP with --url), inject real v2 failures or latency, and stop when the deployment "
        "leaves canary. --scenario healthy|error-rate|breaker reproduces the operations "
        "guide's scenarios (docs/scenarios.md)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--ruleset", help="Rule set name or id (default: the scenario's).")
        parser.add_argument(
            "--scenario",
            choices=sorted(sim.SCENARIOS),
            help="Preset traffic and canary; creates what is missing (implies --setup).",
        )
        parser.add_argument(
            "--setup",
            action="store_true",
            help="Create the rule set (v1 and v2), the v1 release and the v2 canary if missing.",
        )
        parser.add_argument("--canary-pct", type=int, help="Traffic of a canary --setup starts.")
        parser.add_argument(
            "--canary-config",
            help="JSON merged over the preset canary_config, e.g. '{\"min_samples\": 50}'.",
        )
        parser.add_argument("--rps", type=float, help="Requests per second (default 20).")
        parser.add_argument("--duration", type=float, help="Seconds to run (default 60).")
        parser.add_argument("--requests", type=int, help="Stop after this many requests.")
        parser.add_argument(
            "--users", type=int, default=1000, help="Distinct user ids (sticky routing)."
        )
        parser.add_argument(
            "--v2-error-rate", type=float, help="Share of v2 requests that fail (0-1)."
        )
        parser.add_argument(
            "--v2-latency-ms", type=float, help="Evaluation latency added to v2 requests."
        )
        parser.add_argument(
            "--base-latency-ms",
            type=float,
            help="Evaluation work every request carries, on v1 and v2 alike (default 0).",
        )
        parser.add_argument(
            "--fault-after", type=float, help="Seconds of clean traffic before faults start."
        )
        parser.add_argument(
            "--run-monitor-every",
            type=float,
            metavar="SECONDS",
            help="Also run the canary monitor in this process every SECONDS (and once at the end).",
        )
        parser.add_argument("--url", help="Send over HTTP to this server instead of in process.")
        parser.add_argument("--token", help="API token for --url (default: $CANARY_TOKEN).")
        parser.add_argument("--seed", type=int, help="Random seed for users and inputs.")

    def handle(self, *args: Any, **options: Any) -> None:
        simulate(options, self.stdout)
