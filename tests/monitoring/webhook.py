"""A real local HTTP server standing in for Slack's incoming webhook."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Webhook:
    url: str
    received: list[dict] = field(default_factory=list)
    attempts: int = 0
    fail_first: int = 0


@contextmanager
def slack_stub(*, fail_first: int = 0) -> Iterator[Webhook]:
    """Answers 500 to the first ``fail_first`` posts, then 200; records every payload."""
    state = Webhook(url="", fail_first=fail_first)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            state.attempts += 1
            if state.attempts <= state.fail_first:
                self.send_response(500)
                self.end_headers()
                return
            state.received.append(json.loads(body))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/services/T000/B000/XXX"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
