"""Every console page passes axe-core with no serious or critical violation (issue #14, "Show").

The ``axe-core`` npm package (pinned in ``tests/browser/package.json``; ``npm ci`` there, which
``.ci/run`` does) is injected into each page in Debian's chromium driven by Playwright, against
a real uvicorn with one record per category: sign-in, search and its results, a record, the
subject report and its results, erasure requests, legal holds, the access trail, chain status,
principals, and an export refused with its error page. The browser context bypasses the CSP
only so that the test can inject axe (the other browser tests check the CSP itself).

Missing chromium or ``node_modules``: a loud skip, or a failure under
``AUDIT_LEDGER_REQUIRE_CHROMIUM=1`` (CI).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page

from tests.integration.console.test_browser import Site, browser, site
from tests.support.console import follow

__all__ = ["browser", "site"]  # fixtures shared with the other browser tests

pytestmark = pytest.mark.process

AXE = Path(__file__).resolve().parents[2] / "browser" / "node_modules" / "axe-core" / "axe.min.js"
BLOCKING = {"serious", "critical"}


@pytest.fixture(scope="module")
def axe_source() -> str:
    if not AXE.exists():
        message = f"{AXE} is missing (cd tests/browser && npm ci)"
        if os.environ.get("AUDIT_LEDGER_REQUIRE_CHROMIUM") == "1":  # .ci/run sets it
            pytest.fail(f"{message} and AUDIT_LEDGER_REQUIRE_CHROMIUM=1")
        pytest.skip(f"!!! CONSOLE ACCESSIBILITY TESTS SKIPPED: {message} !!!")
    return AXE.read_text(encoding="utf-8")


def blocking_violations(page: Page, axe_source: str) -> list[str]:
    """axe-core's serious and critical violations on ``page`` as it is now, one line each."""
    page.wait_for_load_state("load")
    page.add_script_tag(content=axe_source)
    result: dict[str, Any] = page.evaluate(
        "async () => await axe.run(document, {resultTypes: ['violations']})"
    )
    return [
        f"{v['impact']} {v['id']}: {v['help']} — "
        + "; ".join(str(n["target"][0]) if n["target"] else "?" for n in v["nodes"][:5])
        for v in result["violations"]
        if v["impact"] in BLOCKING
    ]


@pytest.fixture
def audit(axe_source: str) -> Iterator[Callable[[Page, str], None]]:
    """``audit(page, name)`` runs axe on the page as it is; every page's blocking violations
    are collected and the test fails at the end with all of them."""
    found: dict[str, list[str]] = {}

    def run(page: Page, name: str) -> None:
        found[name] = blocking_violations(page, axe_source)

    yield run
    blocking = {name: problems for name, problems in found.items() if problems}
    assert not blocking, "\n".join(f"{name}: {p}" for name, ps in blocking.items() for p in ps)


@pytest.fixture
def new_page(browser: Browser, site: Site) -> Iterator[Callable[[], Page]]:
    contexts = []

    def make() -> Page:
        context = browser.new_context(base_url=site.server.url, bypass_csp=True)
        contexts.append(context)
        return context.new_page()

    yield make
    for context in contexts:
        context.close()


def sign_in(page: Page, site: Site, role: str) -> None:
    page.goto("/console/sign-in")
    page.fill("#token", site.server.tokens[role])
    follow(page, "main button[type=submit]")
    assert "/sign-in" not in page.url, page.url


def test_the_audit_sees_a_violation(new_page: Callable[[], Page], axe_source: str) -> None:
    """The check can fail: the sign-in page with its token field's label removed."""
    p = new_page()
    p.goto("/console/sign-in")
    assert blocking_violations(p, axe_source) == []
    p.evaluate("document.querySelector('label[for=token]').remove()")
    assert any(" label: " in line for line in blocking_violations(p, axe_source))


def test_every_console_page_passes_axe(
    new_page: Callable[[], Page], site: Site, audit: Callable[[Page, str], None]
) -> None:
    p = new_page()
    p.goto("/console/sign-in")
    audit(p, "sign-in")
    p.fill("#token", "not-a-token")
    follow(p, "main button[type=submit]")
    audit(p, "sign-in (refused)")

    officer = new_page()
    sign_in(officer, site, "compliance_officer")
    audit(officer, "search")
    officer.select_option("#category", "financial_transactions")
    officer.fill("#user_id", site.user_id)
    follow(officer, "main form.search button[type=submit]:not([formaction])")
    assert "record" in officer.inner_text("#results")
    audit(officer, "search results")
    officer.goto(f"/console/records/{site.seq_of['financial_transactions']}")
    audit(officer, "record")
    officer.goto("/console/search")
    officer.fill("#since", "not a date")
    follow(officer, "button[value=csv]")
    assert "/console/export" in officer.url
    audit(officer, "export refused")
    officer.goto("/console/holds")
    audit(officer, "legal holds")
    officer.goto("/console/status")
    audit(officer, "chain status")
    officer.goto("/console/principals")
    audit(officer, "forbidden")

    privacy = new_page()
    sign_in(privacy, site, "privacy_officer")
    privacy.goto("/console/subject")
    audit(privacy, "subject report")
    privacy.fill("#user_id", site.user_id)
    follow(privacy, "main button[type=submit]")
    audit(privacy, "subject report results")

    security = new_page()
    sign_in(security, site, "security_team")
    security.goto("/console/access")
    audit(security, "access trail")
    security.goto("/console/access?kind=refused")
    audit(security, "access trail (refused reads)")

    admin = new_page()
    sign_in(admin, site, "admin")
    admin.goto("/console/principals")
    audit(admin, "principals")
    admin.goto("/console/holds")
    admin.select_option("#scope", "category")
    admin.select_option("#hold-category", "data_privacy_events")
    admin.fill("#reason", "case 14")
    follow(admin, "main form.card button[type=submit]")
    assert "placed" in admin.inner_text("main")
    audit(admin, "legal holds (one placed)")
    admin.goto("/console/no-such-page")
    audit(admin, "not found")

    # Last: the erasure changes what the pages above show.
    privacy.goto("/console/erasure")
    audit(privacy, "erasure")
    privacy.fill("#erase-user", site.user_id)
    privacy.check("input[name=confirm]")
    follow(privacy, "main form.card button[type=submit]")
    assert "Erasure recorded" in privacy.inner_text("main")
    audit(privacy, "erasure recorded")
