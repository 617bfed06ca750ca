"""What the data plane has stored, read the way every exact reader reads it."""

from __future__ import annotations

from typing import Any

from assignments.buffer import drain_now


def stored(model: Any) -> Any:
    """``model``'s manager once the write buffers are drained into the database.

    With Redis, assignments and execution logs reach the database through
    streams (docs/durability.md); a test asserts on them as metrics do: drained.
    """
    drain_now()
    return model._default_manager
