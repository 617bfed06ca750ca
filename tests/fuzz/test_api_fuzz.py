"""Property-based fuzzing of the whole REST API against its own OpenAPI schema.

A real gunicorn serves the test database; the schema is loaded from its
``/api/schema/``; Schemathesis sends every operation valid and invalid requests
(its deterministic coverage phase, then up to ``MAX_EXAMPLES`` generated ones)
with an Approver's token and checks each answer: never a 5xx, a documented
status code, a documented content type, a body that matches the declared schema.
A share of the cases is aimed at seeded deployments in every lifecycle state, so
they reach past the 404. See docs/fuzzing.md.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

schemathesis = pytest.importorskip(
    "schemathesis", reason="schemathesis is not installed (see docs/fuzzing.md)"
)

from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.core.failures import Failure, FailureGroup  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.accounts import create_user  # noqa: E402
from tests.fuzz.scenarios import STATES, VERSIONS, Stock, World  # noqa: E402
from tests.servers import gunicorn  # noqa: E402

# Bounded so that CI stays fast: the coverage phase's deterministic cases plus at
# most this many generated ones per operation (raise it for a deeper run).
MAX_EXAMPLES = int(os.environ.get("CANARY_FUZZ_MAX_EXAMPLES", "10"))
# Derandomized and seeded: the same schema gives the same requests on every run.
SEED = int(os.environ.get("CANARY_FUZZ_SEED", "20260401"))
# The deadline of one request: a server that has not answered by then fails the case.
REQUEST_TIMEOUT_SECONDS = 15
# A file path: record every request and its outcome as JSON lines and fail on
# nothing, instead of stopping at the first failure of each operation (triage).
REPORT_PATH = os.environ.get("CANARY_FUZZ_REPORT")

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]

# Where a case is aimed: at whatever id it generated (a missing or malformed
# id: a 404) or at a seeded deployment (or its rule set) in one of the states.
TARGETS = ("generated", *STATES)
READS = ("GET", "HEAD", "OPTIONS")


@dataclass
class Fuzz:
    base: str
    token: str
    world: World
    stock: Stock


@pytest.fixture
def fuzz(transactional_db: None, roles: None, tmp_path: Path) -> Iterator[Fuzz]:
    """Seed one deployment per lifecycle state, an Approver token, and a live server."""
    world = World.build()
    token = create_user("fuzz-approver", "approver")
    server_env = {
        # The Celery broker of a server without Redis is a directory: keep it out of the tree.
        "CANARY_VAR_DIR": str(tmp_path),
        # One client sends thousands of requests a minute; rate limits are not under test.
        "CANARY_API_RATE": "",
        "CANARY_DATAPLANE_RATE": "",
    }
    with gunicorn(**server_env) as base:
        yield Fuzz(base=base, token=token, world=world, stock=Stock())


@pytest.fixture
def api_schema(fuzz: Fuzz, request: pytest.FixtureRequest) -> Any:
    # NOTE: schemathesis 4.32's from_fixture reads and rewrites `node._nodeid`,
    # which pytest 9.2 no longer has (the id lives in `node._id`); give it one.
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid
    auth = {"Authorization": f"Bearer {fuzz.token}"}
    schema = schemathesis.openapi.from_url(f"{fuzz.base}/api/schema/", headers=auth, timeout=30)
    schema.config.update(
        base_url=fuzz.base, headers=auth, request_timeout=REQUEST_TIMEOUT_SECONDS, request_retries=0
    )
    schema.config.seed = SEED
    schema.config.generation.update(
        max_examples=MAX_EXAMPLES,
        deterministic=True,
        # No example database: runs neither depend on nor write local state.
        database="none",
        # Every request carries the Approver token above; generated credentials
        # would only exercise DRF's 401, which tests/deployments/test_api_roles.py covers.
        with_security_parameters=False,
    )
    return schema


schema = schemathesis.pytest.from_fixture("api_schema")


# Every operation is fuzzed; none is excluded. DELETE needs no exclusion: writes
# to a deployment act on a deployment of their own (see `aim`), so no case can
# remove or change the data that later cases read.
@pytest.mark.django_db(transaction=True)
@schema.parametrize()
def test_api_conforms_to_its_schema(case: Any, fuzz: Fuzz) -> None:
    state = aim(case, fuzz)
    response = case.call()
    if state is not None and not 400 <= response.status_code < 500:
        # Only a refused write is certain to have changed nothing.
        fuzz.stock.spoil(state)
    if REPORT_PATH is None:
        case.validate_response(response, checks=CHECKS)
        return
    try:
        case.validate_response(response, checks=CHECKS)
    except (FailureGroup, Failure) as exc:
        record(case, response, exc.exceptions if isinstance(exc, FailureGroup) else (exc,), fuzz)
    else:
        record(case, response, (), fuzz)


# --- aiming cases at seeded data -----------------------------------------------


def _digest(case: Any) -> int:
    """A stable function of the generated case, so a replayed case is aimed the same way."""
    body = case.body if isinstance(case.body, dict | list | str | int | float | bool) else None
    material = json.dumps(
        [case.method, case.operation.path, case.path_parameters, case.query, body],
        sort_keys=True,
        default=repr,
    )
    return int.from_bytes(hashlib.blake2b(material.encode(), digest_size=8).digest(), "big")


def _is_uuid(value: Any) -> bool:
    try:
        uuid.UUID(value)
    except (TypeError, ValueError, AttributeError):
        return False
    return True


def aim(case: Any, fuzz: Fuzz) -> str | None:
    """Point most cases at seeded objects; return the state of a stock deployment used.

    Reads use the shared world. A write to a deployment gets a stock deployment
    in the chosen state, so promote, rollback, deprecate, delete and the rest
    act on that state whatever earlier cases did, and the world stays as seeded.
    """
    digest = _digest(case)
    target = TARGETS[digest % len(TARGETS)]
    if target == "generated":
        return None
    world, used = fuzz.world, None
    path = case.operation.path
    params = case.path_parameters or {}
    name = next((n for n in ("id", "deployment_id", "ruleset_id") if n in params), None)
    if name is not None and path.startswith("/api/v1/deployments/"):
        if case.method.upper() in READS:
            params[name] = world.deployment_id(target)
        else:
            params[name] = str(fuzz.stock.take(target).pk)
            used = target
    elif name is not None and path.startswith("/api/v1/rulesets/"):
        params[name] = world.ruleset_id(target)
    if isinstance(case.query, dict) and _is_uuid(case.query.get("ruleset_id")):
        case.query["ruleset_id"] = world.ruleset_id(target)
    body = case.body
    # New versions keep their generated names; elsewhere `version` names an existing one.
    if isinstance(body, dict) and not path.endswith("/versions/"):
        if _is_uuid(body.get("ruleset_id")):
            body["ruleset_id"] = world.ruleset_id(target)
        if isinstance(body.get("version"), str):
            body["version"] = VERSIONS[(digest >> 8) % len(VERSIONS)]
    return used


# --- hostile JSON: what Schemathesis does not generate ------------------------------
#
# Schemathesis writes its bodies as valid UTF-8 JSON of modest depth, so three
# kinds of input that Python's json module accepts never reach the server from
# it: a NUL character (PostgreSQL refuses it in jsonb and text), a lone UTF-16
# surrogate such as "\ud800" (a str that cannot be encoded, so neither stored
# nor rendered) and nesting past the interpreter's recursion limit. This test
# puts each into every leaf and every object of a valid body of every operation
# that takes one, then reads back what may have been stored.

NUL, SURROGATE = "a\u0000b", "x\ud800y"
DEEP = "[" * 3000 + "]" * 3000  # raw JSON text: past any recursion limit
HOSTILE_VALUES = {"nul": json.dumps(NUL), "surrogate": json.dumps(SURROGATE), "deep": DEEP}
HOSTILE_KEYS = {"nul-key": json.dumps(NUL), "surrogate-key": json.dumps(SURROGATE)}


def _templates(world: World) -> dict[tuple[str, str], tuple[str | None, dict[str, Any]]]:
    """A valid body per operation, and the seeded state its path is aimed at."""
    canary_ruleset = world.ruleset_id("canary")
    return {
        ("POST", "/api/v1/rulesets/"): (None, {"name": "hostile-0", "description": "d"}),
        ("POST", "/api/v1/rulesets/{id}/versions/"): (
            "canary",
            {
                "version": "v42.0.0",
                "rules": [{"name": "r", "condition": "true", "output": {"x": "y"}}],
                "default": {"x": "z"},
                "changelog": "c",
            },
        ),
        ("POST", "/api/v1/rulesets/{id}/test/"): (
            "canary",
            {
                "input": {"temperature": 30, "s": "x"},
                "expected_output": {"a": "b"},
                "version": "v1.0.0",
            },
        ),
        ("POST", "/api/v1/rulesets/{ruleset_id}/execute/"): (
            "canary",
            {"input": {"temperature": 30, "s": "x"}, "user_id": "u-1"},
        ),
        ("POST", "/api/v1/deployments/"): (
            None,
            {
                "ruleset_id": canary_ruleset,
                "version": "v3.0.0",
                "changelog": "c",
                "canary_config": {"duration_minutes": 5},
                "compensation_strategy": "manual",
            },
        ),
        ("PATCH", "/api/v1/deployments/{id}/"): (
            "draft",
            {
                "changelog": "c",
                "canary_config": {"min_samples": 5},
                "compensation_strategy": "manual",
            },
        ),
        ("POST", "/api/v1/deployments/{id}/start-canary/"): (
            "draft",
            {"canary_pct": 5, "canary_target_filter": {"user_ids": ["u"], "workflow_ids": ["w"]}},
        ),
        ("PUT", "/api/v1/deployments/{id}/traffic/"): ("canary", {"traffic_percentage": 20}),
        ("POST", "/api/v1/deployments/{id}/rollback/"): (
            "canary",
            {"reason": "r", "apply_compensation": True},
        ),
    }


def _variants(template: Any) -> Iterator[tuple[str, str]]:
    """(label, raw JSON) for each hostile value at each leaf and each hostile key in each object."""
    marker = "__HOSTILE__"

    def walk(node: Any, path: str) -> Iterator[tuple[str, Any]]:
        if isinstance(node, dict):
            yield f"{path}{{+key}}", {**node, marker: 1}
            for key, child in node.items():
                for where, replaced in walk(child, f"{path}.{key}" if path else key):
                    yield where, {**node, key: replaced}
        elif isinstance(node, list):
            for i, child in enumerate(node):
                for where, replaced in walk(child, f"{path}.{i}"):
                    yield where, [*node[:i], replaced, *node[i + 1 :]]
        else:
            yield path, marker

    for where, body in walk(template, ""):
        raw = json.dumps(body)
        if where.endswith("{+key}"):
            for name, key in HOSTILE_KEYS.items():
                yield f"{where} {name}", raw.replace(f'"{marker}"', key)
        else:
            for name, value in HOSTILE_VALUES.items():
                yield f"{where} {name}", raw.replace(f'"{marker}"', value)


@pytest.mark.django_db(transaction=True)
def test_hostile_json_is_a_4xx_and_stores_nothing_unreadable(fuzz: Fuzz) -> None:
    session = requests.Session()
    session.headers.update(
        {"Authorization": f"Bearer {fuzz.token}", "Content-Type": "application/json"}
    )
    live = session.get(f"{fuzz.base}/api/schema/", params={"format": "json"}, timeout=30).json()
    templates = _templates(fuzz.world)
    with_body = {
        (method.upper(), path)
        for path, item in live["paths"].items()
        for method, operation in item.items()
        if "application/json" in operation.get("requestBody", {}).get("content", {})
        and operation["requestBody"]["content"]["application/json"]
        .get("schema", {})
        .get("properties")
    }
    assert with_body <= set(templates), (
        f"no hostile template for {sorted(with_body - set(templates))}"
    )
    problems = []
    unique = itertools.count(1)
    for (method, path), (state, template) in templates.items():
        for label, raw in _variants(template):
            used = None
            url = path
            if "{" in path:
                if path.startswith("/api/v1/deployments/"):
                    ident, used = str(fuzz.stock.take(state).pk), state
                else:
                    ident = fuzz.world.ruleset_id(state)
                url = path.replace("{id}", ident).replace("{ruleset_id}", ident)
            # Names that must be new are made new, so each request reaches the database.
            n = next(unique)
            body = raw.replace('"v42.0.0"', f'"v42.0.{n}"').replace('"hostile-0"', f'"hostile-{n}"')
            response = session.request(method, fuzz.base + url, data=body.encode(), timeout=30)
            if used and not 400 <= response.status_code < 500:
                fuzz.stock.spoil(used)
            content_type = response.headers.get("Content-Type", "")
            if response.status_code >= 500 or "json" not in content_type:
                shown = body.replace(DEEP, "[...3000 levels...]")[:300]
                problems.append(f"{response.status_code} {method} {url} [{label}]: {shown}")
    # What was stored must still render: the reads of everything the writes touched.
    response = session.get(f"{fuzz.base}/api/v1/rulesets", params={"page_size": 1000}, timeout=30)
    if response.status_code >= 500:
        problems.append(f"{response.status_code} GET /api/v1/rulesets (after the hostile writes)")
    for state in STATES:
        for read in (
            f"/api/v1/rulesets/{fuzz.world.ruleset_id(state)}/versions",
            f"/api/v1/deployments/{fuzz.world.deployment_id(state)}/compensation",
            f"/api/v1/deployments/{fuzz.world.deployment_id(state)}/events",
            f"/api/v1/deployments?ruleset_id={fuzz.world.ruleset_id(state)}",
        ):
            response = session.get(fuzz.base + read, timeout=30)
            if response.status_code >= 500:
                problems.append(f"{response.status_code} GET {read} (after the hostile writes)")
    assert not problems, "\n".join(problems)


# --- triage mode ------------------------------------------------------------------


def record(case: Any, response: Any, failures: Any, fuzz: Fuzz) -> None:
    """One JSON line per request: what was sent, what came back, which checks failed."""
    curl = case.as_curl_command(headers={"Authorization": "Bearer $TOKEN"}, base_url=fuzz.base)
    entry = {
        "operation": case.operation.label,
        "status": response.status_code,
        "failures": [
            {"code": getattr(f, "code", ""), "title": f.title, "message": f.message}
            for f in failures
        ],
        "response": (response.content or b"").decode("utf-8", "replace")[:500],
        "curl": curl.replace(fuzz.base, "$BASE"),
    }
    with open(REPORT_PATH, "a", encoding="utf-8") as out:  # type: ignore[arg-type]
        out.write(json.dumps(entry) + "\n")
