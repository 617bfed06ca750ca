"""Redacted input paths: validation and the redactor (pure, no database)."""

from __future__ import annotations

import pytest

from deployments.rules.redaction import (
    MAX_PATHS,
    redact_input,
    redaction_note,
    redaction_paths_errors,
)


def test_removes_exactly_the_paths_present_and_keeps_the_callers_object() -> None:
    data = {"customer": {"email": "a@b.c", "tier": "gold"}, "amount": 3, "ssn": "1"}
    stored, removed = redact_input(data, ("customer.email", "ssn", "address.street"))
    assert stored == {"customer": {"tier": "gold"}, "amount": 3}
    assert removed == ["customer.email", "ssn"]
    assert data["customer"]["email"] == "a@b.c" and "ssn" in data


def test_nothing_to_remove_is_no_copy() -> None:
    data = {"amount": 3}
    assert redact_input(data, ("customer.email",)) == (data, [])
    assert redact_input(data, ("customer.email",))[0] is data
    assert redact_input(data, ())[0] is data


def test_a_parent_path_wins_and_non_objects_are_left() -> None:
    data = {"customer": {"email": "x"}, "items": "4111", "n": 3}
    stored, removed = redact_input(data, ("customer", "customer.email", "items.card", "n.x"))
    assert stored == {"items": "4111", "n": 3} and removed == ["customer"]


def test_a_path_through_a_list_redacts_every_element() -> None:
    data = {
        "orders": [
            {"card": "4111", "amount": 5, "payer": [{"email": "a@b.c", "tier": 1}]},
            {"amount": 7},
            "not an object",
            [{"card": "5500"}],
        ]
    }
    stored, removed = redact_input(data, ("orders.card", "orders.payer.email"))
    assert stored == {
        "orders": [
            {"amount": 5, "payer": [{"tier": 1}]},
            {"amount": 7},
            "not an object",
            [{}],
        ]
    }
    assert removed == ["orders.card", "orders.payer.email"]
    assert data["orders"][0]["card"] == "4111"  # the caller's object is untouched
    untouched = {"orders": [{"amount": 5}]}
    assert redact_input(untouched, ("orders.card",))[0] is untouched


def test_store_inputs_off_stores_nothing() -> None:
    assert redact_input({"a": 1}, (), store_inputs=False) == ({}, ["*"])
    assert redaction_note(["*"]).startswith("input not stored")
    assert redaction_note(["customer.email"]) == "input redacted: customer.email"
    assert redaction_note(None) == ""


@pytest.mark.parametrize(
    "value",
    [
        "customer.email",
        [""],
        ["a..b"],
        [" a"],
        [1],
        ["a"] * 2,
        ["x"] * (MAX_PATHS + 1),
        ["a" * 201],
    ],
)
def test_bad_path_lists_are_refused(value: object) -> None:
    assert redaction_paths_errors(value)


def test_good_path_list() -> None:
    assert redaction_paths_errors(["customer.email", "card.number", "ssn"]) == []
