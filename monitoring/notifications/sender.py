"""The one way Canary POSTs to a URL someone configured: webhooks, gates, Slack.

Safe against server-side request forgery (SPEC 10.4):
- http and https only;
- the host is resolved once and every address it resolves to is vetted:
  link-local (169.254.0.0/16, fe80::/10: cloud metadata) always refused, loopback
  and private ranges refused unless ``CANARY_WEBHOOK_ALLOW_PRIVATE``;
- the connection goes to the vetted address (the Host header and TLS name stay the
  URL's host), so a DNS answer that changes between the check and the connection
  (rebinding) cannot steer it elsewhere;
- redirects are never followed, at most ``CANARY_WEBHOOK_MAX_RESPONSE_BYTES`` of the
  answer is read, and ``CANARY_WEBHOOK_TIMEOUT_SECONDS`` bounds the connection and
  each read.

The resolver is a parameter (``resolve``), so a test decides what a name resolves to.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, urlsplit

import urllib3
from django.conf import settings

Resolver = Callable[[str, int], list[str]]

# What an "internal" address is, beyond link-local: refused unless private is allowed.
_INTERNAL = ("is_loopback", "is_private", "is_reserved", "is_unspecified", "is_multicast")


class UnsafeURL(ValueError):
    """The URL may not be posted to; the message says why, for a 400 naming ``url``."""


class SendFailed(Exception):
    """A non-2xx answer, a refused address or a network failure (for Celery's retries)."""


@dataclass(frozen=True)
class Answer:
    """What one POST got: ``status_code`` None when no answer came (``error`` says why)."""

    status_code: int | None
    body: str = ""
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def system_resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (the operating system's resolver)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _parts(url: str) -> tuple[SplitResult, str, int]:
    if not isinstance(url, str) or not url:
        raise UnsafeURL("Must be an http or https URL.")
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https"):
        raise UnsafeURL("Only http and https URLs are allowed.")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise UnsafeURL("The port is not a number between 0 and 65535.") from exc
    host = parts.hostname
    if not host:
        raise UnsafeURL("The URL has no host.")
    return parts, host, port


def address_problem(address: str, *, allow_private: bool) -> str | None:
    """Why ``address`` may not be connected to, or None."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_link_local:
        return f"{address}, a link-local address (cloud metadata); never allowed."
    if not allow_private and any(getattr(ip, check) for check in _INTERNAL):
        return (
            f"{address}, a loopback or private address; allowed only with "
            "CANARY_WEBHOOK_ALLOW_PRIVATE=1."
        )
    return None


def url_vet(url: str, *, resolve: Resolver | None = None, allow_private: bool | None = None) -> str:
    """The address to connect to for ``url``, after vetting every address its host has.

    Raises ``UnsafeURL`` with the reason.
    """
    _, host, port = _parts(url)
    if allow_private is None:
        allow_private = bool(settings.CANARY_WEBHOOK_ALLOW_PRIVATE)
    try:
        addresses = (resolve or system_resolve)(host, port)
    except (OSError, UnicodeError) as exc:
        raise UnsafeURL(f"The host {host} does not resolve ({exc}).") from exc
    if not addresses:
        raise UnsafeURL(f"The host {host} does not resolve.")
    for address in addresses:
        problem = address_problem(address, allow_private=allow_private)
        if problem:
            raise UnsafeURL(f"The host {host} resolves to {problem}")
    return addresses[0]


def post(
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    resolve: Resolver | None = None,
    timeout: float | None = None,
) -> Answer:
    """POST ``body`` to ``url`` through the vetted address; never raises for the network."""
    timeout = float(timeout if timeout is not None else settings.CANARY_WEBHOOK_TIMEOUT_SECONDS)
    limit = int(settings.CANARY_WEBHOOK_MAX_RESPONSE_BYTES)
    try:
        address = url_vet(url, resolve=resolve)
    except UnsafeURL as exc:
        return Answer(None, error=f"refused: {exc}")
    parts, host, port = _parts(url)
    default_port = port == (443 if parts.scheme == "https" else 80)
    sent_headers = {**headers, "Host": host if default_port else f"{host}:{port}"}
    sent_headers.setdefault("User-Agent", "Canary-Webhooks/1")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    pool: urllib3.HTTPConnectionPool
    limits = urllib3.Timeout(connect=timeout, read=timeout)
    if parts.scheme == "https":
        pool = urllib3.HTTPSConnectionPool(
            address,
            port,
            timeout=limits,
            retries=False,
            server_hostname=host,
            assert_hostname=host,
            ssl_context=ssl.create_default_context(),
        )
    else:
        pool = urllib3.HTTPConnectionPool(address, port, timeout=limits, retries=False)
    try:
        response = pool.urlopen(
            "POST",
            path,
            body=body,
            headers=sent_headers,
            redirect=False,
            retries=False,
            preload_content=False,
            assert_same_host=False,
        )
        try:
            content = _read_capped(response, limit, deadline=time.monotonic() + timeout)
        finally:
            response.release_conn()
            response.close()
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        return Answer(None, error=_network_error(exc, timeout))
    finally:
        pool.close()
    return Answer(response.status, body=content.decode("utf-8", "replace"))


def _read_capped(response: Any, limit: int, *, deadline: float) -> bytes:
    """At most ``limit`` bytes of the answer, and no longer than the timeout in all: a
    receiver dripping its answer a byte at a time cannot hold the worker."""
    content = bytearray()
    for chunk in response.stream(4096):
        content += chunk
        if len(content) >= limit or time.monotonic() > deadline:
            break
    return bytes(content[:limit])


def _network_error(exc: Exception, timeout: float) -> str:
    if isinstance(exc, urllib3.exceptions.TimeoutError):
        return f"timed out after {timeout:g} s"
    return f"{type(exc).__name__}: {exc}"[:500]


def post_or_raise(url: str, body: bytes, headers: dict[str, str]) -> Answer:
    """``post``, raising ``SendFailed`` unless the answer is a 2xx (for retrying tasks)."""
    answer = post(url, body, headers)
    if not answer.ok:
        raise SendFailed(answer.error or f"answered {answer.status_code}")
    return answer
