"""The data plane's one Redis round-trip: authenticate, rate-limit, check, look up, claim.

A sticky request needs a handful of facts that live in Redis: is the token
valid, is the client under its rate, has the rule set's generation moved, what
does the canary's breaker say, and is this workflow/session/user already
assigned. ``route.lua`` answers all of them in one call, and for a context seen
for the first time it also claims the decision (``SET NX``: concurrent first
requests converge on one answer) and queues the new assignment for PostgreSQL
on the assignment stream, in the same atomic step.

Keys (raw, shared with the script):

- ``canary:tok:<digest of the token>`` -> ``<user id>|<auth generation>``
  (``canary.api.authentication``: valid only at the generation the process knows)
- ``canary:gen:<rule set>`` -> the last committed routing generation
- ``canary:breaker:<deployment>`` -> the breaker's JSON (``monitoring.breaker.store``)
- ``canary:a:<deployment>:<tier>:<identifier>`` -> "v1" / "v2" (sessions:
  "v2|<expiry, epoch seconds>")
- ``canary:held:<deployment>`` -> how many decisions of the deployment Redis holds,
  present only while Redis holds every one PostgreSQL has (``assignments.refill``
  writes it; ``CANARY_STICKY_MAX_PER_DEPLOYMENT`` bounds it)
- ``canary:quota:<deployment>:<client>`` -> new decisions a client made in the
  current window (``CANARY_STICKY_MAX_PER_CLIENT``)

The held count doubles as the deployment's epoch marker: when the script finds
it missing (Redis restarted empty, or forgot the deployment's keys) it answers
``refill`` without deciding anything, the caller routes from PostgreSQL, the
authority, and a background job copies PostgreSQL's decisions back into Redis.
At the ceiling it answers ``full``: the new context is decided and stored in
PostgreSQL alone.

An execute evaluates, before the call, the version the context will most
likely get (the one its hash bucket gives, which is what a new context gets and
what a sticky one was given unless traffic changed since), or both versions when
the request is shadowed (SPEC 9.1), so the script can also append the execution
record when it routes to a version already evaluated (``EXECUTION_STREAM``):
fields ``v`` (served version), ``c`` (deployment, ids, input, time) and ``o1``
and/or ``o2`` (each evaluated version's outcome; the one not served is the
shadow). One round-trip answers the request and makes it durable; when the
guess was wrong, the caller evaluates the served version and appends its record
with a second call. Without a canary, a request shadowed by the bake after a
promotion (SPEC 10.3) hands over its record the same way: the active version is
served as ``v2`` of the bake, the previous version is its shadow ``v1``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import hiredis
import orjson
from django.conf import settings
from redis.exceptions import NoScriptError, ResponseError

from assignments import router
from assignments.hooks import ExecutionRecord
from deployments.rules.redaction import redact_input

ASSIGNMENT_STREAM = "canary:stream:assignments"
EXECUTION_STREAM = "canary:stream:executions"
# Workflow and user decisions last as long as the canary; a rolled-back canary's
# keys are never read again (routing names the new deployment), and expire.
STICKY_TTL_SECONDS = 30 * 24 * 60 * 60

ROUTE_LUA = """
local user = ''
if ARGV[1] == '1' then
  -- "<user id>|<auth generation>": vouched for only at the generation the caller knows.
  local vouched = redis.call('GET', KEYS[1])
  if not vouched then return {'token'} end
  local sep = string.find(vouched, '|', 1, true)
  if not sep or string.sub(vouched, sep + 1) ~= ARGV[18] then return {'token'} end
  user = string.sub(vouched, 1, sep - 1)
end
local gen = tonumber(redis.call('GET', KEYS[2]) or '0')
if gen > tonumber(ARGV[5]) then return {'stale', user, gen} end
local limit = tonumber(ARGV[2])
if limit > 0 then
  local tkey = ARGV[4] .. user .. ARGV[6]
  local count = redis.call('INCR', tkey)
  if count == 1 then redis.call('EXPIRE', tkey, ARGV[3]) end
  if count > limit then return {'throttled', user, gen, redis.call('TTL', tkey)} end
