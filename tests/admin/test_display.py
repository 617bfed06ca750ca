"""The console's formatting helpers: pure functions, no database."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from deployments.admin.display import (
    duration,
    key_value_table,
    milliseconds,
    p_value,
    percent_of_one,
    when,
)
from deployments.admin.panels import measurement_panel


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (0.1519170000392478, "0.152 ms"),
        (1.5191, "1.52 ms"),
        (15.191, "15.2 ms"),
        (151.91, "152 ms"),
        (1519.1, "1519 ms"),
        (0, "0 ms"),
        (None, "—"),
    ],
)
def test_milliseconds_keep_three_significant_digits(value: float | None, shown: str):
    assert milliseconds(value) == shown


@pytest.mark.parametrize(
    ("value", "shown"),
    [(0.0, "p < 0.0001"), (0.00009, "p < 0.0001"), (0.0001, "p = 0.0001"), (0.5, "p = 0.5000")],
)
def test_p_values_never_read_as_zero(value: float, shown: str):
    assert p_value(value) == shown


def test_one_datetime_format_with_time_zone_for_datetimes_and_iso_strings():
    moment = datetime(2026, 11, 27, 10, 53, 6, 900_000, tzinfo=UTC)
    assert when(moment) == "2026-11-27 10:53:06 UTC"
    assert when(moment.isoformat()) == "2026-11-27 10:53:06 UTC"
    assert when(None) == "—"


def test_durations_and_fractions_read_as_words():
    assert duration(45) == "45 s"
    assert duration(725) == "12 min 5 s"
    assert duration(7380) == "2 h 3 min"
    assert percent_of_one(0.05) == "5%"
    assert percent_of_one(0.955) == "95.5%"


def test_key_value_table_nests_objects_and_escapes_values():
    html = key_value_table({"auto_rollback": True, "limits": {"ids": ["a", "b"]}, "x": "<b>"})
    assert '<th scope="row">auto rollback</th><td>yes</td>' in html
    assert '<th scope="row">ids</th><td>a, b</td>' in html
    assert "&lt;b&gt;" in html and "<b>" not in html


def test_paired_evidence_counts_inputs_not_missing_versions():
    comparison = {
        "evidence": {
            "error_rate": {
                "test": "McNemar (exact, paired)",
                "difference": 0.05,
                "p_value": 0.00001,
                "significant": True,
                "pairs": 1200,
            },
            "latency": {"test": "sign test on paired latencies", "p_value": 1.0, "pairs": 1200},
        }
    }
    lines = measurement_panel({"comparison": comparison})["evidence"]
    assert lines[0] == (
        "Error rate v2 minus v1: 5.00% (McNemar (exact, paired), p < 0.0001, significant at 95%; "
        "1,200 paired inputs)."
    )
    assert lines[1].endswith("not significant (1,200 paired inputs).")
    assert "None" not in " ".join(lines)
