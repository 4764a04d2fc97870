"""The published OpenAPI document (``/openapi.json``): what the routes answer, truthfully.

Routes declare their answers at their source (``responses=problems(...)`` in the decorator, the
bodies they read with :func:`json_body`); this module holds the one table of problem answers and
builds the document FastAPI serves. Two things FastAPI cannot infer are added here:

* Every error is RFC 9457 ``application/problem+json`` (DESIGN §4), including FastAPI's own
  parameter validation, so each route lists its 4xx/503 with the :class:`Problem` schema and the
  default ``application/json`` 422 (``HTTPValidationError``) is never published.
* Bodies are read by the routes themselves (strict JSON, :mod:`audit_ledger.ledger.bodies`), so
  their models are referenced by ``$ref`` into ``components/schemas`` and registered there — an
  inline model schema would carry ``$defs`` whose ``#/$defs/…`` refs dangle once nested in the
  document (OpenAPI 3.1 resolves them against the document root), and generators skip it.

The bearer scheme itself comes from the ``HTTPBearer`` dependency in :mod:`deps`.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from audit_ledger.api.models import (
    BatchIn,
    ErasureIn,
    EventIn,
    HoldIn,
    HoldReleaseIn,
    Problem,
    SearchIn,
)
from audit_ledger.api.problems import PROBLEM_JSON

REF_TEMPLATE = "#/components/schemas/{model}"
#: Models the document references by name without FastAPI seeing them as fields.
REFERENCED_MODELS: tuple[type[BaseModel], ...] = (
    Problem,
    EventIn,
    BatchIn,
    SearchIn,
    ErasureIn,
    HoldIn,
    HoldReleaseIn,
)

_DESCRIPTIONS = {
    401: "no, a malformed, an unknown or a revoked bearer token",
    403: "the caller's roles do not allow this",
    404: "no such resource",
    409: "conflicts with what the ledger holds, or refused by policy",
    413: "the body is larger than the configured limit",
    415: "the body is not application/json",
    422: "invalid input; `errors` names the failing fields",
    503: "the database is unreachable or the service misconfigured; retry later",
}
_HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"schema": {"type": "string"}, "description": "Bearer"}},
}


def _problem_response(status: int) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "description": _DESCRIPTIONS[status],
        "content": {PROBLEM_JSON: {"schema": {"$ref": REF_TEMPLATE.format(model="Problem")}}},
    }
    if status in _HEADERS:
        answer["headers"] = _HEADERS[status]
    return answer


#: What every route that touches the database can answer besides its own problems.
DATABASE = (503,)
#: A route behind a bearer token (any principal).
AUTHENTICATED = (401, *DATABASE)
#: A route behind a bearer token and a role check.
ROLE_GATED = (401, 403, *DATABASE)
#: A route that reads a JSON body.
BODY = (413, 415, 422)


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` entries of a route for these problem statuses (duplicates ignored)."""
    return {status: _problem_response(status) for status in sorted(set(statuses))}


def json_body(model: type[BaseModel], *, required: bool = True) -> dict[str, Any]:
    """``openapi_extra`` documenting a JSON body that the route reads itself."""
    return {
        "requestBody": {
            "required": required,
            "content": {
                "application/json": {"schema": {"$ref": REF_TEMPLATE.format(model=model.__name__)}}
            },
        }
    }


def build_document(app: FastAPI) -> dict[str, Any]:
    """The document of ``app``, with the referenced models in ``components/schemas``."""
    if app.openapi_schema is None:
        document = get_openapi(
            title=app.title,
            version=app.version,
            openapi_version=app.openapi_version,
            summary=app.summary,
            description=app.description,
            routes=app.routes,
        )
        _, defs = models_json_schema(
            [(model, "validation") for model in REFERENCED_MODELS], ref_template=REF_TEMPLATE
        )
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        for name, schema in defs.get("$defs", {}).items():
            schemas.setdefault(name, schema)
        app.openapi_schema = document
    return app.openapi_schema


def install(app: FastAPI) -> None:
    """Serve :func:`build_document` as ``/openapi.json``."""

    def openapi() -> dict[str, Any]:
        return build_document(app)

    app.openapi = openapi  # type: ignore[method-assign]