end
local function append(version)
  -- The served version was evaluated before the call: its record (with the other
  -- version's outcome beside it when the request is shadowed) is complete.
  local fields = {'v', version, 'c', ARGV[15]}
  if ARGV[16] ~= '' then fields[#fields + 1] = 'o1'; fields[#fields + 1] = ARGV[16] end
  if ARGV[17] ~= '' then fields[#fields + 1] = 'o2'; fields[#fields + 1] = ARGV[17] end
  redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[12], '*', unpack(fields))
  return 1
end
if ARGV[7] == '0' then
  -- No canary. A request shadowed by a bake after a promotion carries its record
  -- (served version ARGV[9]), and a sampled execute its captured input (SPEC 10.2):
  -- both appended in this same trip.
  local logged = 0
  if ARGV[15] ~= '' then logged = append(ARGV[9]) end
  if ARGV[22] ~= '' then
    redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[12], '*', 'k', ARGV[22])
  end
  return {'ok', user, gen, false, 0, false, 0, logged}
end
local breaker = redis.call('GET', KEYS[3])
if breaker and ARGV[8] == '0' then
  local decoded, state = pcall(cjson.decode, breaker)
  if not decoded or state['state'] ~= 'CLOSED' then return {'breaker', user, gen, breaker} end
end
local n = #KEYS - 7
-- The deployment's count of decisions held here; written only when Redis holds every
-- one PostgreSQL has. Absent: Redis lost them (restarted empty, say), so PostgreSQL answers.
local held = false
if n > 0 then
  held = redis.call('GET', KEYS[6])
  if not held then return {'refill', user, gen, breaker} end
end
local now = tonumber(ARGV[13])
local function live(value)
  if not value then return false end
  local sep = string.find(value, '|', 1, true)
  if not sep then return value end
  if tonumber(string.sub(value, sep + 1)) > now then return string.sub(value, 1, sep - 1) end
  return false
end
local found, version, created = 0, false, 0
for i = 1, n do
  version = live(redis.call('GET', KEYS[7 + i]))
  if version then found = i; break end
end
if n == 0 then
  version = ARGV[9]
elseif found ~= 1 then
  -- A client's quota of new decisions in its window (client tokens, per address).
  local quota = tonumber(ARGV[20])
  if quota > 0 then
    local used = redis.call('INCR', KEYS[7])
    if used == 1 then redis.call('EXPIRE', KEYS[7], ARGV[21]) end
    if used > quota then return {'quota', user, gen, redis.call('TTL', KEYS[7])} end
  end
  -- At the ceiling, new decisions are PostgreSQL's to store (and to answer).
  if tonumber(held) >= tonumber(ARGV[19]) then
    return {'full', user, gen, breaker, found, version}
  end
  -- The strongest tier is unassigned (or its session expired): store the decision
  -- there. The script runs atomically, so concurrent first requests see one answer.
  version = version or ARGV[9]
  local stored = version
  if ARGV[14] ~= '' then stored = version .. '|' .. ARGV[14] end
  redis.call('SET', KEYS[8], stored, 'EX', ARGV[10])
  redis.call('INCR', KEYS[6])
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[12], '*', 'v', version, 'r', ARGV[11])
  created = 1
end
local logged = 0
if ARGV[15] ~= '' and ARGV[15 + tonumber(string.sub(version, 2))] ~= '' then
  logged = append(version)
