"""``Connection: close`` on an answer that leaves part of the request body unread.

A request refused before its body is read (over ``CANARY_MAX_INPUT_BYTES``,
judged by its declared length; a wrong token) leaves those bytes on the
connection, where the next request of a keep-alive client would have to start.
Reading them would spend a worker on bytes nobody wants; instead the answer says
``Connection: close``, the server (granian honours it) closes the connection
after the answer, and the client sends its next request on a new one. Without
the header granian closed the connection all the same, and a client that had
sent its next request on it never got an answer.

The outermost WSGI layer (``canary.wsgi``), so it counts what the data plane's
fast path reads as well as what Django reads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class _CountingInput:
    """``wsgi.input`` that counts the bytes read and notices the end of the body."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self.consumed = 0
        self.exhausted = False

    def _count(self, data: bytes, size: int | None) -> bytes:
        self.consumed += len(data)
        if not data or size is None or size < 0:
            self.exhausted = True
        return data

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            return self._count(self._stream.read(), None)
        return self._count(self._stream.read(size), size)

    def readline(self, size: int | None = -1) -> bytes:
        line = self._stream.readline() if size is None or size < 0 else self._stream.readline(size)
        self.consumed += len(line)
        if not line:
            self.exhausted = True
        return line

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        lines = (
            self._stream.readlines() if hint is None or hint < 0 else self._stream.readlines(hint)
        )
        self.consumed += sum(map(len, lines))
        self.exhausted = True
        return lines

    def __iter__(self) -> Any:
        return iter(self.readline, b"")


class CloseAfterUnreadBody:
    """WSGI middleware: an answer that leaves body bytes unread says ``Connection: close``."""

    def __init__(self, app: WSGIApp) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        stream = environ.get("wsgi.input")
        if stream is None:
            return self.app(environ, start_response)
        counted = _CountingInput(stream)
        environ["wsgi.input"] = counted
        declared = _declared_length(environ)

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            if declared is None:  # chunked: unread unless read to its end
                unread = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower() and not (
                    counted.exhausted
                )
            else:
                unread = counted.consumed < declared
            if unread:
                headers = [(n, v) for n, v in headers if n.lower() != "connection"]
                headers.append(("Connection", "close"))
            return start_response(status, headers, exc_info)

        return self.app(environ, start)


def _declared_length(environ: dict[str, Any]) -> int | None:
    try:
        return max(0, int(environ.get("CONTENT_LENGTH") or ""))
    except ValueError:
        return None
