"""The client under test is this checkout's ``clients/python/src``, for in-process imports
and the ``canary`` subprocesses alike, whichever checkout an editable install of the
package points to (a shared virtualenv, another checkout)."""

from __future__ import annotations

import os
import sys

from tests.servers import ROOT

SOURCE = str(ROOT / "clients" / "python" / "src")
sys.path.insert(0, SOURCE)
os.environ["PYTHONPATH"] = os.pathsep.join(
    path for path in (SOURCE, os.environ.get("PYTHONPATH")) if path
)
