"""The compliance console: server-rendered pages at ``/console/`` (issue #14, DESIGN §8).

A shell like :mod:`audit_ledger.api`: it signs people in (:mod:`.web`), renders pages
(:mod:`.pages`, :mod:`.retention`, :mod:`.principals`, :mod:`.access`) with the Jinja2
templates and CSS shipped in this package, and reaches the data only through the same ledger use
cases as the API, so the API's tests cover the rules and the console's tests cover the pages.
No JavaScript: every page is a plain form or link.
"""

from fastapi import APIRouter

from audit_ledger.console import access, exports, pages, principals, retention, subject

router = APIRouter()
router.include_router(pages.router)
router.include_router(retention.router)
router.include_router(principals.router)
router.include_router(access.router)
router.include_router(exports.router)  # the search's downloads (issue #14 item 2)
router.include_router(subject.router)  # the subject report (issue #14)
router.include_router(pages.fallback)  # last: the HTML 404 for any other console path

__all__ = ["router"]