end
return {'ok', user, gen, breaker, found, version, created, logged}
"""


@dataclass(frozen=True)
class RouteAnswer:
    """What ``route.lua`` said.

    ``outcome``: ``ok``; ``token`` (unknown to Redis: authenticate the slow way);
    ``stale`` (the rule set changed: reload and retry); ``throttled``;
    ``breaker`` (not CLOSED: route with the breaker's full logic);
    ``refill`` (Redis does not hold the deployment's decisions: route from
    PostgreSQL); ``full`` (a new decision at the ceiling: PostgreSQL stores it;
    ``found``/``version`` say what a weaker tier holds in Redis, if anything);
    ``quota`` (the client's quota of new decisions is spent).
    ``found``: 0 when ``version`` is a new decision at the strongest tier, else
    the 1-based index of the tier (among those present) whose assignment decided.
    """

    outcome: str
    user: str | None = None
    generation: int = 0
    breaker: bytes | None = None
    found: int = 0
    version: str | None = None
    created: bool = False
    retry_after: int = 0
    logged: bool = False


def sticky_key(deployment_id: str, tier: str, identifier: str) -> str:
    return f"canary:a:{deployment_id}:{tier}:{identifier}"


def held_key(deployment_id: str) -> str:
    return f"canary:held:{deployment_id}"


def quota_key(deployment_id: str, client: str) -> str:
    return f"canary:quota:{deployment_id}:{client}"


def generation_key(ruleset_id: str) -> str:
    return f"canary:gen:{ruleset_id}"


def token_key(token_digest: str) -> str:
    return f"canary:tok:{token_digest}"


def breaker_key(deployment_id: str) -> str:
    return f"canary:breaker:{deployment_id}"


def outcome_document(
    *,
    success: bool,
    output: Any,
    matched_rule: str | None,
    error_rule: str | None,
    error_message: str,
    latency_ms: float,
) -> bytes:
    """One version's outcome as the execution stream stores it (``o1``/``o2``)."""
    return orjson.dumps(
        {
            "success": success,
            "output": output,
            "rule": matched_rule,
            "error_rule": error_rule,
            "error_message": error_message,
            "latency_ms": latency_ms,
        }
    )


@dataclass(frozen=True)
class ExecutionEntry:
    """An execute's record for ``EXECUTION_STREAM``: common part and outcomes by version."""

    common: bytes  # JSON
    outcomes: dict[str, bytes]  # "v1"/"v2" -> outcome JSON (``outcome_document``)

    @classmethod
    def of(cls, record: ExecutionRecord) -> ExecutionEntry:
        """The one encoding of a record, read back by ``monitoring.recording.executions``'s sink."""
        version = record.served_version
        stored_input, removed = redact_input(
            record.input, record.redacted_paths, store_inputs=settings.CANARY_STORE_INPUTS
        )
        common = {
            "deployment_id": str(record.deployment_id),
            f"{version}_version_id": str(record.version_id),
            "user_id": record.user_id or "",
            "session_id": record.session_id or "",
            "workflow_id": record.workflow_id or "",
            "input": stored_input,
            "created_at": record.executed_at.timestamp(),
        }
        if removed:
            common["redacted"] = removed
        outcomes = {
            version: outcome_document(
                success=record.success,
                output=record.output,
                matched_rule=record.matched_rule,
                error_rule=record.error_rule,
                error_message=record.error_message,
                latency_ms=record.latency_ms,
            )
        }
        shadow = record.shadow
        if shadow is not None:
            other = router.V1 if version == router.V2 else router.V2
            common[f"{other}_version_id"] = str(shadow.version_id)
            outcomes[other] = outcome_document(
                success=shadow.success,
                output=shadow.output,
                matched_rule=shadow.rule if shadow.success else None,
                error_rule=None if shadow.success else shadow.rule,
                error_message=shadow.error_message,
                latency_ms=shadow.latency_ms,
            )
        return cls(orjson.dumps(common), outcomes)

    def fields(self, served_version: str) -> dict[str, bytes | str]:
        """As ``XADD`` fields (what ``route.lua`` appends when it routes to ``served_version``)."""
        fields: dict[str, bytes | str] = {"v": served_version, "c": self.common}
        for version, outcome in self.outcomes.items():
            fields[f"o{version[1:]}"] = outcome
        return fields


ROUTE_SHA = hashlib.sha1(ROUTE_LUA.encode()).hexdigest()  # noqa: S324 (Redis names scripts so)


def _evalsha(client: Any, keys: list[str], args: list[Any]) -> Any:
    """``EVALSHA`` on the client's own connection, packed by hiredis.

    NOTE: redis-py's command machinery (pool, retries, observability hooks)
    costs about 40 µs of CPU per call, a fifth of a request; the client here is a
    single-connection one (``canary.redis``), so the call goes straight to its
    connection. A script unknown to the server (Redis restarted) is loaded by
    redis-py's own path once; any other failure drops the connection.
    """
    connection = client.connection
    try:
        connection.send_packed_command(
            [hiredis.pack_command(("EVALSHA", ROUTE_SHA, len(keys), *keys, *args))],
            check_health=False,
        )
        return connection.read_response()
    except NoScriptError:
        return client.register_script(ROUTE_LUA)(keys=keys, args=args)
    except ResponseError:
        raise
    except BaseException:
        connection.disconnect()
        raise


def _text(value: Any) -> str | None:
    if value is None or value is False:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def route(
    client: Any,
    *,
    ruleset_id: str,
    generation: int,
    token_digest: str | None = None,
    auth_generation: int = 0,
    throttle: tuple[int, int, str, str] | None = None,
    deployment_id: str | None = None,
    present: list[tuple[str, str]] | None = None,
    candidate: str = "",
    session_ttl: int = 0,
    ignore_breaker: bool = False,
    assignment_record: bytes = b"",
    stream_maxlen: int = 0,
    now: float = 0.0,
    execution: ExecutionEntry | None = None,
    capture: bytes = b"",
    max_held: int = 0,
    quota: tuple[str, int, int] | None = None,
) -> RouteAnswer:
    """One round-trip; raises redis errors for the caller to fall back on.

    ``token_digest``: accept the request only if Redis vouches for this token at
    ``auth_generation`` (else the outcome is ``token``).
    ``throttle``: (limit, window seconds, key prefix, key suffix) or None.
    ``deployment_id`` None: no canary, only token, generation and rate are checked
    (and ``execution``, a bake's shadowed request, appended as served ``candidate``).
    ``candidate``: the decision for a new context (with no ids: the request's
    random draw). ``execution``: append this execute's record if it is served
    a version it holds the outcome of (``RouteAnswer.logged``). ``capture``: with
    no canary, append this captured input (field ``k``) once the request is let through.
    ``max_held``: the deployment's ceiling of decisions in Redis (0: none).
    ``quota``: (client, most new decisions, window seconds) or None.
    """
    present = present or []
    keys = [
        token_key(token_digest) if token_digest else "canary:tok:-",
        generation_key(ruleset_id),
        breaker_key(deployment_id) if deployment_id else "canary:breaker:-",
        ASSIGNMENT_STREAM,
        EXECUTION_STREAM,
        held_key(deployment_id) if deployment_id else "canary:held:-",
        quota_key(deployment_id, quota[0]) if deployment_id and quota else "canary:quota:-",
        *(sticky_key(deployment_id, t, i) for t, i in present if deployment_id),
    ]
    limit, window, prefix, suffix = throttle or (0, 0, "", "")
    # Session decisions carry their expiry in the value ("v2|<epoch>"), so expiry
    # follows the request's clock exactly; the key's own TTL only cleans up.
    session = bool(present) and present[0][0] == router.SESSION
    expires = f"{now + session_ttl:.6f}" if session else ""
    key_ttl = int(session_ttl) + 60 if session else STICKY_TTL_SECONDS
    args = [
        "1" if token_digest else "0",
        limit,
        window,
        prefix,
        generation,
        suffix,
        "1" if deployment_id else "0",
        "1" if ignore_breaker else "0",
        candidate,
        key_ttl,
        assignment_record,
        stream_maxlen,
        f"{now:.6f}",
        expires,
        execution.common if execution else "",
        execution.outcomes.get(router.V1, b"") if execution else "",
        execution.outcomes.get(router.V2, b"") if execution else "",
        str(auth_generation),
        max_held if max_held > 0 else 2**53,
        quota[1] if quota else 0,
        quota[2] if quota else 0,
        capture,
    ]
    raw = _evalsha(client, keys, args)
    outcome = _text(raw[0]) or "ok"
    if outcome == "token":
        return RouteAnswer("token")
    user = _text(raw[1])
    generation_seen = int(raw[2] or 0)
    if outcome == "stale":
        return RouteAnswer("stale", user, generation_seen)
    if outcome in ("throttled", "quota"):
        return RouteAnswer(outcome, user, generation_seen, retry_after=max(1, int(raw[3])))
    breaker = raw[3] if len(raw) > 3 and raw[3] else None
    if outcome in ("breaker", "refill"):
        return RouteAnswer(outcome, user, generation_seen, breaker)
    if outcome == "full":
        return RouteAnswer(outcome, user, generation_seen, breaker, int(raw[4]), _text(raw[5]))
    return RouteAnswer(
        "ok",
        user,
        generation_seen,
        breaker,
        int(raw[4]),
        _text(raw[5]),
        bool(raw[6]),
        logged=bool(raw[7]),
    )
