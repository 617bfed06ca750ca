"""Versions and test cases from files, so a rule set can live in a repository."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml


def load_document(path: str | Path) -> Any:
    """A YAML or JSON file's document (``-`` reads standard input); ``ValueError`` if unreadable.

    JSON is YAML, but ``.json`` files are read as JSON so their errors say where.
    """
    if str(path) == "-":
        import sys

        text, name = sys.stdin.read(), "<stdin>"
    else:
        file = Path(path)
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"{path}: {exc.strerror or exc}") from None
        name = str(file)
        if file.suffix.lower() == ".json":
            try:
                return json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{name}: {exc}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"{name}: {exc}") from None


VERSION_FIELDS = ("version", "rules", "default", "changelog")
CASE_FIELDS = ("name", "input", "expected_output")


def version_body(document: Any, *, version: str | None = None) -> dict[str, Any]:
    """The body of ``POST /rulesets/{id}/versions`` from a file's document.

    ``version`` (the command line's) overrides the file's, so one file can be released
    under the tag a pipeline computes.
    """
    if not isinstance(document, dict):
        raise ValueError("a version file holds a mapping: version, rules, default, changelog")
    unknown = sorted(set(document) - set(VERSION_FIELDS))
    if unknown:
        raise ValueError(f"unknown fields in the version file: {', '.join(unknown)}")
    body = {key: document[key] for key in VERSION_FIELDS if key in document}
    if version is not None:
        body["version"] = version
    if "version" not in body or "rules" not in body:
        raise ValueError("a version file needs 'version' (or --version) and 'rules'")
    return body


def case_bodies(document: Any) -> list[dict[str, Any]]:
    """Test cases from a file: a list of ``{name, input, expected_output}``, or
    ``{test_cases: [...]}``, or one case."""
    if isinstance(document, dict) and "test_cases" in document:
        document = document["test_cases"]
    cases = document if isinstance(document, list) else [document]
    for index, case in enumerate(cases):
        if not isinstance(case, dict) or not all(key in case for key in CASE_FIELDS):
            raise ValueError(f"test case {index}: needs name, input and expected_output")
        unknown = sorted(set(case) - set(CASE_FIELDS))
        if unknown:
            raise ValueError(f"test case {index}: unknown fields {', '.join(unknown)}")
    return cases
