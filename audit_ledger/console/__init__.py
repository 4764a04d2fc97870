"""The compliance console: server-rendered pages at ``/console/`` (issue #14, DESIGN §8).

A shell like :mod:`audit_ledger.api`: it signs people in (:mod:`.web`), renders pages
(:mod:`.pages`) with the Jinja2 templates and CSS shipped in this package, and reaches the data
only through the same ledger use cases as the API, so the API's tests cover the rules and the
console's tests cover the pages. No JavaScript: every page is a plain form or link.
"""

from audit_ledger.console.pages import router

__all__ = ["router"]
