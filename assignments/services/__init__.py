"""The data plane: decide which version serves a request, remember it, run it.

``dataplane_resolve`` and ``dataplane_execute`` share one routing path, so what
the front end's resolve says is exactly what execute serves.

With Redis (production), a request costs one round-trip (``assignments.sticky``):
routing state comes from process memory (``assignments.routing``), sticky
decisions live in Redis and reach PostgreSQL through the assignment stream
(``assignments.buffer``). Without Redis, or while it is unreachable, the same
decisions are made from PostgreSQL alone.

Modules: ``resolve`` (routing and its types), ``execute`` (the entry points,
evaluation, the one-trip path), ``persist`` (the assignment stream's sink).
Callers import from the package, which re-exports the public names.
"""

from assignments.services.execute import dataplane_execute, dataplane_resolve
from assignments.services.persist import assignments_clear, assignments_write_batch
from assignments.services.resolve import (
    ClientCheck,
    ExecutionResult,
    NothingDeployed,
    RateLimited,
    RedisUnavailable,
    Resolution,
    StickyQuotaExceeded,
    TokenNotCached,
)

__all__ = [
    "ClientCheck",
    "ExecutionResult",
    "NothingDeployed",
    "RateLimited",
    "RedisUnavailable",
    "Resolution",
    "StickyQuotaExceeded",
    "TokenNotCached",
    "assignments_clear",
    "assignments_write_batch",
    "dataplane_execute",
    "dataplane_resolve",
]
