"""The published OpenAPI document describes the API (issue #12, item 7).

Each test here failed on the document as it was: a batch body whose ``$ref`` pointed at a
``#/$defs`` that does not exist in the document, no 200 replay answer, no bearer scheme, no
401/403, and 422 published as plain JSON (FastAPI's ``HTTPValidationError``) although every error
is ``application/problem+json``. What the running service sends is held against this document
by tests/integration/api/test_schemathesis.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from openapi_spec_validator import validate

from audit_ledger.api.app import create_app
from audit_ledger.cli import main
from tests.support.api import OPERATION_ROLES, PROBLEM_JSON

METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    # Without a ledger: building the document needs no database (and serves none here).
    doc = create_app().openapi()
    # What /openapi.json sends: the JSON text, not the Python objects.
    loaded: dict[str, Any] = json.loads(json.dumps(doc))
    return loaded


def operations(document: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield f"{method.upper()} {path}", operation


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for escaped in ref[2:].split("/"):
        part = escaped.replace("~1", "/").replace("~0", "~")  # RFC 6901 §4
        assert isinstance(node, dict), ref
        assert part in node, f"dangling $ref {ref}"
        node = node[part]
    return node


def test_the_document_is_valid_openapi(document: dict[str, Any]) -> None:
    validate(document)


def test_every_ref_resolves(document: dict[str, Any]) -> None:
    found = list(refs(document))
    assert "#/components/schemas/EventIn" in found
    for ref in found:
        resolve(document, ref)


def test_the_operations_are_the_role_table(document: dict[str, Any]) -> None:
    assert {name for name, _ in operations(document)} == set(OPERATION_ROLES)


@pytest.mark.parametrize("name", ["POST /v1/events", "POST /v1/events/batch"])
def test_appends_document_the_replay_answer(document: dict[str, Any], name: str) -> None:
    answers = dict(operations(document))[name]["responses"]
    assert {"200", "201"} <= set(answers)
    for status in ("200", "201"):
        schema = answers[status]["content"]["application/json"]["schema"]
        assert schema == answers["201"]["content"]["application/json"]["schema"]


def test_bodies_are_documented_by_reference(document: dict[str, Any]) -> None:
    bodies = {
        name: op["requestBody"]["content"]["application/json"]["schema"]
        for name, op in operations(document)
        if "requestBody" in op
    }
    assert bodies == {
        "POST /v1/events": {"$ref": "#/components/schemas/EventIn"},
        "POST /v1/events/batch": {"$ref": "#/components/schemas/BatchIn"},
        "POST /v1/events/search": {"$ref": "#/components/schemas/SearchIn"},
        "POST /v1/erasure-requests": {"$ref": "#/components/schemas/ErasureIn"},
        "POST /v1/legal-holds": {"$ref": "#/components/schemas/HoldIn"},
        "POST /v1/legal-holds/{hold_id}/release": {"$ref": "#/components/schemas/HoldReleaseIn"},
    }
    batch = document["components"]["schemas"]["BatchIn"]
    assert batch["properties"]["events"]["items"] == {"$ref": "#/components/schemas/EventIn"}


def test_a_bearer_scheme_guards_exactly_the_guarded_operations(document: dict[str, Any]) -> None:
    schemes = document["components"]["securitySchemes"]
    assert schemes == {
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "description": schemes["bearer"]["description"],
        }
    }
    for name, op in operations(document):
        guarded = OPERATION_ROLES[name] is not None
        assert op.get("security") == ([{"bearer": []}] if guarded else None), name


def test_guarded_operations_document_401_and_role_gated_ones_403(
    document: dict[str, Any],
) -> None:
    for name, op in operations(document):
        roles = OPERATION_ROLES[name]
        answers = set(op["responses"])
        assert ("401" in answers) == (roles is not None), name
        assert ("403" in answers) == isinstance(roles, frozenset), name
        if roles is not None:
            assert "WWW-Authenticate" in op["responses"]["401"]["headers"], name


def test_every_error_answer_is_problem_json(document: dict[str, Any]) -> None:
    problem = {"$ref": "#/components/schemas/Problem"}
    for name, op in operations(document):
        for status, answer in op["responses"].items():
            if status.startswith("4") or (status == "503" and name != "GET /readyz"):
                assert answer["content"] == {PROBLEM_JSON: {"schema": problem}}, (name, status)
    schemas = document["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    assert {"type", "title", "status", "detail"} <= set(schemas["Problem"]["required"])


def test_parameter_and_body_operations_document_422(document: dict[str, Any]) -> None:
    for name, op in operations(document):
        if op.get("parameters") or op.get("requestBody"):
            assert "422" in op["responses"], name


def test_text_answers_are_documented_as_text(document: dict[str, Any]) -> None:
    ops = dict(operations(document))
    for name in ("GET /v1/log/checkpoint", "GET /v1/log/verifier-key", "GET /metrics"):
        assert set(ops[name]["responses"]["200"]["content"]) == {"text/plain"}, name


def test_the_cli_prints_the_published_document(
    document: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["openapi"]) == 0
    assert json.loads(capsys.readouterr().out) == document
