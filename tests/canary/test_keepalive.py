"""Keep-alive on the production server (granian), spoken over a raw socket.

A request whose body the application does not read (refused for its size, or
before authentication) leaves bytes on the connection: the server cannot read
the next request there, so it must say ``Connection: close`` and close, and a
client then knows to send its next request on a new connection.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.accounts import create_user
from tests.monitoring.test_breaker_integration import make_canary
from tests.servers import Server, free_port, granian, private_redis

pytestmark = pytest.mark.django_db(transaction=True)

NEXT = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


def post(path: str, token: str, document: object, *, declared: int | None = None) -> bytes:
    body = json.dumps(document).encode()
    length = len(body) if declared is None else declared
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    )
    return head.encode() + body


def converse(server: Server, *requests: bytes) -> tuple[list[Answer], bool]:
    """Send the requests back to back on one connection; the answers, and whether the
    server closed the connection (within 5 s) after them."""
    host, port = server.base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.settimeout(5)
        try:
            for request in requests:
                sock.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server closed early; what it answered is read below
        received, closed = b"", False
        try:
            while chunk := sock.recv(65536):
                received += chunk
            closed = True
        except ConnectionResetError:
            closed = True
        except TimeoutError:
            pass
    return list(_answers(received)), closed


def _answers(data: bytes) -> Iterator[Answer]:
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        status_line, *lines = head.decode().split("\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", 0))
        yield Answer(int(status_line.split()[1]), headers, rest[:length])
        data = rest[length:]


@pytest.fixture
def world(roles: None) -> Iterator[tuple[Server, str, dict[str, str]]]:
    canary = make_canary("keepalive", traffic=50, auto_rollback=False)
    tokens = {role: create_user(role, role) for role in ("viewer", "approver")}
    port = free_port()
    with private_redis(port), granian(workers=1, REDIS_URL=f"redis://127.0.0.1:{port}/0") as server:
        yield server, str(canary.ruleset_id), tokens


def test_a_body_refused_unread_closes_the_connection_and_says_so(
    world: tuple[Server, str, dict[str, str]],
) -> None:
    server, ruleset_id, tokens = world
    token = tokens["viewer"]
    execute = f"/api/v1/rulesets/{ruleset_id}/execute"
    oversized = {"input": {"blob": "x" * 70_000}}
    cases = {
        "execute over the limit": post(execute, token, oversized),
        "a declared length over the limit": post(execute, token, {"input": {}}, declared=70_000),
        "a wrong token": post(execute, "not-a-token", oversized),
        "/test over the limit": post(
            f"/api/v1/rulesets/{ruleset_id}/test", tokens["approver"], oversized
        ),
    }
    for case, request in cases.items():
        answers, closed = converse(server, request, NEXT)
        first = answers[0]
        assert first.status in (400, 401), (case, first)
        assert first.headers["content-type"] == "application/json", case
        assert json.loads(first.body)["code"], case
        if len(answers) == 1:  # the next request was not read: the server must have said so
            assert first.headers.get("connection") == "close", (case, first.headers)
            assert closed, case
        else:  # or it was: then it was answered
            assert answers[1].status == 200, case


def test_keep_alive_holds_when_the_body_was_read(
    world: tuple[Server, str, dict[str, str]],
) -> None:
    server, ruleset_id, tokens = world
    token = tokens["viewer"]
    execute = f"/api/v1/rulesets/{ruleset_id}/execute"
    answers, closed = converse(
        server,
        post(execute, token, {"input": {"temperature": 30}, "user_id": "u1"}),  # served
        post(execute, token, {"input": {"t": 1}, "tenant": "x"}),  # read, then refused: 400
        post(execute, token, {"input": {"temperature": 30}, "user_id": "u1"}),  # the fast path
        NEXT,
    )
    assert [answer.status for answer in answers] == [200, 400, 200, 200]
    assert all("connection" not in answer.headers for answer in answers)
    assert not closed
