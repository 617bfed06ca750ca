"""The data plane as callers reach it: the production server, a real Redis, real faults.

Every test runs ``scripts/serve.sh`` (granian) against the test database and a
Redis of its own, so Redis can be paused or stopped without disturbing others.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import orjson
import pytest
import redis
import requests
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection
from django.utils import timezone
from knox.models import AuthToken

from assignments.api.serializers import ExecuteOutputSerializer, ResolveOutputSerializer
from assignments.models import Assignment
from canary.redis import reset_redis_client
from deployments import services as lifecycle
from deployments.models import Deployment
from monitoring.models import ExecutionLog
from tests.accounts import create_user
from tests.canary.test_faults import wait_until_drained
from tests.monitoring.test_breaker_integration import make_canary
from tests.servers import CuttableProxy, database_url_of_test_db, free_port, granian, private_redis
from tests.stored import stored

pytestmark = pytest.mark.django_db(transaction=True)

INPUT = {"temperature": 30, "zone": "A"}


@pytest.fixture
def redis_port(settings: Any) -> Iterator[int]:
    """A private Redis shared by the servers and this test process."""
    port = free_port()
    with private_redis(port):
        settings.REDIS_URL = f"redis://127.0.0.1:{port}/0"
        reset_redis_client()
        yield port
    reset_redis_client()


def server_redis(port: int) -> dict[str, str]:
    return {"REDIS_URL": f"redis://127.0.0.1:{port}/0"}


def execute(base: str, ruleset_id: Any, token: str, **body: Any) -> requests.Response:
    body.setdefault("input", INPUT)
    return requests.post(
        f"{base}/api/v1/rulesets/{ruleset_id}/execute",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )


def resolve(base: str, ruleset_id: Any, token: str, **query: str) -> requests.Response:
    return requests.get(
        f"{base}/api/v1/rulesets/{ruleset_id}/resolve",
        params=query,
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )


def test_answers_have_the_documented_shape(roles: None, redis_port: int) -> None:
    canary = make_canary("shape", traffic=50, auto_rollback=False)
    token = create_user("engine", "viewer")
    with granian(**server_redis(redis_port)) as server:
        for n in range(20):
            executed = execute(server.base, canary.ruleset_id, token, user_id=f"u-{n}")
            assert executed.status_code == 200, executed.text
            body = executed.json()
            assert set(body) == set(ExecuteOutputSerializer().fields)
            assert executed.headers["X-Canary-Version"] == body["canary_version"]
            assert executed.headers["Content-Type"] == "application/json"
            assert executed.headers["X-Request-ID"]
            resolved = resolve(server.base, canary.ruleset_id, token, user_id=f"u-{n}")
            assert set(resolved.json()) == set(ResolveOutputSerializer().fields)
            # Sticky: what execute served is what resolve says, on either path.
            assert resolved.json()["canary_version"] == body["canary_version"]
            assert resolved.json()["assignment_priority"] == "user"
    logged = stored(ExecutionLog).filter(deployment=canary)
    assert logged.count() == 20
    assert stored(Assignment).filter(deployment=canary).count() == 20
    row = logged.get(user_id="u-3")
    assert row.input == INPUT
    assert row.served_version in ("v1", "v2")


def test_other_spellings_of_a_rule_set_id_are_404(roles: None, redis_port: int) -> None:
    canary = make_canary("spelling", traffic=100, auto_rollback=False)
    token = create_user("engine", "viewer")
    canonical = str(canary.ruleset_id)
    spellings = [canonical.upper(), canonical.replace("-", ""), f"urn:uuid:{canonical}"]
    with granian(**server_redis(redis_port)) as server:
        assert execute(server.base, canonical, token, user_id="a").json()["canary_version"] == "v2"
        for spelling in spellings:
            for response in (
                execute(server.base, spelling, token, user_id="a"),
                resolve(server.base, spelling, token, user_id="a"),
            ):
                assert response.status_code == 404, (spelling, response.text)
                assert response.json()["code"] == "not_found"


def test_a_rollback_made_while_redis_was_unreachable_is_never_undone(
    roles: None, redis_port: int
) -> None:
    canary = make_canary("outage-rollback", traffic=100, auto_rollback=False)
    token = create_user("engine", "viewer")
    env = server_redis(redis_port)
    paused = redis.Redis(port=redis_port)
    with granian(**env) as server_a, granian(**env) as server_b:
        for server in (server_a, server_b):
            assert execute(server.base, canary.ruleset_id, token, user_id="old")  # warm
            answer = resolve(server.base, canary.ruleset_id, token, user_id="old").json()
            assert answer["canary_version"] == "v2"
        redis_pid = int(paused.info("server")["process_id"])
        os.kill(redis_pid, signal.SIGSTOP)
        try:
            # Committed in PostgreSQL; the announcement to Redis times out.
            lifecycle.deployment_rollback(
                deployment_id=canary.pk, reason="bad while Redis was away", actor="t"
            )
        finally:
            os.kill(redis_pid, signal.SIGCONT)
        time.sleep(1.0)  # the promise: every process within one second
        for server in (server_a, server_b):
            for user in ("old", "brand-new"):
                answer = resolve(server.base, canary.ruleset_id, token, user_id=user).json()
                assert answer["canary_version"] == "v1", (server.base, user)
                executed = execute(server.base, canary.ruleset_id, token, user_id=user).json()
                assert executed["canary_version"] == "v1"
    assert Deployment.objects.get(pk=canary.pk).status == "rolled_back"


def test_a_revoked_token_is_refused_at_once(roles: None, redis_port: int) -> None:
    canary = make_canary("revoked", traffic=50, auto_rollback=False)
    token = create_user("engine", "viewer")
    with granian(**server_redis(redis_port)) as server:
        for _ in range(3):  # the first authenticates in full, the rest on the fast path
            assert execute(server.base, canary.ruleset_id, token, user_id="a").status_code == 200
        for issued in AuthToken.objects.filter(user__username="engine"):
            issued.delete()
        refused = execute(server.base, canary.ruleset_id, token, user_id="a")
        assert refused.status_code == 401
        assert refused.json()["code"] == "authentication_failed"


def test_every_way_of_revoking_holds_within_a_second(roles: None, redis_port: int) -> None:
    """Bulk updates and raw SQL send no signal: the token cache must not depend on one."""
    canary = make_canary("revocations", traffic=50, auto_rollback=False)
    users = get_user_model().objects

    def delete_token_rows(username: str) -> None:
        with connection.cursor() as cursor:
            cursor.execute(
                "DELETE FROM knox_authtoken WHERE user_id = %s",
                [users.get(username=username).pk],
            )

    revocations: dict[str, Callable[[str], Any]] = {
        "bulk-deactivated": lambda name: users.filter(username=name).update(is_active=False),
        "token-row-deleted": delete_token_rows,
        "token-expired": lambda name: AuthToken.objects.filter(user__username=name).update(
            expiry=timezone.now() - timedelta(seconds=1)
        ),
        "user-deleted": lambda name: users.filter(username=name).delete(),
        "token-rotated": lambda name: call_command(
            "canary_user", name, "--role", "viewer", "--rotate-token", stdout=io.StringIO()
        ),
    }
    tokens = {name: create_user(name, "viewer") for name in revocations}
    with granian(**server_redis(redis_port)) as server:
        for token in tokens.values():
            # The first authenticates in full, the rest are served on the fast path.
            for _ in range(3):
                assert execute(server.base, canary.ruleset_id, token, user_id="a").ok
                assert resolve(server.base, canary.ruleset_id, token, user_id="a").ok
        for name, revoke in revocations.items():
            revoke(name)
            time.sleep(1.0)  # the promise: within one second, in every process
            for response in (
                execute(server.base, canary.ruleset_id, tokens[name], user_id="a"),
                resolve(server.base, canary.ruleset_id, tokens[name], user_id="a"),
            ):
                assert response.status_code == 401, (name, response.text)
                assert response.json()["code"] == "authentication_failed"
        # Tokens nobody revoked keep working.
        survivor = create_user("survivor", "viewer")
        for _ in range(3):
            assert execute(server.base, canary.ruleset_id, survivor, user_id="a").ok


def test_a_sticky_request_is_one_redis_round_trip(roles: None, redis_port: int) -> None:
    """What the web process sends Redis per request, as MONITOR sees it (commands a
    script runs are marked ``lua`` and travel in the one call)."""
    canary = make_canary("one-trip", traffic=50, auto_rollback=False)
    token = create_user("engine", "viewer")
    seen: list[dict[str, Any]] = []
    with granian(workers=1, CANARY_DRAIN_IN_WEB="0", **server_redis(redis_port)) as server:
        for _ in range(3):  # authenticates in full, decides and stores the context
            assert execute(server.base, canary.ruleset_id, token, user_id="a").ok
            assert resolve(server.base, canary.ruleset_id, token, user_id="a").ok
        time.sleep(1.0)  # past every recheck period: the steady state
        with redis.Redis(port=redis_port, socket_timeout=0.5).monitor() as monitor:
            for _ in range(10):
                assert execute(server.base, canary.ruleset_id, token, user_id="a").ok
                assert resolve(server.base, canary.ruleset_id, token, user_id="a").ok
            with contextlib.suppress(redis.TimeoutError):
                while True:
                    seen.append(monitor.next_command())
    sent = [
        command["command"].split()[0].upper() for command in seen if command["client_type"] != "lua"
    ]
    # NOTE: each of the worker's threads opens its own connection once (``canary.redis``);
    # one may not have served a request before.
    handshakes = [command for command in sent if command in ("HELLO", "CLIENT", "SELECT")]
    assert len(handshakes) <= 2 * 3, sent  # WEB_THREADS (2) connections, 3 commands each
    assert [command for command in sent if command not in handshakes] == ["EVALSHA"] * 20, sent


def test_the_rate_limit_answers_429_with_a_retry_hint(roles: None, redis_port: int) -> None:
    canary = make_canary("limited", traffic=50, auto_rollback=False)
    token = create_user("engine", "viewer")
    with granian(CANARY_DATAPLANE_RATE="5/minute", **server_redis(redis_port)) as server:
        codes = [
            execute(server.base, canary.ruleset_id, token, user_id=f"u{n}").status_code
            for n in range(8)
        ]
        limited = resolve(server.base, canary.ruleset_id, token, user_id="x")
    assert codes[:5] == [200] * 5
    assert set(codes[5:]) == {429}
    assert limited.status_code == 429
    assert limited.json()["code"] == "throttled"
    assert 1 <= int(limited.headers["Retry-After"]) <= 61


def test_retry_after_is_the_time_left_in_the_window_on_both_paths(
    roles: None, redis_port: int
) -> None:
    """The fast path and the API count in the same window and say the same when it ends."""
    canary = make_canary("retry-after", traffic=50, auto_rollback=False)
    token = create_user("engine", "viewer")
    window = 3600
    if time.time() % window < 3 or time.time() % window > window - 30:
        time.sleep(35)  # the first request well into a window, and the last ones in it too
    with granian(CANARY_DATAPLANE_RATE="3/hour", **server_redis(redis_port)) as server:
        for _ in range(3):  # the first authenticates in full, the others on the fast path
            assert execute(server.base, canary.ruleset_id, token, user_id="a").ok
        time.sleep(2)  # the counter's own TTL now differs from the time left by > 2 s
        compared = 0
        for _ in range(10):
            before = time.time()
            fast = execute(server.base, canary.ruleset_id, token, user_id="a")
            api = requests.post(  # an Origin header: the API answers (CORS)
                f"{server.base}/api/v1/rulesets/{canary.ruleset_id}/execute",
                json={"input": INPUT, "user_id": "a"},
                headers={"Authorization": f"Bearer {token}", "Origin": "https://app.example"},
                timeout=10,
            )
            after = time.time()
            assert (fast.status_code, api.status_code) == (429, 429)
            if int(before) != int(after):
                continue  # a second boundary between them: the answers may differ by one
            left = math.ceil(window - before % window)
            assert fast.headers["Retry-After"] == api.headers["Retry-After"] == str(left)
            assert (
                fast.json()
                == api.json()
                == {
                    "detail": f"Request was throttled. Expected available in {left} seconds.",
                    "code": "throttled",
                }
            )
            compared += 1
        assert compared >= 5


@dataclass(frozen=True)
class Probe:
    name: str
    method: str = "POST"
    verb: str = "execute"
    content_type: str | None = "application/json"
    body: bytes = b'{"input": {"temperature": 30, "zone": "A"}, "user_id": "u1"}'
    query: str = "user_id=u1"
    token: str | None = "valid"
    ruleset: str | None = None  # default: the canary's rule set


def probe_corpus() -> list[Probe]:
    """Requests the fast path might take, or must hand to the API: every one answered alike."""
    deep = b'{"input": ' + b'{"a": ' * 70 + b"1" + b"}" * 70 + b', "user_id": "u1"}'
    return [
        Probe("json"),
        Probe("json with charset", content_type="application/json; charset=utf-8"),
        Probe("json, upper case", content_type="APPLICATION/JSON;CHARSET=UTF-8"),
        Probe("json with another parameter", content_type="application/json; profile=x"),
        Probe(
            "json in latin-1",
            content_type="application/json; charset=latin-1",
            body='{"input": {"temperature": 30, "zone": "é"}, "user_id": "u1"}'.encode("latin-1"),
        ),
        Probe("json in an unknown charset", content_type="application/json; charset=klingon"),
        Probe("jsonx", content_type="application/jsonx"),
        Probe("json-patch", content_type="application/json-patch+json"),
        Probe("json suffix", content_type="application/vnd.api+json"),
        Probe("any type", content_type="*/*"),
        Probe("any application type", content_type="application/*"),
        Probe("text", content_type="text/plain"),
        Probe("form", content_type="application/x-www-form-urlencoded", body=b"input=1"),
        Probe("no content type", content_type=None),
        Probe("empty body", body=b""),
        Probe("not json", body=b"{input"),
        Probe("not an object", body=b"[1, 2]"),
        Probe("input not an object", body=b'{"input": [1]}'),
        Probe("unknown field", body=b'{"input": {}, "tenant": "x"}'),
        Probe("bad id", body=b'{"input": {}, "user_id": "a b"}'),
        Probe("id not a string", body=b'{"input": {}, "user_id": 7}'),
        Probe("NUL", body=b'{"input": {"zone": "A\\u0000"}, "user_id": "u1"}'),
        Probe("nested too deep", body=deep),
        Probe("wide integer", body=b'{"input": {"temperature": 18446744073709551616}}'),
        Probe("NaN", body=b'{"input": {"temperature": NaN}, "user_id": "u1"}'),
        Probe(
            "duplicate key",
            body=b'{"input": {"t": 1}, "input": {"temperature": 30}, "user_id": "u1"}',
        ),
        Probe("BOM", body=b'\xef\xbb\xbf{"input": {"temperature": 30}, "user_id": "u1"}'),
        Probe("no token", token=None),
        Probe("wrong token", token="wrong"),
        Probe("GET execute", method="GET", body=b""),
        Probe("PUT execute", method="PUT"),
        Probe("resolve"),
        Probe("resolve", method="GET", verb="resolve", body=b""),
        # (No ids at all: a random draw, by design; not comparable answer by answer.)
        Probe(
            "resolve, repeated id",
            method="GET",
            verb="resolve",
            body=b"",
            query="user_id=u1&user_id=u2",
        ),
        Probe(
            "resolve, unknown parameter",
            method="GET",
            verb="resolve",
            body=b"",
            query="user_id=u1&tenant=x",
        ),
        Probe("resolve, bad id", method="GET", verb="resolve", body=b"", query="user_id=a%20b"),
        Probe("POST resolve", verb="resolve"),
        Probe("DELETE resolve", method="DELETE", verb="resolve", body=b""),
        Probe("unknown rule set", ruleset=UNKNOWN),
        Probe("unknown rule set, wrong token", ruleset=UNKNOWN, token="wrong"),
        Probe(
            "resolve an unknown rule set", method="GET", verb="resolve", body=b"", ruleset=UNKNOWN
        ),
        Probe(
            "resolve an unknown rule set, wrong token",
            method="GET",
            verb="resolve",
            body=b"",
            ruleset=UNKNOWN,
            token="wrong",
        ),
        Probe("rule set id in capitals", ruleset="upper"),
    ]


UNKNOWN = "00000000-0000-4000-8000-000000000000"
EXPECTED_STATUS = {
    "json": 200,
    "json with charset": 200,
    "json, upper case": 200,
    "jsonx": 415,
    "json-patch": 415,
    "json suffix": 415,
    "text": 415,
    "no content type": 415,
    "wide integer": 400,
    "unknown rule set": 404,
    "unknown rule set, wrong token": 401,
    "GET execute": 405,
    "POST resolve": 405,
}


def probe(base: str, ruleset_id: str, item: Probe, tokens: dict[str, str]) -> requests.Response:
    headers = {}
    if item.content_type is not None:
        headers["Content-Type"] = item.content_type
    if item.token is not None:
        headers["Authorization"] = f"Bearer {tokens.get(item.token, item.token)}"
    query = f"?{item.query}" if item.verb == "resolve" and item.query else ""
    if item.ruleset is not None:
        ruleset_id = ruleset_id.upper() if item.ruleset == "upper" else item.ruleset
    return requests.request(
        item.method,
        f"{base}/api/v1/rulesets/{ruleset_id}/{item.verb}{query}",
        data=item.body,
        headers=headers,
        timeout=10,
    )


def comparable(response: requests.Response) -> dict[str, Any]:
    try:
        body: Any = response.json()
    except ValueError:
        body = response.content
    if isinstance(body, dict):
        body.pop("latency_ms", None)
    headers = ("Content-Type", "Allow", "Retry-After", "X-Canary-Version", "WWW-Authenticate")
    return {
        "status": response.status_code,
        "body": body,
        **{name: response.headers.get(name) for name in headers},
    }


def test_the_fast_path_answers_as_the_api_does(roles: None, redis_port: int) -> None:
    """Every request of the corpus, served by a process with the fast path and by one
    without it (the API), sharing PostgreSQL and Redis: the same status, body and headers."""
    canary = make_canary("both-paths", traffic=50, auto_rollback=False)
    tokens = {"valid": create_user("engine", "viewer")}
    env = server_redis(redis_port)
    with granian(**env) as fast, granian(CANARY_FAST_PATH="0", **env) as api:
        # The first request authenticates in full; then the fast path vouches for the token.
        assert execute(fast.base, canary.ruleset_id, tokens["valid"], user_id="u1").ok
        assert execute(fast.base, canary.ruleset_id, tokens["valid"], user_id="u1").ok
        for item in probe_corpus():
            served_fast = comparable(probe(fast.base, str(canary.ruleset_id), item, tokens))
            served_api = comparable(probe(api.base, str(canary.ruleset_id), item, tokens))
            assert served_fast == served_api, item.name
            assert served_fast["status"] == EXPECTED_STATUS.get(item.name, served_fast["status"])
    with (
        granian(CANARY_DATAPLANE_RATE="2/hour", **env) as fast,
        granian(CANARY_DATAPLANE_RATE="2/hour", CANARY_FAST_PATH="0", **env) as api,
    ):
        limited = {"valid": create_user("limited", "viewer")}
        for _ in range(2):
            assert execute(fast.base, canary.ruleset_id, limited["valid"], user_id="u1").ok
        compared = 0
        for _ in range(5):
            before = time.time()
            for item in (Probe("json"), Probe("unknown rule set", ruleset=UNKNOWN)):
                answers = [
                    comparable(probe(server.base, str(canary.ruleset_id), item, limited))
                    for server in (fast, api)
                ]
                if int(before) != int(time.time()):  # Retry-After may differ by a second
                    break
                assert answers[0]["status"] == 429, item.name
                assert answers[0] == answers[1], item.name
            else:
                compared += 1
        assert compared >= 3


def test_bad_input_is_a_400_naming_the_field(roles: None, redis_port: int) -> None:
    canary = make_canary("bad-input", traffic=50, auto_rollback=False)
    token = create_user("engine", "viewer")
    with granian(**server_redis(redis_port)) as server:
        not_object = execute(server.base, canary.ruleset_id, token, input=[1, 2])
        assert not_object.status_code == 400
        assert "input" in not_object.json()
        bad_id = execute(server.base, canary.ruleset_id, token, user_id="a b")
        assert bad_id.status_code == 400
        assert "user_id" in bad_id.json()
        nul = execute(server.base, canary.ruleset_id, token, input={"zone": "A\u0000"})
        assert nul.status_code == 400
        assert "input" in nul.json()
    assert stored(ExecutionLog).filter(deployment=canary).count() == 0


def test_an_integer_outside_64_bits_is_a_400_naming_its_path(roles: None, redis_port: int) -> None:
    """The fast path refuses it as the API does (orjson would read it as a float)."""
    canary = make_canary("wide-integers", traffic=50, auto_rollback=False)
    token = create_user("engine", "viewer")
    cases = {
        "input.temperature": 2**64,  # past unsigned 64 bits: orjson reads a float
        "input.readings[1]": 2**63,  # unsigned 64 bits: orjson reads an int
        "input.nested.deep[0].t": -(2**63) - 1,
    }
    documents = [
        {"temperature": 2**64},
        {"temperature": 30, "readings": [1, 2**63]},
        {"temperature": 30, "nested": {"deep": [{"t": -(2**63) - 1}]}},
    ]
    with granian(**server_redis(redis_port)) as server:
        # Authenticates in full once; the token is then cached for the fast path.
        assert execute(server.base, canary.ruleset_id, token, user_id="warm").ok
        assert execute(server.base, canary.ruleset_id, token, user_id="warm").ok
        for (path, number), document in zip(cases.items(), documents, strict=True):
            response = execute(server.base, canary.ruleset_id, token, input=document, user_id="w")
            assert response.status_code == 400, response.text
            message = f"{path}: integer {number} is outside the 64-bit range CEL evaluates exactly"
            assert response.json() == {
                "input": [message],
                "detail": f"input: {message}",
                "code": "invalid",
            }
        # Within the range: still the fast path's 200.
        edge = {"temperature": 30, "low": -(2**63), "high": 2**63 - 1}
        assert execute(server.base, canary.ruleset_id, token, input=edge, user_id="e").ok
        wait_until_drained(redis.Redis(port=redis_port))
    assert set(
        stored(ExecutionLog).filter(deployment=canary).values_list("user_id", flat=True)
    ) == {
        "warm",
        "e",
    }


@pytest.mark.parametrize(
    ("raw", "storable"),
    [
        # Nineteen digits in a string (numeric ids): still the fast path's.
        (b'{"input": {"order": "12345678901234567890"}, "user_id": "1234567890123456789"}', True),
        (b'{"input": {"t": 1234567890123456789}}', True),  # within 64 bits: an int
        (b'{"input": {"t": 18446744073709551616}}', False),  # orjson reads a float
        (b'{"input": {"l": [1, {"t": -9223372036854775809}]}}', False),
        (b'{"input": {"t": 12345678901234567890.5}}', False),  # the API decides
    ],
)
def test_only_a_number_orjson_may_have_widened_leaves_the_fast_path(
    raw: bytes, storable: bool
) -> None:
    from assignments.fastpath import _storable

    assert _storable(raw, orjson.loads(raw)) is storable


def test_two_hundred_first_requests_for_one_workflow(roles: None, redis_port: int) -> None:
    canary = make_canary("first-requests", traffic=50, auto_rollback=False)
    token = create_user("engine", "viewer")
    with granian(workers=3, **server_redis(redis_port)) as server:
        barrier = threading.Barrier(50)

        def first_request(n: int) -> str:
            if n < 50:
                barrier.wait(timeout=30)
            response = execute(
                server.base, canary.ruleset_id, token, workflow_id="wf-shared", user_id=f"u{n}"
            )
            assert response.status_code == 200, response.text
            return response.json()["canary_version"]

        with ThreadPoolExecutor(max_workers=50) as pool:
            answers = list(pool.map(first_request, range(200)))
    assert len(set(answers)) == 1
    rows = stored(Assignment).filter(deployment=canary, identifier="wf-shared")
    assert rows.count() == 1
    assert rows.get().assigned_version == answers[0]
    assert stored(ExecutionLog).filter(deployment=canary).count() == 200


def test_a_worker_killed_under_load_leaves_no_answer_unlogged(roles: None, redis_port: int) -> None:
    canary = make_canary("killed", traffic=50, auto_rollback=False)
    token = create_user("engine", "viewer")
    answered: dict[str, str] = {}
    lock = threading.Lock()
    stop = threading.Event()

    def traffic(base: str, lane: int) -> None:
        n = 0
        while not stop.is_set():
            user = f"lane{lane}-{n}"
            n += 1
            try:
                response = execute(base, canary.ruleset_id, token, user_id=user)
            except requests.RequestException:
                continue
            if response.status_code == 200:
                with lock:
                    answered[user] = response.json()["canary_version"]

    with granian(workers=2, **server_redis(redis_port)) as server:
        senders = [threading.Thread(target=traffic, args=(server.base, lane)) for lane in range(8)]
        for sender in senders:
            sender.start()
        time.sleep(1.5)
        victim = server.workers()[0]
        os.kill(victim, signal.SIGKILL)
        time.sleep(2.0)  # the server respawns the worker and traffic goes on
        stop.set()
        for sender in senders:
            sender.join(timeout=30)
    assert len(answered) > 50
    logged = dict(
        stored(ExecutionLog).filter(deployment=canary).values_list("user_id", "served_version")
    )
    missing = [user for user in answered if user not in logged]
    assert missing == []
    assert all(logged[user] == version for user, version in answered.items())
    # A request cut off after its record was appended is logged without an answer
    # (at most one per request in flight).
    assert len(logged) - len(answered) <= 8


def test_postgresql_down_loses_no_answered_execute(roles: None, redis_port: int) -> None:
    """Executes are answered while PostgreSQL is away; their rows arrive once it is back."""
    if connection.vendor != "postgresql":
        pytest.skip("cutting PostgreSQL off needs PostgreSQL (CI runs on it)")
    canary = make_canary("postgres-down", traffic=50, auto_rollback=False)
    token = create_user("engine", "viewer")
    database = connection.settings_dict
    proxy = CuttableProxy((database.get("HOST") or "127.0.0.1", int(database.get("PORT") or 5432)))
    proxy.start()
    proxied = database_url_of_test_db().replace(
        f":{database.get('PORT') or 5432}/", f":{proxy.port}/"
    )
    # One worker: the process that loaded the routing state is the one that answers
    # (a process that never loaded it cannot, until PostgreSQL is back).
    with granian(workers=1, DATABASE_URL=proxied, **server_redis(redis_port)) as server:
        for n in range(5):  # authenticates in full once, warms the routing state
            assert execute(server.base, canary.ruleset_id, token, user_id=f"before-{n}").ok
        proxy.cut()
        during = [
            execute(server.base, canary.ruleset_id, token, user_id=f"during-{n}") for n in range(30)
        ]
        assert [response.status_code for response in during] == [200] * 30
        time.sleep(1.5)  # the drainers fail meanwhile: nothing may be dropped
        proxy.start()
        wait_until_drained(redis.Redis(port=redis_port), timeout=20)
    logged = set(stored(ExecutionLog).filter(deployment=canary).values_list("user_id", flat=True))
    assert {f"during-{n}" for n in range(30)} <= logged
    assert {f"before-{n}" for n in range(5)} <= logged
