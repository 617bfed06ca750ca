"""A typed client for Canary's REST API (``/api/v1/``) and OFREP.

One ``httpx.Client`` per ``Client`` (connection reuse, timeouts). Reads are retried
with exponential backoff and jitter on 429, 503 and connection errors (``Retry-After``
honoured); so are lifecycle calls sent with ``expected_status``, which the server
refuses (409, nothing changed) if an earlier attempt did land: that 409 is then
recognised by reading the deployment back.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from canary_client.errors import CanaryHTTPError, CanaryUnreachable

JSON = dict[str, Any]
RETRY_STATUSES = frozenset({429, 503})
# What each lifecycle call leaves the deployment in (recognising a landed retry).
_LANDS_IN = {
    "start-canary": "canary",
    "promote": "active",
    "rollback": "rolled_back",
    "deprecate": "deprecated",
}


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    backoff_seconds: float = 0.5
    max_backoff_seconds: float = 10.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_backoff_seconds * 6)
        ceiling = min(self.max_backoff_seconds, self.backoff_seconds * 2.0**attempt)
        return float(ceiling / 2 + random.uniform(0, ceiling / 2))


class Client:
    """``Client(url, token)``: every method returns the answer's JSON document.

    Raises ``CanaryHTTPError`` (status, ``code``, ``detail``, ``fields``) for an error
    answer and ``CanaryUnreachable`` when the server cannot be reached.
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        user_agent: str = "canary-client/1.0",
    ) -> None:
        headers = {"User-Agent": user_agent, "Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.base_url = url.rstrip("/")
        self.retry = retry or RetryPolicy()
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the HTTP layer -------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        retry: bool | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """One call, retried when ``retry`` (default: reads only). Error answers raise."""
        retryable = method in ("GET", "HEAD") if retry is None else retry
        query = {k: v for k, v in (params or {}).items() if v is not None}
        attempts = self.retry.attempts if retryable else 1
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                response = self._http.request(
                    method, path, json=json, params=query, headers=headers
                )
            except httpx.TransportError as exc:
                if last:
                    raise CanaryUnreachable(
                        f"{self.base_url}: {exc or type(exc).__name__}"
                    ) from exc
                time.sleep(self.retry.delay(attempt))
                continue
            if response.status_code in RETRY_STATUSES and not last:
                time.sleep(self.retry.delay(attempt, _retry_after(response)))
                continue
            if response.status_code >= 400:
                raise CanaryHTTPError(
                    response.status_code,
                    _body(response),
                    method,
                    str(response.url),
                    attempts=attempt + 1,
                )
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.request(method, path, **kwargs)
        return _body(response) if response.content else None

    def get(self, path: str, **params: Any) -> Any:
        return self._json("GET", f"/api/v1/{path}", params=params)

    def post(self, path: str, body: Any = None, *, retry: bool = False) -> Any:
        return self._json("POST", f"/api/v1/{path}", json=body or {}, retry=retry)

    def pages(self, path: str, *, key: str = "results", **params: Any) -> Iterator[JSON]:
        """Every item of a paginated list, page by page."""
        page = 1
        params.setdefault("page_size", 1000)
        while True:
            answer = self.get(path, page=page, **params)
            found = answer.get(key, answer.get("results")) if isinstance(answer, dict) else answer
            items: list[JSON] = found if isinstance(found, list) else []
            yield from items
            if not isinstance(answer, dict) or not answer.get("next") or not items:
                return
            page += 1

    # --- rule sets and versions (SPEC §4) -------------------------------------------------

    def rulesets(self) -> list[JSON]:
        return list(self.pages("rulesets"))

    def ruleset(self, ruleset_id: str) -> JSON:
        return self.get(f"rulesets/{ruleset_id}")  # type: ignore[no-any-return]

    def ruleset_by_name(self, name: str) -> JSON | None:
        return next((r for r in self.rulesets() if r.get("name") == name), None)

    def ruleset_id(self, name_or_id: str) -> str:
        """The id of a rule set named by its id or its name (``CanaryHTTPError`` 404 if none)."""
        for ruleset in self.rulesets():
            if name_or_id in (ruleset.get("id"), ruleset.get("name")):
                return str(ruleset["id"])
        raise CanaryHTTPError(
            404, {"detail": f"No rule set named '{name_or_id}'.", "code": "not_found"}
        )

    def create_ruleset(self, name: str, description: str = "") -> JSON:
        return self.post("rulesets", {"name": name, "description": description})  # type: ignore[no-any-return]

    def update_ruleset(self, ruleset_id: str, **fields: Any) -> JSON:
        return self._json("PATCH", f"/api/v1/rulesets/{ruleset_id}", json=fields)  # type: ignore[no-any-return]

    def versions(self, ruleset_id: str) -> list[JSON]:
        return list(self.pages(f"rulesets/{ruleset_id}/versions"))

    def create_version(
        self,
        ruleset_id: str,
        version: str,
        rules: list[JSON],
        default: Any = None,
        changelog: str = "",
    ) -> JSON:
        body = {"version": version, "rules": rules, "default": default, "changelog": changelog}
        return self.post(f"rulesets/{ruleset_id}/versions", body)  # type: ignore[no-any-return]

    def test_rules(
        self, ruleset_id: str, input: JSON, expected_output: Any = None, version: str | None = None
    ) -> JSON:
        body: JSON = {"input": input, "expected_output": expected_output}
        if version is not None:
            body["version"] = version
        return self.post(f"rulesets/{ruleset_id}/test", body)  # type: ignore[no-any-return]

    # --- test cases and backtests (SPEC §10.2) --------------------------------------------

    def test_cases(self, ruleset_id: str) -> list[JSON]:
        return list(self.pages(f"rulesets/{ruleset_id}/test-cases"))

    def create_test_case(
        self, ruleset_id: str, name: str, input: JSON, expected_output: Any
    ) -> JSON:
        body = {"name": name, "input": input, "expected_output": expected_output}
        return self.post(f"rulesets/{ruleset_id}/test-cases", body)  # type: ignore[no-any-return]

    def delete_test_case(self, ruleset_id: str, case_id: str) -> None:
        self.request("DELETE", f"/api/v1/rulesets/{ruleset_id}/test-cases/{case_id}")

    def run_test_cases(self, ruleset_id: str, version: str) -> JSON:
        return self.post(f"rulesets/{ruleset_id}/test-cases/run", {"version": version})  # type: ignore[no-any-return]

    def create_backtest(
        self,
        ruleset_id: str,
        version: str,
        *,
        against: str | None = None,
        limit: int | None = None,
        expect_changes: str | None = None,
    ) -> JSON:
        body: JSON = {"version": version}
        for key, value in (
            ("against", against),
            ("limit", limit),
            ("expect_changes", expect_changes),
        ):
            if value is not None:
                body[key] = value
        return self.post(f"rulesets/{ruleset_id}/backtests", body)  # type: ignore[no-any-return]

    def backtest(self, backtest_id: str) -> JSON:
        return self.get(f"backtests/{backtest_id}")  # type: ignore[no-any-return]

    def backtests(self, ruleset_id: str) -> list[JSON]:
        return list(self.pages(f"rulesets/{ruleset_id}/backtests"))

    def backtest_differences(self, backtest_id: str, **params: Any) -> JSON:
        return self.get(f"backtests/{backtest_id}/differences", **params)  # type: ignore[no-any-return]

    # --- deployments and their lifecycle (SPEC §3, §4, §9.3, §10.1) -----------------------

    def deployments(self, **filters: Any) -> list[JSON]:
        return list(self.pages("deployments", **filters))

    def deployment(self, deployment_id: str) -> JSON:
        return self.get(f"deployments/{deployment_id}")  # type: ignore[no-any-return]

    def create_deployment(
        self,
        ruleset_id: str,
        version: str,
        *,
        changelog: str = "",
        canary_config: JSON | None = None,
        compensation_strategy: str | None = None,
    ) -> JSON:
        body: JSON = {"ruleset_id": ruleset_id, "version": version, "changelog": changelog}
        if canary_config is not None:
            body["canary_config"] = canary_config
        if compensation_strategy is not None:
            body["compensation_strategy"] = compensation_strategy
        return self.post("deployments", body)  # type: ignore[no-any-return]

    def update_deployment(self, deployment_id: str, **fields: Any) -> JSON:
        return self._json("PATCH", f"/api/v1/deployments/{deployment_id}", json=fields)  # type: ignore[no-any-return]

    def delete_deployment(self, deployment_id: str) -> None:
        self.request("DELETE", f"/api/v1/deployments/{deployment_id}")

    def lifecycle(
        self,
        deployment_id: str,
        action: str,
        body: JSON | None = None,
        *,
        expected_status: str | None = None,
        method: str = "POST",
    ) -> JSON:
        """A lifecycle call; with ``expected_status`` it is retried like a read.

        A retry that finds the deployment already where the call leads (an earlier
        attempt landed, its answer was lost) returns the deployment, not the 409.
        """
        document = dict(body or {})
        if expected_status is not None:
            document["expected_status"] = expected_status
        path = f"/api/v1/deployments/{deployment_id}/{action}"
        retry = expected_status is not None
        try:
            return self._json(method, path, json=document, retry=retry)  # type: ignore[no-any-return]
        except CanaryHTTPError as error:
            lands_in = _LANDS_IN.get(action)
            if error.status_code != 409 or error.attempts < 2 or lands_in is None:
                raise
            current = self.deployment(deployment_id)
            if current.get("status") == lands_in:
                return current
            raise

    def start_canary(
        self,
        deployment_id: str,
        *,
        canary_pct: int | None = None,
        target_filter: JSON | None = None,
        expected_status: str | None = "draft",
        override_reason: str | None = None,
    ) -> JSON:
        body: JSON = {}
        if canary_pct is not None:
            body["canary_pct"] = canary_pct
        if target_filter:
            body["canary_target_filter"] = target_filter
        if override_reason:
            body["override_reason"] = override_reason
        return self.lifecycle(deployment_id, "start-canary", body, expected_status=expected_status)

    def set_traffic(
        self,
        deployment_id: str,
        percentage: int,
        *,
        reason: str | None = None,
        expected_status: str | None = "canary",
    ) -> JSON:
        body: JSON = {"traffic_percentage": percentage}
        if reason:
            body["reason"] = reason
        return self.lifecycle(
            deployment_id, "traffic", body, expected_status=expected_status, method="PUT"
        )

    def promote(
        self,
        deployment_id: str,
        *,
        override_reason: str | None = None,
        expected_status: str | None = None,
    ) -> JSON:
        """Promote; with ``required_approvals`` above one, the answer may be the pending
        approval (202 ``{status: "canary", approvals, required_approvals}``)."""
        body: JSON = {"override_reason": override_reason} if override_reason else {}
        return self.lifecycle(deployment_id, "promote", body, expected_status=expected_status)

    def rollback(
        self,
        deployment_id: str,
        reason: str,
        *,
        apply_compensation: bool = True,
        expected_status: str | None = None,
    ) -> JSON:
        body = {"reason": reason, "apply_compensation": apply_compensation}
        return self.lifecycle(deployment_id, "rollback", body, expected_status=expected_status)

    def deprecate(self, deployment_id: str, *, expected_status: str | None = "active") -> JSON:
        return self.lifecycle(deployment_id, "deprecate", expected_status=expected_status)

    def pause(
        self, deployment_id: str, reason: str | None = None, *, expected_status: str | None = None
    ) -> JSON:
        """Pause the plan; the answer is the plan (as ``plan()``), ``state: "paused"``.

        A retried pause whose first attempt landed meets the server's 409 (``plan_state``:
        already paused): the plan read back as paused is then the answer.
        """
        body: JSON = {"reason": reason} if reason else {}
        try:
            return self.lifecycle(deployment_id, "pause", body, expected_status=expected_status)
        except CanaryHTTPError as error:
            if error.status_code != 409 or error.attempts < 2:
                raise
            plan = self.plan(deployment_id)
            if plan.get("state") == "paused":
                return plan
            raise

    def resume(self, deployment_id: str, *, expected_status: str | None = None) -> JSON:
        """Resume a paused plan or complete its approval step; the answer is the plan.

        A 409 (``plan_state``) means the plan was neither paused nor waiting for approval.
        """
        return self.lifecycle(deployment_id, "resume", expected_status=expected_status)

    def dismiss_regression(self, deployment_id: str, reason: str) -> JSON:
        return self.post(f"deployments/{deployment_id}/dismiss-regression", {"reason": reason})  # type: ignore[no-any-return]

    def _deployment_read(self, deployment_id: str, what: str, **params: Any) -> JSON:
        return self.get(f"deployments/{deployment_id}/{what}", **params)  # type: ignore[no-any-return]

    def metrics(self, deployment_id: str, window_minutes: int | None = None) -> JSON:
        return self._deployment_read(deployment_id, "metrics", window_minutes=window_minutes)

    def comparison(self, deployment_id: str) -> JSON:
        return self._deployment_read(deployment_id, "comparison")

    def health(self, deployment_id: str) -> JSON:
        return self._deployment_read(deployment_id, "health")

    def readiness(self, deployment_id: str) -> JSON:
        return self._deployment_read(deployment_id, "readiness")

    def preflight(self, deployment_id: str) -> JSON:
        return self._deployment_read(deployment_id, "preflight")

    def plan(self, deployment_id: str) -> JSON:
        return self._deployment_read(deployment_id, "plan")

    def shadow(self, deployment_id: str, window_minutes: int | None = None) -> JSON:
        return self._deployment_read(deployment_id, "shadow", window_minutes=window_minutes)

    def shadow_differences(self, deployment_id: str, **params: Any) -> JSON:
        return self._deployment_read(deployment_id, "shadow/differences", **params)

    def assignments(self, deployment_id: str, **params: Any) -> JSON:
        return self._deployment_read(deployment_id, "assignments", **params)

    def events(self, deployment_id: str) -> Any:
        return self.get(f"deployments/{deployment_id}/events")

    def compensation(self, deployment_id: str) -> JSON:
        return self._deployment_read(deployment_id, "compensation")

    def complete_compensation(self, deployment_id: str) -> JSON:
        return self.post(f"deployments/{deployment_id}/compensation/complete")  # type: ignore[no-any-return]

    def replay_compensation(self, deployment_id: str) -> JSON:
        return self.post(f"deployments/{deployment_id}/compensation/replay")  # type: ignore[no-any-return]

    # --- the data plane -------------------------------------------------------------------

    def execute(
        self,
        ruleset_id: str,
        input: JSON,
        *,
        user_id: str | None = None,
        session_id: str | None = None,
        workflow_id: str | None = None,
    ) -> JSON:
        body: JSON = {"input": input}
        for key, value in (
            ("user_id", user_id),
            ("session_id", session_id),
            ("workflow_id", workflow_id),
        ):
            if value is not None:
                body[key] = value
        return self.post(f"rulesets/{ruleset_id}/execute", body)  # type: ignore[no-any-return]

    def resolve(
        self,
        ruleset_id: str,
        *,
        user_id: str | None = None,
        session_id: str | None = None,
        workflow_id: str | None = None,
    ) -> JSON:
        return self.get(  # type: ignore[no-any-return]
            f"rulesets/{ruleset_id}/resolve",
            user_id=user_id,
            session_id=session_id,
            workflow_id=workflow_id,
        )

    def ofrep_evaluate(self, key: str, context: JSON | None = None) -> JSON:
        """One flag through OFREP (``/ofrep/v1/evaluate/flags/{key}``)."""
        body = {"context": context or {}}
        return self._json("POST", f"/ofrep/v1/evaluate/flags/{key}", json=body, retry=True)  # type: ignore[no-any-return]

    # --- administration -------------------------------------------------------------------

    def client_tokens(self) -> list[JSON]:
        return list(self.pages("client-tokens"))

    def create_client_token(
        self, name: str, ruleset_ids: list[str], allowed_origins: list[str]
    ) -> JSON:
        body = {"name": name, "ruleset_ids": ruleset_ids, "allowed_origins": allowed_origins}
        return self.post("client-tokens", body)  # type: ignore[no-any-return]

    def revoke_client_token(self, token_id: str) -> None:
        self.request("DELETE", f"/api/v1/client-tokens/{token_id}")

    def webhooks(self) -> list[JSON]:
        return list(self.pages("webhooks"))

    def create_webhook(
        self, name: str, url: str, events: list[str], ruleset_ids: list[str] | None = None
    ) -> JSON:
        body: JSON = {"name": name, "url": url, "events": events}
        if ruleset_ids is not None:
            body["ruleset_ids"] = ruleset_ids
        return self.post("webhooks", body)  # type: ignore[no-any-return]

    def webhook(self, webhook_id: str) -> JSON:
        return self.get(f"webhooks/{webhook_id}")  # type: ignore[no-any-return]

    def update_webhook(self, webhook_id: str, **fields: Any) -> JSON:
        return self._json("PATCH", f"/api/v1/webhooks/{webhook_id}", json=fields)  # type: ignore[no-any-return]

    def delete_webhook(self, webhook_id: str) -> None:
        self.request("DELETE", f"/api/v1/webhooks/{webhook_id}")

    def webhook_deliveries(self, webhook_id: str, **params: Any) -> JSON:
        return self.get(f"webhooks/{webhook_id}/deliveries", **params)  # type: ignore[no-any-return]

    def redeliver(self, webhook_id: str, delivery_id: str) -> JSON:
        return self.post(f"webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver")  # type: ignore[no-any-return]

    def triggers(self) -> list[JSON]:
        return list(self.pages("triggers"))

    def create_trigger(self, name: str, ruleset_id: str, action: str) -> JSON:
        body = {"name": name, "ruleset_id": ruleset_id, "action": action}
        return self.post("triggers", body)  # type: ignore[no-any-return]

    def delete_trigger(self, trigger_id: str) -> None:
        self.request("DELETE", f"/api/v1/triggers/{trigger_id}")

    def scheduler_jobs(self) -> Any:
        return self.get("scheduler/jobs")


def _body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None
