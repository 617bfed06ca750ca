"""``REDIS_URL`` naming a Redis Sentinel set instead of one server (Django-free).

Format: ``redis+sentinel://[:password@]host:port[,host:port...]/service_name[/db]``,
for example ``redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/canary/0``. The
hosts are Sentinels; ``service_name`` is the master name they monitor; the
password (optional) is the master's. Every Redis user of Canary derives its
own configuration from it: the data plane's client (``canary.redis``), the
Django cache (django-redis' Sentinel client) and the Celery broker (kombu's
``sentinel://`` transport with ``master_name``).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

SCHEME = "redis+sentinel://"


@dataclass(frozen=True)
class SentinelTarget:
    sentinels: tuple[tuple[str, int], ...]
    service_name: str
    db: int = 0
    password: str | None = None

    def celery_url(self) -> str:
        """kombu's spelling: one ``sentinel://`` URL per Sentinel, joined by ``;``."""
        auth = f":{self.password}@" if self.password else ""
        return ";".join(
            f"sentinel://{auth}{host}:{port}/{self.db}" for host, port in self.sentinels
        )

    def cache_location(self) -> str:
        """django-redis' Sentinel client: the service name stands where a host would."""
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{self.service_name}/{self.db}"


def parse_sentinel_url(url: str) -> SentinelTarget | None:
    """The Sentinel set a ``redis+sentinel://`` URL names; None for any other URL.

    Raises ValueError on a malformed Sentinel URL (a typo must not silently
    become "no Redis").
    """
    if not url.startswith(SCHEME):
        return None
    rest = url[len(SCHEME) :]
    netloc, _, path = rest.partition("/")
    password = None
    if "@" in netloc:
        auth, _, netloc = netloc.rpartition("@")
        password = unquote(auth.partition(":")[2]) or None
    sentinels = []
    for item in netloc.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"REDIS_URL: Sentinel address {item!r} is not host:port")
        sentinels.append((host, int(port)))
    parts = [part for part in path.split("/") if part]
    if not parts or len(parts) > 2 or (len(parts) == 2 and not parts[1].isdigit()):
        raise ValueError("REDIS_URL: expected redis+sentinel://host:port[,...]/service_name[/db]")
    return SentinelTarget(
        tuple(sentinels), parts[0], int(parts[1]) if len(parts) == 2 else 0, password
    )
