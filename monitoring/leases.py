"""Single flight for periodic jobs: a lease row per job, taken by compare-and-set.

The monitor, retention and the partition job each hold one while they run, so a
second run started meanwhile (beat firing twice, a manual run) skips instead of
acting twice. A lease ends on its own at ``held_until``, so a killed run delays
nothing past it.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db.models import Q
from django.utils import timezone

from monitoring.models import JobRun


def lease_acquire(name: str, *, holder: str, now: datetime, lease: timedelta) -> bool:
    JobRun.objects.get_or_create(name=name)
    taken = JobRun.objects.filter(
        Q(held_until__isnull=True) | Q(held_until__lte=now), name=name
    ).update(holder=holder, held_until=now + lease, last_started_at=now)
    return taken == 1


def lease_release(name: str, *, holder: str, outcome: str) -> None:
    JobRun.objects.filter(name=name, holder=holder).update(
        held_until=None, last_finished_at=timezone.now(), last_outcome=outcome[:2000]
    )
