"""The published OpenAPI document fuzzed against a real server on PostgreSQL, as every role
(issue #12, item 7).

A real ``audit-ledger serve`` (uvicorn, its own process) on PostgreSQL with a few events of each
category; schemathesis (its Python API: a Hypothesis strategy for each operation of the
document the server publishes) generates positive and negative cases, sent as each role, with no
token, with an unknown token and with a revoked one. Every answer must be:

* no 5xx (``not_a_server_error``);
* inside the document: a documented status code, its content type, its headers and its schema
  (``status_code_conformance``, ``content_type_conformance``, ``response_headers_conformance``,
  ``response_schema_conformance``); a schema-violating request refused (``negative_data_rejection``)
  and authentication enforced (``ignored_auth``);
* no 2xx where the role forbids it (the role table of DESIGN §4, ``OPERATION_ROLES``), and no
  plaintext ``data`` in a read's 2xx but for the category's own readers (``READER_OF``).

Failures are collected, not raised, so one run reports all of them (with the figures) instead of
shrinking the first; the budget is a fixed number of cases per operation, caller and mode
(``CASES``): about 2,000 cases, 35-85 s on the shared 2-core box.

Nothing is excluded: generated strings include NUL characters and lone surrogates, which every
route refuses as 422 (issue #12 item 6; ``tests/integration/api/test_unsafe_text.py``).
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.errors import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support.api import CATEGORIES, OPERATION_ROLES, READER_OF
from tests.support.databases import fresh_settings
from tests.support.factories import event
from tests.support.servers import ROLE_NAMES, LiveServer, make_server

pytestmark = [pytest.mark.process, pytest.mark.postgres]

#: Cases per operation, caller and generation mode: 17 operations x 2 modes x this per caller.
#: A longer local run: AUDIT_LEDGER_SCHEMATHESIS_CASES=100 scripts/test -n 0 -s <this file>.
CASES = int(os.environ.get("AUDIT_LEDGER_SCHEMATHESIS_CASES", "10"))
CALLERS = (*ROLE_NAMES, "anonymous", "unknown", "revoked")
UNKNOWN_TOKEN = "alt_" + "A" * 43
#: Reads whose 2xx must carry plaintext only for the category's readers (DESIGN §2, §4).
READS = frozenset({"GET /v1/events", "POST /v1/events/search", "GET /v1/events/{seq}"})
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    ignored_auth,
]


@pytest.fixture(scope="module")
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp("schemathesis")
    with fresh_settings("postgresql", request, tmp) as (settings_, _):
        live = make_server(settings_, tmp)
        live.start()
        try:
            # Something to read, prove and page through: one event of each category.
            answer = httpx.post(
                live.url + "/v1/events/batch",
                json={"events": [event(c) for c in CATEGORIES]},
                headers=live.headers("writer"),
                timeout=30,
            )
            assert answer.status_code == 201, answer.text
            yield live
        finally:
            live.stop()


def caller_headers(server: LiveServer, caller: str) -> dict[str, str]:
    if caller == "anonymous":
        return {}
    token = UNKNOWN_TOKEN if caller == "unknown" else server.tokens[caller]
    return {"Authorization": f"Bearer {token}"}


def may_succeed(operation: str, caller: str) -> bool:
    roles = OPERATION_ROLES[operation]
    if roles is None:
        return True
    if caller in ("anonymous", "unknown", "revoked"):
        return False
    return roles == "*" or (isinstance(roles, frozenset) and caller in roles)


@dataclass
class Tally:
    cases: Counter[str] = field(default_factory=Counter)
    statuses: Counter[str] = field(default_factory=Counter)
    entries: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)


def fuzz(server: LiveServer, operation: Any, caller: str, mode: Any, tally: Tally) -> None:
    headers = caller_headers(server, caller)

    # The caller's credentials are fixed where cases are generated: a negative case then never
    # "negates" the Authorization header only for the caller's token to make it valid again.
    @given(case=operation.as_strategy(generation_mode=mode, headers=headers or None))
    @settings(
        max_examples=CASES,
        # Generation only: failures are collected, so there is nothing to shrink or replay.
        phases=[Phase.generate],
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        if not headers and case.headers:
            # The anonymous caller sends no credentials, generated ones included.
            case.headers.pop("Authorization", None)
            case.headers.pop("authorization", None)
        response = case.call(base_url=server.url, headers=headers, timeout=30)
        operation = f"{case.method} {case.path}"
        tally.cases[caller] += 1
        tally.statuses[f"{response.status_code}"] += 1
        where = f"{caller} {mode.value} {operation} -> {response.status_code}"
        if 200 <= response.status_code < 300 and not may_succeed(operation, caller):
            tally.failures.append(f"{where}: a 2xx the role forbids")
        elif 200 <= response.status_code < 300 and operation in READS:
            body = response.json()
            for entry in body.get("events", [body]):
                category = entry["header"]["category"]
                tally.entries[("plaintext" if "data" in entry else "headers only")] += 1
                if "data" in entry and READER_OF.get(category) != caller:
                    tally.failures.append(f"{where}: plaintext of {category} to a non-reader")
        try:
            case.validate_response(response, checks=CHECKS, headers=headers)
        except (FailureGroup, AssertionError) as exc:
            found = exc.exceptions if isinstance(exc, FailureGroup) else (exc,)
            # The reproduction, with the caller's credentials filtered out.
            curl = case.as_curl_command(headers={"Authorization": "[caller]"} if headers else {})
            for failure in found:
                lines = " | ".join(str(failure).strip().splitlines()[:4])
                tally.failures.append(f"{where}: {type(failure).__name__}: {lines} | {curl}")

    try:
        run()
    except Unsatisfiable:
        # Nothing to make invalid: an operation without parameters or body (``/healthz``).
        if mode is not schemathesis.GenerationMode.NEGATIVE:
            raise


def test_the_document_holds_for_every_caller(server: LiveServer) -> None:
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    schema.config.generation.update(allow_x00=True)  # NUL included (module docstring)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == len(OPERATION_ROLES)
    tally = Tally()
    started = time.monotonic()
    for caller in CALLERS:
        for operation in operations:
            for mode in schemathesis.GenerationMode:
                fuzz(server, operation, caller, mode, tally)
    elapsed = time.monotonic() - started
    print(
        f"\nschemathesis: {sum(tally.cases.values())} cases in {elapsed:.1f} s;"
        f" per caller {dict(tally.cases)}; statuses {dict(sorted(tally.statuses.items()))};"
        f" entries read {dict(tally.entries)}"
    )
    kinds = Counter(failure.split(": ")[1] for failure in tally.failures)
    assert not tally.failures, f"{len(tally.failures)} failures {dict(kinds)}:\n" + "\n".join(
        tally.failures[:60]
    )
    # Each caller got its cases (a strategy that generates nothing proves nothing).
    assert all(tally.cases[caller] >= CASES * len(operations) for caller in CALLERS), tally.cases
    # ...and the read check saw both kinds of entry.
    assert tally.entries["plaintext"] > 0, tally.entries
    assert tally.entries["headers only"] > 0, tally.entries
