"""The witness's HTTP shell in-process: the spec's status codes, the ``text/x.tlog.size`` body
of a 409, the size limit, and refusals that never repeat the submitted body."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from audit_ledger.core.tlog_witness import format_add_checkpoint
from audit_ledger.witness.app import MAX_BODY_BYTES, create_witness_app
from audit_ledger.witness.keys import init_witness_key, load_witness_key
from audit_ledger.witness.state import STATE_FILE, WitnessState
from audit_ledger.witness.witness import Witness
from tests.support.tlog import MemoryLog

PATH = "/w/add-checkpoint"


class AsgiClient:
    """Synchronous calls straight into the ASGI app (no socket: the HTTP contract only)."""

    def __init__(self, app: Any) -> None:
        self.transport = httpx.ASGITransport(app=app)

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        async def call() -> httpx.Response:
            async with httpx.AsyncClient(
                transport=self.transport, base_url="http://witness"
            ) as client:
                return await client.request(method, path, **kwargs)

        return anyio.run(call)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, **kwargs)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)


@pytest.fixture
def log() -> MemoryLog:
    memory = MemoryLog("test.example/log")
    memory.append(40)
    return memory


@pytest.fixture
def client(tmp_path: Path, log: MemoryLog) -> Iterator[AsgiClient]:
    init_witness_key(tmp_path / "keys", "witness.example/w1")
    state = WitnessState(tmp_path / STATE_FILE)
    state.add_log(log.verifier.encode())
    app = create_witness_app(Witness(state, load_witness_key(tmp_path / "keys")), "/w/")
    yield AsgiClient(app)
    state.close()


def test_statuses(client: AsgiClient, log: MemoryLog) -> None:
    ok = client.post(PATH, content=log.request(0, 10))
    assert ok.status_code == 200
    assert ok.text.startswith("\u2014 witness.example/w1 ")
    assert ok.text.endswith("\n")

    conflict = client.post(PATH, content=log.request(0, 20))
    assert conflict.status_code == 409
    assert conflict.headers["content-type"] == "text/x.tlog.size"
    assert conflict.content == b"10\n"

    assert client.post(PATH, content=format_add_checkpoint(10, [], log.note(5))).status_code == 400
    bad_proof = format_add_checkpoint(10, [os.urandom(32)] * 3, log.note(20))
    assert client.post(PATH, content=bad_proof).status_code == 422
    stranger = MemoryLog("other.example/log")
    stranger.append(2)
    assert client.post(PATH, content=stranger.request(0, 2)).status_code == 404
    impostor = MemoryLog("test.example/log")
    impostor.append(2)
    assert client.post(PATH, content=impostor.request(0, 2)).status_code == 403
    assert client.post(PATH, content=log.request(10, 40)).status_code == 200


def test_refusals_do_not_echo_the_body(client: AsgiClient) -> None:
    answer = client.post(PATH, content=b"old 0\n\nsecret-origin-value\n1\n")
    assert answer.status_code == 400
    assert "secret-origin-value" not in answer.text


def test_oversized_body_and_wrong_method(client: AsgiClient) -> None:
    assert client.post(PATH, content=b"x" * (MAX_BODY_BYTES + 1)).status_code == 413
    assert client.get(PATH).status_code == 405
    assert client.get("/healthz").status_code == 200
    assert client.get("/w/verifier-key").text.startswith("witness.example/w1+")
