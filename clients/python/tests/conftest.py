"""A small real HTTP server scripted per test: the package's tests need no Canary.

The project's own tests (``tests/clients``) drive the same client and command against
the real server."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

Reply = tuple[int, Any] | tuple[int, Any, dict[str, str]]


@dataclass
class Scripted:
    """``(METHOD, path)`` -> the replies to give in turn (the last one repeats)."""

    url: str = ""
    replies: dict[tuple[str, str], list[Reply]] = field(default_factory=dict)
    seen: list[tuple[str, str, Any, dict[str, str]]] = field(default_factory=list)

    def on(self, method: str, path: str, *replies: Reply) -> None:
        self.replies[(method, path)] = list(replies)

    def calls(self, method: str, path: str) -> list[Any]:
        return [body for m, p, body, _ in self.seen if (m, p) == (method, path)]


@pytest.fixture
def server() -> Iterator[Scripted]:
    scripted = Scripted()

    class Handler(BaseHTTPRequestHandler):
        def _reply(self) -> None:
            path = self.path.split("?", 1)[0]
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            scripted.seen.append((self.command, path, body, dict(self.headers)))
            queue = scripted.replies.get((self.command, path))
            if not queue:
                reply: Reply = (404, {"detail": "Not found.", "code": "not_found"})
            else:
                reply = queue.pop(0) if len(queue) > 1 else queue[0]
            status, document = reply[0], reply[1]
            headers = reply[2] if len(reply) > 2 else {}  # type: ignore[misc]
            payload = b"" if document is None else json.dumps(document).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _reply

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    scripted.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield scripted
    finally:
        httpd.shutdown()
        httpd.server_close()
