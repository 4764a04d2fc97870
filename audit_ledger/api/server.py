"""``audit-ledger serve``: prepare the database and keys, then run uvicorn.

On the embedded default (a SQLite file) a first start migrates the file and creates development
keys, warning loudly; anywhere else (PostgreSQL) the service refuses to start on an unmigrated
database or missing keys, with one clear line — production keys are made deliberately.
"""

from __future__ import annotations

import os
import sys

import uvicorn

from audit_ledger.api.app import PER_PROCESS_LOGS_ENV
from audit_ledger.crypto.keys import init_keys, keys_exist
from audit_ledger.ledger.service import Ledger
from audit_ledger.observability.metrics import prepare_multiprocess
from audit_ledger.settings import Settings
from audit_ledger.storage import migrations
from audit_ledger.storage.engine import create_engine_for_url

DEV_KEYS_WARNING = """\
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
!! DEVELOPMENT KEYS CREATED in {keys_dir}
!! They encrypt every payload and sign every checkpoint. Fine for trying the service out;
!! for production create keys deliberately (audit-ledger keys init), back them up outside
!! the database, and publish the verifier key below to your auditors:
!!   {verifier}
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
"""


def is_embedded(settings: Settings) -> bool:
    return settings.database_url.startswith("sqlite")


def prepare(settings: Settings) -> None:
    """Make the embedded default ready to serve, or check that a server database is."""
    if is_embedded(settings):
        if not keys_exist(settings.keys_dir):
            verifier = init_keys(settings.keys_dir, settings.checkpoint_origin)
            sys.stderr.write(
                DEV_KEYS_WARNING.format(keys_dir=settings.keys_dir, verifier=verifier.encode())
            )
        engine = create_engine_for_url(settings.database_url)
        try:
            migrations.upgrade(engine)
        finally:
            engine.dispose()
    ledger = Ledger.open(settings)  # raises ConfigError for missing or bad keys
    try:
        ledger.check_schema()  # raises ConfigError for an unmigrated database
    finally:
        ledger.close()


def serve(settings: Settings, host: str, port: int, workers: int) -> None:
    prepare(settings)
    if workers > 1:
        # Workers inherit these: shared metric files, one set of log files per worker.
        prepare_multiprocess(workers)
        os.environ[PER_PROCESS_LOGS_ENV] = "1"
    uvicorn.run(
        "audit_ledger.api.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        http="httptools",  # a dependency: the C parser, several times faster than h11
        proxy_headers=False,
        server_header=False,
        log_level="info",
        access_log=False,  # uvicorn's access lines carry query strings; ours do not
    )
