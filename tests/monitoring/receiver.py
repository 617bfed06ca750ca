"""A real HTTP receiver on 127.0.0.1 for webhook, gate and trigger tests.

``script`` says how to answer each request in turn (the last entry repeats): a status
code, ``"hang"`` (say nothing until the test ends), or ``("redirect", url)``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    url: str
    script: list[Any]
    received: list[Received] = field(default_factory=list)
    answer_body: bytes = b"ok"
    stop: threading.Event = field(default_factory=threading.Event)

    def wait_for(self, count: int, timeout: float = 60) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.received


@contextmanager
def receiver(*script: Any, answer_body: bytes = b"ok") -> Iterator[Receiver]:
    state = Receiver(url="", script=list(script) or [200], answer_body=answer_body)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with lock:
                index = len(state.received)
                state.received.append(Received(self.path, dict(self.headers.items()), body))
            step = state.script[min(index, len(state.script) - 1)]
            if step == "hang":
                state.stop.wait(30)
                return
            if isinstance(step, tuple) and step[0] == "redirect":
                self.send_response(302)
                self.send_header("Location", step[1])
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(int(step))
            self.send_header("Content-Length", str(len(state.answer_body)))
            self.end_headers()
            self.wfile.write(state.answer_body)

        def log_message(self, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.stop.set()
        server.shutdown()
        server.server_close()
