"""Sending a Celery task by its registered name.

Domain code asks for work through here instead of importing a task module, so task
modules stay thin (ids in, one service call) and nothing imports them back: no
import circle runs through Celery. The registry is the current Celery app's
(``canary.celery``), so eager mode (tests, ``CELERY_TASK_ALWAYS_EAGER``) runs the task in
process as ``delay`` would.
"""

from __future__ import annotations

import importlib
from typing import Any

from celery import current_app


def enqueue(task_name: str, *args: Any, retry: bool = True) -> None:
    """Queue ``task_name`` with ``args``; ``retry=False`` fails at once when the broker is down."""
    registry = current_app.tasks
    if task_name not in registry:
        # Autodiscovery registers tasks when a worker starts; elsewhere import the module.
        importlib.import_module(task_name.rpartition(".")[0])
    registry[task_name].apply_async(args=args, retry=retry)
