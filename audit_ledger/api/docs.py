"""``/docs`` (Swagger UI) and ``/redoc`` (ReDoc) from assets shipped with the package (issue #14
item 4): FastAPI's defaults load both from a CDN, so on an offline network they were blank.

The dist files (``swagger-ui-bundle.js``, ``swagger-ui.css``, ``redoc.standalone.js`` and a
favicon) come from the ``fastapi-offline`` distribution, a dependency that ships them as package
data under their own licences (Swagger UI: Apache-2.0; ReDoc and fastapi-offline: MIT). We use
its files only and serve them under :data:`ASSETS` from a fixed allow-list, so nothing else in
that directory is reachable and the pages reference nothing but this origin (ReDoc's Google
Fonts link is turned off).
"""

from __future__ import annotations

from importlib import resources

from fastapi import FastAPI
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse, Response
from starlette.requests import Request

from audit_ledger.errors import NotFoundError

#: Where the assets are served (one path segment below the service root).
ASSETS = "/docs-assets"
#: The served files and their media types: nothing outside this list is ever read.
FILES = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "redoc.standalone.js": "text/javascript; charset=utf-8",
    "favicon.png": "image/png",
}
#: Assets change only with the package version: browsers may keep them a day.
_CACHE = {"Cache-Control": "public, max-age=86400"}


def asset_bytes(name: str) -> bytes:
    """One shipped asset (KeyError-free: unknown names are NotFoundError)."""
    if name not in FILES:
        raise NotFoundError("no such documentation asset")
    return (resources.files("fastapi_offline") / "static" / name).read_bytes()


def install(app: FastAPI) -> None:
    """Serve the two documentation pages and their assets; the app is created with
    ``docs_url=None, redoc_url=None`` so FastAPI's CDN pages are not registered."""
    title = app.title
    openapi_url = app.openapi_url or "/openapi.json"
    oauth2_redirect = "/docs/oauth2-redirect"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{title} - Swagger UI",
            oauth2_redirect_url=f"{root}{oauth2_redirect}",
            swagger_js_url=f"{root}{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS}/favicon.png",
        )

    @app.get(oauth2_redirect, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{title} - ReDoc",
            redoc_js_url=f"{root}{ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS}/favicon.png",
            with_google_fonts=False,
        )

    @app.get(ASSETS + "/{name}", include_in_schema=False)
    async def asset(name: str) -> Response:
        return Response(asset_bytes(name), media_type=FILES[name], headers=_CACHE)
