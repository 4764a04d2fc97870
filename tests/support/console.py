"""A simulated browser for the console's in-process tests: its own cookie jar and client
address on an :class:`~tests.support.servers.InProcessServer`, and the forms' CSRF fields; and
:func:`follow`, for the tests that drive a real browser.

Each :class:`Browser` is a separate ``httpx.AsyncClient`` on the same ASGI app, so sessions of
different people (and a thief replaying a copied cookie) never share cookies by accident.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from playwright.sync_api import Page

from tests.support.servers import InProcessServer

SECURITY_HEADERS = {
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@dataclass
class Browser:
    server: InProcessServer
    client: httpx.AsyncClient

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        call = functools.partial(self.client.request, method, path, **kwargs)
        return self.server._portal.call(call)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, data: dict[str, str], **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, data=data, **kwargs)

    def csrf(self, path: str = "/console/search") -> str:
        """The CSRF field of the form on ``path``."""
        page = self.get(path)
        assert page.status_code == 200, (path, page.status_code)
        match = _CSRF.search(page.text)
        assert match, f"no CSRF field on {path}"
        return match.group(1)

    def sign_in(self, token: str) -> httpx.Response:
        return self.post(
            "/console/sign-in", {"csrf": self.csrf("/console/sign-in"), "token": token}
        )

    def search(self, **filters: str) -> httpx.Response:
        return self.post("/console/search", {"csrf": self.csrf(), **filters})


@contextmanager
def browser(server: InProcessServer, client_host: str = "127.0.0.1") -> Iterator[Browser]:
    """A browser at ``client_host`` (loopback by default: cookies without ``Secure``)."""
    transport = httpx.ASGITransport(
        app=server.app, raise_app_exceptions=False, client=(client_host, 50123)
    )
    client = httpx.AsyncClient(transport=transport, base_url="http://testserver")
    try:
        yield Browser(server, client)
    finally:
        server._portal.call(client.aclose)


@contextmanager
def signed_in(server: InProcessServer, role: str) -> Iterator[Browser]:
    with browser(server) as b:
        response = b.sign_in(server.tokens[role])
        assert response.status_code == 303, (role, response.status_code, response.text)
        landing = "/console/principals" if role == "admin" else "/console/search"
        assert response.headers["location"] == landing
        yield b


def follow(page: Page, selector: str) -> None:
    """Click what navigates (a link, a form's submit button) and wait for the page it loads.

    A bare ``click`` returns once the navigation has started, so what is read next may still be
    the previous page (a search page read before its results replaced it).
    """
    with page.expect_navigation(wait_until="load"):
        page.click(selector)
