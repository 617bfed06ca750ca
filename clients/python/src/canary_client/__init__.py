"""Canary's Python client: the whole REST API on httpx, and the ``canary`` command.

``Client`` speaks the API (SPEC §4, §9, §10); ``canary_client.cli`` is the command a
pipeline runs (``canary --help``).
"""

from canary_client.client import Client, RetryPolicy
from canary_client.errors import CanaryError, CanaryHTTPError, CanaryUnreachable
from canary_client.files import load_document

__all__ = [
    "CanaryError",
    "CanaryHTTPError",
    "CanaryUnreachable",
    "Client",
    "RetryPolicy",
    "load_document",
]
