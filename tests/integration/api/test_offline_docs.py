"""``/docs`` and ``/redoc`` work offline (issue #14 item 4): every asset the pages reference is
on this origin and served by the service itself, with the right media type."""

from __future__ import annotations

import re

import pytest

from tests.support.servers import InProcessServer, module_app_server

server = module_app_server()
#: Every URL an HTML page or its inline bootstrap script names: src/href attributes and the
#: quoted ``url:`` values Swagger UI's inline script passes (the OpenAPI document).
_REFERENCE = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']|url\s*:\s*['"]([^'"]+)['"]""")
_MEDIA = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}


def _references(html: str) -> list[str]:
    return [a or b for a, b in _REFERENCE.findall(html)]


@pytest.mark.parametrize(
    ("page", "expected"),
    [
        ("/docs", {"swagger-ui-bundle.js", "swagger-ui.css", "favicon.png"}),
        ("/redoc", {"redoc.standalone.js", "favicon.png"}),
    ],
)
def test_docs_pages_reference_only_same_origin_assets_that_are_served(
    server: InProcessServer, page: str, expected: set[str]
) -> None:
    response = server.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    references = _references(response.text)
    assert references, response.text
    # Nothing absolute, nothing protocol-relative: a page that names another host is blank offline.
    assert all(ref.startswith("/") and not ref.startswith("//") for ref in references), references
    assert "googleapis" not in response.text
    assert "cdn" not in response.text.lower()
    named = {ref.rsplit("/", 1)[-1] for ref in references}
    assert expected <= named, named
    for ref in references:
        served = server.get(ref)
        assert served.status_code == 200, ref
        if ref == "/openapi.json":
            assert served.json()["info"]["title"] == "audit-ledger"
            continue
        suffix = ref[ref.rfind(".") :]
        assert served.headers["content-type"].startswith(_MEDIA[suffix]), ref
        assert len(served.content) > 1000, ref  # the real dist file, not a stub


def test_swagger_bundle_is_the_real_swagger_ui(server: InProcessServer) -> None:
    bundle = server.get("/docs-assets/swagger-ui-bundle.js")
    assert b"SwaggerUIBundle" in bundle.content
    redoc = server.get("/docs-assets/redoc.standalone.js")
    assert b"Redoc" in redoc.content


@pytest.mark.parametrize("name", ["nope.js", "..%2Fcore.py", "%2E%2E%2F__init__.py", "LICENSE"])
def test_only_the_listed_assets_are_served(server: InProcessServer, name: str) -> None:
    response = server.get(f"/docs-assets/{name}")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")
