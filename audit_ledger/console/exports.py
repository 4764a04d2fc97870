"""The search page's downloads (issue #14 item 2): "Download CSV" and "Download JSON Lines"
post the search form here and get a ZIP of the data file and its manifest, checkable offline
with ``audit-ledger verify-export`` (the same use case as ``audit-ledger export records``:
:meth:`audit_ledger.ledger.record_exports.RecordExports.write`, recorded as reads of
``POST /console/export``, refusals recorded too).

The export is written to a private temporary directory first (so a refusal or an error sends
an error page, not half a file) and streamed from there; the directory is removed once the
response is sent. The filters travel in the POST body like the search's: personal identifiers
never appear in a URL. The paging cursor is ignored: an export is of the whole search.
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response
from starlette.background import BackgroundTask

from audit_ledger.console.pages import search_query
from audit_ledger.console.web import PREFIX, ConsoleRoute, SignedIn, ledger_of, read_form, run
from audit_ledger.errors import ValidationError
from audit_ledger.ledger.identity import Principal
from audit_ledger.ledger.reads import Query
from audit_ledger.ledger.record_exports import DATA_FORMATS
from audit_ledger.ledger.service import Ledger

router = APIRouter(prefix=PREFIX, route_class=ConsoleRoute, include_in_schema=False)
ENDPOINT = "POST /console/export"
MANIFEST_SUFFIX = ".manifest"


def _write_zip(
    ledger: Ledger, principal: Principal, q: Query, data_format: str, where: Path
) -> Path:
    name = f"records.{data_format}"
    data, manifest = where / name, where / (name + MANIFEST_SUFFIX)
    with data.open("wb") as data_out, manifest.open("wb") as manifest_out:
        ledger.record_exports.write(principal, q, ENDPOINT, data_format, data_out, manifest_out)
    bundle = where / "export.zip"
    with zipfile.ZipFile(bundle, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.write(data, name)
        archive.write(manifest, manifest.name)
    return bundle


@router.post("/export")
async def export(request: Request, session: SignedIn) -> Response:
    form = await read_form(request)
    ledger = ledger_of(request)
    ledger.console_sessions.check_csrf(session, form.get("csrf"))
    data_format = form.get("format", "")
    if data_format not in DATA_FORMATS:
        raise ValidationError(
            "the download is CSV or JSON Lines", [{"field": "format", "problem": "unknown"}]
        )
    q = search_query({**form, "cursor": ""}, 1)
    where = Path(tempfile.mkdtemp(prefix="audit-ledger-export-"))  # 0700: it holds plaintext
    try:
        bundle = await run(_write_zip, ledger, session.principal, q, data_format, where)
    except BaseException:
        shutil.rmtree(where, ignore_errors=True)
        raise
    return FileResponse(
        bundle,
        media_type="application/zip",
        filename=f"audit-ledger-export-{data_format}.zip",
        background=BackgroundTask(shutil.rmtree, where, ignore_errors=True),
    )
