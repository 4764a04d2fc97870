"""``audit-ledger openapi``: print the OpenAPI document the service publishes at
``/openapi.json``, for client generators and API reviews without a running server."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from audit_ledger.cli.common import EXIT_OK

if TYPE_CHECKING:
    from audit_ledger.settings import Settings


def cmd_openapi(args: argparse.Namespace, settings: Settings) -> int:
    # Imported here: FastAPI costs a second of start-up every other command skips.
    from audit_ledger.api.app import create_app  # noqa: PLC0415

    # Building the document opens no database: the app's lifespan never runs.
    print(json.dumps(create_app(settings=settings).openapi(), indent=2, ensure_ascii=False))
    return EXIT_OK
