"""The transition table, exhaustively: every (status, action) pair is allowed or refused."""

import itertools

import pytest

from deployments import transitions as t

EXPECTED = {
    (t.DRAFT, t.START_CANARY): t.CANARY,
    (t.DRAFT, t.UPDATE): t.DRAFT,
    (t.DRAFT, t.DELETE): None,
    (t.DRAFT, t.PROMOTE): t.ACTIVE,
    (t.CANARY, t.TRAFFIC): t.CANARY,
    (t.CANARY, t.PROMOTE): t.ACTIVE,
    (t.CANARY, t.ROLLBACK): t.ROLLED_BACK,
    (t.ACTIVE, t.ROLLBACK): t.ROLLED_BACK,
    (t.ACTIVE, t.DEPRECATE): t.DEPRECATED,
}


@pytest.mark.parametrize(("status", "action"), list(itertools.product(t.STATUSES, t.ACTIONS)))
def test_every_status_action_pair(status: str, action: str) -> None:
    if (status, action) in EXPECTED:
        assert t.next_status(status, action) == EXPECTED[(status, action)]
        assert action in t.allowed_actions(status)
    else:
        with pytest.raises(t.TransitionNotAllowed) as refused:
            t.next_status(status, action)
        assert refused.value.status == status
        assert refused.value.allowed_actions == t.allowed_actions(status)
        assert action not in t.allowed_actions(status)
        assert status in str(refused.value)


def test_terminal_statuses_allow_nothing() -> None:
    assert t.allowed_actions(t.ROLLED_BACK) == ()
    assert t.allowed_actions(t.DEPRECATED) == ()
    assert "read only" in str(t.TransitionNotAllowed(t.DEPRECATED, t.PROMOTE, ()))


def test_allowed_actions_per_status() -> None:
    assert t.allowed_actions(t.DRAFT) == (t.START_CANARY, t.PROMOTE, t.UPDATE, t.DELETE)
    assert t.allowed_actions(t.CANARY) == (t.TRAFFIC, t.PROMOTE, t.ROLLBACK)
    assert t.allowed_actions(t.ACTIVE) == (t.ROLLBACK, t.DEPRECATE)


@pytest.mark.parametrize(
    ("status", "action", "target"),
    [(t.ACTIVE, t.SUPERSEDE, t.DEPRECATED), (t.DEPRECATED, t.RESTORE, t.ACTIVE)],
)
def test_baseline_side_effects(status: str, action: str, target: str) -> None:
    assert t.next_status(status, action) == target
    assert action not in t.allowed_actions(status)


@pytest.mark.parametrize("status", [t.DRAFT, t.CANARY, t.ROLLED_BACK])
def test_baseline_side_effects_need_the_right_status(status: str) -> None:
    with pytest.raises(t.TransitionNotAllowed):
        t.next_status(status, t.SUPERSEDE)
    with pytest.raises(t.TransitionNotAllowed):
        t.next_status(status, t.RESTORE)
