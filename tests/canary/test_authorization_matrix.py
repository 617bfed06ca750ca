"""Who may call what: every ``/api/v1/`` endpoint x method x {no token, viewer, approver, admin}.

The endpoints and their methods are read from the URL conf, and ``RULES`` states
for each one the least role that may call it and what an authorised call
answers. ``test_every_endpoint_has_a_rule`` fails as soon as an endpoint or a
method is added (or removed) without a matching line here, so nobody ships an
endpoint whose authorisation was never decided.

Expectations: no token is 401 everywhere; a role below the minimum is 403; a
role at or above it gets the rule's answer (a 409 proves the role gate was
passed and the lifecycle refused). The data plane (``execute``, ``resolve``)
is "any authenticated client": its rules only say no token is 401 and no role
is refused, because its internals are free to change.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.test import APIClient

from assignments.client_tokens import client_token_create
from assignments.models import ClientToken
from deployments import services
from deployments.models import Deployment, RuleSet, RuleSetTestCase
from monitoring.automation.backtests import backtest_create
from monitoring.models import Backtest
from tests.samples import DEFAULT_OUTPUT, V1_RULES

pytestmark = pytest.mark.django_db

ROLES: tuple[str | None, ...] = (None, "viewer", "approver", "admin")
RANK = {"viewer": 1, "approver": 2, "admin": 3}
ANY = "any authenticated"  # the data plane
PUBLIC = "no token"  # a trigger's secret URL: the URL is the credential (SPEC 10.4)
WRITE_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


# --- the URL conf ----------------------------------------------------------------------


def _walk(patterns: list[Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from _walk(pattern.url_patterns, prefix + str(pattern.pattern))
        elif isinstance(pattern, URLPattern):
            yield prefix + str(pattern.pattern), pattern.callback


def _template(route: str) -> str:
    """``api/v1/^rulesets/(?P<pk>[^/.]+)/test/?$`` -> ``/api/v1/rulesets/{id}/test``."""
    path = route.replace("^", "").replace("/?$", "").replace("$", "")
    return "/" + re.sub(r"\(\?P<\w+>[^)]*\)", "{id}", path)


def _methods(callback: Any) -> set[str]:
    actions = getattr(callback, "actions", None)
    if actions is not None:  # a viewset route
        # NOTE: DRF adds "head" to a viewset's actions the first time it serves one,
        # so whether it is listed depends on which tests ran before.
        return {method.upper() for method in actions if method != "head"}
    view_class = callback.view_class
    return {method.upper() for method in WRITE_METHODS if hasattr(view_class, method.lower())}


def api_endpoints() -> dict[str, set[str]]:
    endpoints: dict[str, set[str]] = {}
    for route, callback in _walk(get_resolver().url_patterns):
        if route.startswith("api/v1/"):
            endpoints.setdefault(_template(route), set()).update(_methods(callback))
    return endpoints


# --- the rules -------------------------------------------------------------------------


@dataclass
class World:
    ruleset: RuleSet
    canary: Deployment
    draft: Deployment
    other_draft: Deployment
    other_active: Deployment
    client_token: ClientToken
    test_case: RuleSetTestCase
    backtest: Backtest
    webhook: Any = None
    trigger: Any = None

    def id_for(self, target: str) -> str:
        return str(getattr(self, target).pk)


@dataclass(frozen=True)
class Rule:
    minimum: str  # "viewer", "approver", "admin", or ANY
    answers: frozenset[int] = frozenset({200})
    target: str | None = None  # which object of the World the {id} is
    body: Callable[[World], Any] | None = None


def _rule(
    minimum: str, *answers: int, on: str | None = None, body: Callable[[World], Any] | None = None
) -> Rule:
    return Rule(minimum, frozenset(answers or {200}), on, body)


RULES: dict[tuple[str, str], Rule] = {
    # rule sets and versions
    ("GET", "/api/v1/rulesets"): _rule("viewer"),
    ("POST", "/api/v1/rulesets"): _rule("approver", 201, body=lambda w: {"name": "new-rules"}),
    ("GET", "/api/v1/rulesets/{id}"): _rule("viewer", on="ruleset"),
    ("PATCH", "/api/v1/rulesets/{id}"): _rule(
        "admin", on="ruleset", body=lambda w: {"redacted_input_paths": ["customer.email"]}
    ),
    ("GET", "/api/v1/rulesets/{id}/versions"): _rule("viewer", on="ruleset"),
    ("POST", "/api/v1/rulesets/{id}/versions"): _rule(
        "approver", 201, on="ruleset", body=lambda w: {"version": "v9.0.0", "rules": V1_RULES}
    ),
    ("POST", "/api/v1/rulesets/{id}/test"): _rule(
        "approver", on="ruleset", body=lambda w: {"input": {"temperature": 30}, "version": "v1.0.0"}
    ),
    # the data plane
    ("POST", "/api/v1/rulesets/{id}/execute"): _rule(
        ANY, on="ruleset", body=lambda w: {"input": {"temperature": 30, "zone": "A"}}
    ),
    ("GET", "/api/v1/rulesets/{id}/resolve"): _rule(ANY, on="ruleset"),
    # deployments
    ("GET", "/api/v1/deployments"): _rule("viewer"),
    ("POST", "/api/v1/deployments"): _rule(
        "approver",
        201,
        body=lambda w: {"ruleset_id": str(w.ruleset.pk), "version": "v1.0.0"},
    ),
    ("GET", "/api/v1/deployments/{id}"): _rule("viewer", on="canary"),
    ("PATCH", "/api/v1/deployments/{id}"): _rule(
        "approver", on="draft", body=lambda w: {"changelog": "edited"}
    ),
    ("DELETE", "/api/v1/deployments/{id}"): _rule("admin", 204, on="draft"),
    ("GET", "/api/v1/deployments/{id}/events"): _rule("viewer", on="canary"),
    ("POST", "/api/v1/deployments/{id}/start-canary"): _rule(
        "approver", on="other_draft", body=lambda w: {"canary_pct": 10}
    ),
    ("PUT", "/api/v1/deployments/{id}/traffic"): _rule(
        "approver", on="canary", body=lambda w: {"traffic_percentage": 50}
    ),
    ("POST", "/api/v1/deployments/{id}/promote"): _rule("approver", on="canary"),
    ("POST", "/api/v1/deployments/{id}/rollback"): _rule(
        "approver", on="canary", body=lambda w: {"reason": "bad"}
    ),
    ("POST", "/api/v1/deployments/{id}/deprecate"): _rule("approver", on="other_active"),
    # rollout plans: the canary has no steps; pausing stops auto_progress, nothing to resume
    ("GET", "/api/v1/deployments/{id}/plan"): _rule("viewer", on="canary"),
    ("POST", "/api/v1/deployments/{id}/pause"): _rule("approver", on="canary"),
    ("POST", "/api/v1/deployments/{id}/resume"): _rule("approver", 409, on="canary"),
    # measurements and assignments
    ("GET", "/api/v1/deployments/{id}/metrics"): _rule("viewer", on="canary"),
    ("GET", "/api/v1/deployments/{id}/comparison"): _rule("viewer", on="canary"),
    ("GET", "/api/v1/deployments/{id}/health"): _rule("viewer", on="canary"),
    ("GET", "/api/v1/deployments/{id}/readiness"): _rule("viewer", on="canary"),
    ("GET", "/api/v1/deployments/{id}/shadow"): _rule("viewer", on="canary"),
    ("GET", "/api/v1/deployments/{id}/shadow/differences"): _rule("viewer", on="canary"),
    ("GET", "/api/v1/deployments/{id}/assignments"): _rule("viewer", on="canary"),
    # compensation: nothing is pending or flagged, so an authorised call is a 409
    ("GET", "/api/v1/deployments/{id}/compensation"): _rule("viewer", on="canary"),
    ("POST", "/api/v1/deployments/{id}/compensation/complete"): _rule("approver", 409, on="canary"),
    ("POST", "/api/v1/deployments/{id}/compensation/replay"): _rule("approver", 409, on="canary"),
    # a held regression (SPEC 9.6): none is held here, so an authorised call is a 409
    ("POST", "/api/v1/deployments/{id}/dismiss-regression"): _rule(
        "approver", 409, on="canary", body=lambda w: {"reason": "reviewed"}
    ),
    # before the start (SPEC 10.2): test cases, backtests, preflight
    ("GET", "/api/v1/rulesets/{id}/test-cases"): _rule("viewer", on="ruleset"),
    ("POST", "/api/v1/rulesets/{id}/test-cases"): _rule(
        "approver",
        201,
        on="ruleset",
        body=lambda w: {"name": "new", "input": {"temperature": 30}, "expected_output": None},
    ),
    ("POST", "/api/v1/rulesets/{id}/test-cases/run"): _rule(
        "approver", on="ruleset", body=lambda w: {"version": "v1.0.0"}
    ),
    ("DELETE", "/api/v1/rulesets/{id}/test-cases/{id}"): _rule("approver", 204, on="test_case"),
    ("GET", "/api/v1/rulesets/{id}/backtests"): _rule("viewer", on="ruleset"),
    ("POST", "/api/v1/rulesets/{id}/backtests"): _rule(
        "approver", 202, on="ruleset", body=lambda w: {"version": "v3.0.0"}
    ),
    ("GET", "/api/v1/backtests/{id}"): _rule("viewer", on="backtest"),
    ("GET", "/api/v1/backtests/{id}/differences"): _rule("viewer", on="backtest"),
    ("GET", "/api/v1/deployments/{id}/preflight"): _rule("viewer", on="draft"),
    # the scheduler
    ("GET", "/api/v1/scheduler/jobs"): _rule("viewer"),
    # client tokens (browser-safe, resolve only): Admins manage them
    ("GET", "/api/v1/client-tokens"): _rule("admin"),
    ("POST", "/api/v1/client-tokens"): _rule(
        "admin",
        201,
        body=lambda w: {
            "name": "web",
            "ruleset_ids": [str(w.ruleset.pk)],
            "allowed_origins": ["https://app.example.com"],
        },
    ),
    ("GET", "/api/v1/client-tokens/{id}"): _rule("admin", on="client_token"),
    ("DELETE", "/api/v1/client-tokens/{id}"): _rule("admin", 204, on="client_token"),
    # webhooks and triggers (SPEC 10.4): Admins manage them
    ("GET", "/api/v1/webhooks"): _rule("admin"),
    ("POST", "/api/v1/webhooks"): _rule(
        "admin",
        201,
        body=lambda w: {"name": "ci", "url": "http://127.0.0.1:9/hook", "events": ["*"]},
    ),
    ("GET", "/api/v1/webhooks/{id}"): _rule("admin", on="webhook"),
    ("PATCH", "/api/v1/webhooks/{id}"): _rule(
        "admin", on="webhook", body=lambda w: {"active": True}
    ),
    ("DELETE", "/api/v1/webhooks/{id}"): _rule("admin", 204, 404, on="webhook"),
    ("GET", "/api/v1/webhooks/{id}/deliveries"): _rule("admin", on="webhook"),
    # {id} is the webhook's id for both: not one of its deliveries, so an authorised call is a 404
    ("POST", "/api/v1/webhooks/{id}/deliveries/{id}/redeliver"): _rule("admin", 404, on="webhook"),
    ("GET", "/api/v1/triggers"): _rule("admin"),
    ("POST", "/api/v1/triggers"): _rule(
        "admin",
        201,
        body=lambda w: {"name": "pager", "ruleset_id": str(w.ruleset.pk), "action": "rollback"},
    ),
    ("DELETE", "/api/v1/triggers/{id}"): _rule("admin", 204, 404, on="trigger"),
    # {id} twice: the trigger's id as its secret is wrong, so every caller gets the 404
    ("POST", "/api/v1/triggers/{id}/{id}"): _rule(PUBLIC, 404, on="trigger"),
}


# --- fixtures --------------------------------------------------------------------------


@pytest.fixture
def world(ruleset: RuleSet, active_v1: Deployment, canary_v2: Deployment) -> World:
    services.ruleset_version_create(
        ruleset=ruleset, version="v3.0.0", rules=V1_RULES, default=DEFAULT_OUTPUT, actor="t"
    )
    draft = services.deployment_create(ruleset_id=ruleset.pk, version="v3.0.0", actor="t")
    other = services.ruleset_create(name="other", actor="t")
    for version in ("1.0.0", "2.0.0"):
        services.ruleset_version_create(
            ruleset=other, version=version, rules=V1_RULES, default=DEFAULT_OUTPUT, actor="t"
        )
    first = services.deployment_create(ruleset_id=other.pk, version="1.0.0", actor="t")
    other_active = services.deployment_promote(deployment_id=first.pk, actor="t")
    other_draft = services.deployment_create(ruleset_id=other.pk, version="2.0.0", actor="t")
    client_token, _ = client_token_create(
        name="web", ruleset_ids=[str(ruleset.pk)], allowed_origins=["https://a.test"], actor="t"
    )
    from monitoring.automation.triggers import trigger_create
    from monitoring.notifications.webhooks import webhook_create

    webhook = webhook_create(name="ci", url="http://127.0.0.1:9/hook", events=["*"])
    trigger, _ = trigger_create(name="pager", ruleset_id=ruleset.pk, action="rollback")
    test_case = services.ruleset_case_create(
        ruleset=ruleset, name="hot", input={"temperature": 30}, actor="t"
    )
    backtest = backtest_create(ruleset_id=ruleset.pk, version="v3.0.0", actor="t")
    return World(
        ruleset,
        canary_v2,
        draft,
        other_draft,
        other_active,
        client_token,
        test_case,
        backtest,
        webhook,
        trigger,
    )


def url_for(path: str, rule_target: str | None, world: World) -> str:
    if rule_target == "test_case":  # /rulesets/{id}/test-cases/{id}
        ruleset_path = path.replace("{id}", world.id_for("ruleset"), 1)
        return ruleset_path.replace("{id}", world.id_for("test_case"))
    return path.replace("{id}", world.id_for(rule_target)) if rule_target else path


def send(client: APIClient, method: str, url: str, body: Any = None) -> Any:
    if body is None:
        return client.generic(method, url)
    return getattr(client, method.lower())(url, body, format="json")


def expected_for(rule: Rule, role: str | None) -> frozenset[int] | None:
    """The answers allowed for ``role``; None means "anything but 401 and 403"."""
    if rule.minimum == PUBLIC:
        return rule.answers
    if role is None:
        return frozenset({401})
    if rule.minimum == ANY:
        return None
    if RANK[role] < RANK[rule.minimum]:
        return frozenset({403})
    return rule.answers


def check(response: Any, allowed: frozenset[int] | None, where: tuple[Any, ...]) -> None:
    if allowed is None:
        assert response.status_code not in (401, 403), (where, response.content[:300])
        return
    assert response.status_code in allowed, (where, response.status_code, response.content[:300])
    if response.status_code in (401, 403) and response.content:  # HEAD has no body
        assert response.json()["code"] in ("not_authenticated", "permission_denied"), where


# --- the tests -------------------------------------------------------------------------


def test_every_endpoint_has_a_rule() -> None:
    discovered = {(method, path) for path, methods in api_endpoints().items() for method in methods}
    missing = sorted(discovered - set(RULES))
    stale = sorted(set(RULES) - discovered)
    assert not missing, f"endpoints without an authorization rule in RULES: {missing}"
    assert not stale, f"rules for endpoints that no longer exist: {stale}"


@pytest.mark.parametrize("role", ROLES, ids=lambda role: role or "no-token")
@pytest.mark.parametrize(("method", "path"), sorted(RULES), ids=lambda x: x)
def test_matrix(
    method: str,
    path: str,
    role: str | None,
    world: World,
    client_for: Callable[[str | None], APIClient],
) -> None:
    rule = RULES[(method, path)]
    body = rule.body(world) if rule.body else None
    response = send(client_for(role), method, url_for(path, rule.target, world), body)
    check(response, expected_for(rule, role), (method, path, role))


@dataclass
class Probe:
    path: str
    target: str | None
    allowed_methods: set[str] = field(default_factory=set)
    dataplane: bool = False


def probes() -> list[Probe]:
    found: dict[str, Probe] = {}
    for (method, path), rule in RULES.items():
        if rule.minimum == PUBLIC:
            continue  # answers everyone alike, as the matrix shows
        probe = found.setdefault(path, Probe(path, rule.target))
        probe.allowed_methods.add(method)
        probe.dataplane = probe.dataplane or rule.minimum == ANY
    return [found[path] for path in sorted(found)]


@pytest.mark.parametrize("probe", probes(), ids=lambda probe: probe.path)
def test_options_head_and_unlisted_methods(
    probe: Probe, world: World, client_for: Callable[[str | None], APIClient]
) -> None:
    """Never a change: OPTIONS describes, HEAD reads, an unlisted method is refused."""
    url = url_for(probe.path, probe.target, world)
    for role in ROLES:
        client = client_for(role)
        options = client.options(url)
        if role is None:
            assert options.status_code == 401, (probe.path, "OPTIONS")
        elif probe.dataplane:
            assert options.status_code not in (401, 403), (probe.path, "OPTIONS", role)
        else:
            assert options.status_code == 200, (probe.path, "OPTIONS", role)
        if "GET" in probe.allowed_methods:
            rule = RULES[("GET", probe.path)]
            check(client.head(url), expected_for(rule, role), (probe.path, "HEAD", role))
        if probe.dataplane:
            continue  # its unlisted methods are the data plane's own business
        for method in sorted(set(WRITE_METHODS) - probe.allowed_methods):
            response = send(client, method, url)
            if role is None:
                assert response.status_code == 401, (probe.path, method)
            else:
                assert response.status_code in (403, 405), (probe.path, method, role)


@pytest.fixture
def roleless() -> APIClient:
    """A valid token whose user holds no role: a rule-engine client."""
    from django.contrib.auth import get_user_model

    from tests.accounts import issue_token

    client = APIClient()
    user = get_user_model().objects.create(username="no-role")
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {issue_token(user)}")
    return client


@pytest.mark.parametrize("probe", probes(), ids=lambda probe: probe.path)
def test_a_token_without_a_role_gets_options_as_it_gets_the_endpoint(
    probe: Probe, world: World, roleless: APIClient
) -> None:
    """OPTIONS describes an endpoint (its POST fields, say) only to those who hold a role;
    the data plane serves any authenticated client, and describes itself to it too."""
    url = url_for(probe.path, probe.target, world)
    options = roleless.options(url)
    if probe.dataplane:
        assert options.status_code == 200, (probe.path, options.content[:300])
        return
    assert options.status_code == 403, (probe.path, options.content[:300])
    assert options.json() == {
        "detail": "Your role does not allow this action.",
        "code": "permission_denied",
    }
    for method in sorted(probe.allowed_methods):
        rule = RULES[(method, probe.path)]
        body = rule.body(world) if rule.body else None
        refused = send(roleless, method, url_for(probe.path, rule.target, world), body)
        assert refused.status_code == 403, (probe.path, method)
        assert refused.json() == options.json(), (probe.path, method)
