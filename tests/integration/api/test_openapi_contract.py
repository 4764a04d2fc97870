"""What the service sends at the edges of the OpenAPI document: the 405 ``Allow`` header and
``/openapi.json`` itself. (Every documented operation is fuzzed against the document by
test_schemathesis.py; the document's own shape is tests/unit/api/test_openapi_document.py.)"""

from __future__ import annotations

import pytest

from audit_ledger.api.app import create_app
from tests.support.api import assert_problem
from tests.support.servers import InProcessServer, module_app_server

server = module_app_server()


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        # Two routes share these paths (GET and POST): Starlette named only the first one's.
        ("PUT", "/v1/events", "GET, POST"),
        ("DELETE", "/v1/events", "GET, POST"),
        ("PATCH", "/v1/legal-holds", "GET, POST"),
        # GET /v1/events/batch is served, by GET /v1/events/{seq} (422: seq is an integer).
        ("DELETE", "/v1/events/batch", "GET, POST"),
        ("POST", "/v1/events/7", "GET"),
        ("GET", "/v1/legal-holds/hold_x/release", "POST"),
        ("POST", "/healthz", "GET"),
    ],
)
def test_405_allow_names_every_method_of_the_path(
    server: InProcessServer, method: str, path: str, allow: str
) -> None:
    response = server.request(method, path, headers=server.headers("admin"))
    assert_problem(response, 405)
    assert response.headers["allow"] == allow


def test_every_documented_method_is_allowed(server: InProcessServer) -> None:
    """The ``Allow`` of each path is the methods the document lists for it (plus GET for
    ``/v1/events/batch`` and ``/search``, which ``GET /v1/events/{seq}`` also matches)."""
    document = server.get("/openapi.json").json()
    for path, item in document["paths"].items():
        concrete = path.replace("{seq}", "1").replace("{hold_id}", "hold_x")
        response = server.request("TRACE", concrete)
        assert response.status_code == 405, path
        also = {"GET"} if path in {"/v1/events/batch", "/v1/events/search"} else set()
        documented = {m.upper() for m in item} | also
        assert response.headers["allow"] == ", ".join(sorted(documented)), path


def test_openapi_json_is_the_published_document(server: InProcessServer) -> None:
    response = server.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == create_app().openapi()
