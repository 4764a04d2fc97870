"""Proof bundles over HTTP and on the command line (DESIGN §7, issue #13 items 5 and 6).

``GET /v1/log/proof/bundle`` (in-process app, both backends): every entry's bundle verifies
offline with nothing but the published verifier key; it carries the very note
``/v1/log/checkpoint`` serves; role, range and empty-log answers are problems. Then, against
real uvicorn (``audit-ledger serve`` in a subprocess): a bundle fetched over HTTP is checked by
``audit-ledger verify-proof`` in a subprocess under tlog-policies — exit 0, or 1 with one line
after a one-byte change or when the witness quorum is missing, until a witness (a throwaway
Ed25519 key made here) cosigns the checkpoint.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest

from audit_ledger.core.bundle import ProofBundle, parse_bundle, verify_bundle
from audit_ledger.core.checkpoint import join_note, parse_verifier_key, split_note
from audit_ledger.core.cosignature import cosign
from audit_ledger.core.policy import key_history_policy
from audit_ledger.settings import Settings
from tests.integration.api.conftest import InProcessServer, LiveServer, run_cli
from tests.support.api import assert_problem, open_ledger, records_read_count
from tests.support.factories import event
from tests.support.tlog_keys import witness


def _fill(settings: Settings, count: int) -> tuple[str, int]:
    """Append ``count`` events and sign a checkpoint; the verifier key and the tree size (the
    servers' principals were recorded first)."""
    with open_ledger(settings) as ledger:
        raws = [event("financial_transactions", user_id=i, order_id=f"O-{i}") for i in range(count)]
        ledger.appends.append(ledger.appends.prepare_batch(raws), "bot")
        made = ledger.log.checkpoint()
        assert made is not None
        return ledger.log.verifier_key(), made.tree_size


def test_every_bundle_verifies_offline(app_server: InProcessServer) -> None:
    key, size = _fill(app_server.settings, 37)
    policy = key_history_policy([parse_verifier_key(key)])
    served = app_server.get("/v1/log/checkpoint", headers=app_server.headers("auditor")).text
    with open_ledger(app_server.settings) as ledger:
        leaves = dict(ledger.log.leaves(0, size))
        reads_before = records_read_count(ledger)
    for seq in range(size):
        r = app_server.get(
            "/v1/log/proof/bundle", params={"seq": seq}, headers=app_server.headers("auditor")
        )
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("text/plain")
        assert r.text.endswith(served)  # the latest checkpoint, as served, verbatim
        proven = verify_bundle(r.content, policy)
        assert (proven.index, proven.leaf, proven.checkpoint.size) == (seq, leaves[seq], size)
    with open_ledger(app_server.settings) as ledger:
        assert records_read_count(ledger) == reads_before + size  # handing out a leaf is a read


def test_bundle_problems(app_server: InProcessServer) -> None:
    auditor = app_server.headers("auditor")
    r = app_server.get("/v1/log/proof/bundle", params={"seq": 0}, headers=auditor)
    assert_problem(r, 404)
    _, size = _fill(app_server.settings, 3)
    with open_ledger(app_server.settings) as ledger:  # appended after the checkpoint
        ledger.appends.append(ledger.appends.prepare_batch([event()]), "bot")
    for seq in (str(size), "99999999999999999999999", "-1", "x"):
        assert_problem(
            app_server.get("/v1/log/proof/bundle", params={"seq": seq}, headers=auditor), 422
        )
    assert_problem(app_server.get("/v1/log/proof/bundle", params={"seq": 0}), 401)
    for role in ("writer", "compliance_officer", "admin"):
        r = app_server.get(
            "/v1/log/proof/bundle", params={"seq": 0}, headers=app_server.headers(role)
        )
        assert_problem(r, 403)


def _verify_proof(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    result = run_cli(settings, "verify-proof", *args)
    assert "Traceback" not in result.stderr
    return result


@pytest.mark.process
def test_verify_proof_against_real_uvicorn(live_server: LiveServer, tmp_path: Path) -> None:
    key, size = _fill(live_server.settings, 20)
    r = httpx.get(
        live_server.url + "/v1/log/proof/bundle",
        params={"seq": 11},
        headers=live_server.headers("auditor"),
        timeout=30,
    )
    assert r.status_code == 200, r.text
    bundle = tmp_path / "entry-11.tlog-proof"
    bundle.write_bytes(r.content)
    w = witness("witness.example")
    policy = tmp_path / "policy"
    policy.write_text(f"log {key}\nquorum none\n")
    needs_witness = tmp_path / "policy-witnessed"
    needs_witness.write_text(f"log {key}\nwitness W {w.key.encode()}\nquorum W\n")

    ok = _verify_proof(live_server.settings, str(bundle), "--policy", str(policy))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith(f"ok: entry 11 is in test.example/ledger at tree size {size}")

    no_quorum = _verify_proof(live_server.settings, str(bundle), "--policy", str(needs_witness))
    assert no_quorum.returncode == 1
    assert no_quorum.stderr.strip() == (
        "PROOF FAILED: the quorum is not met: witness W has not cosigned the checkpoint"
    )

    # The witness cosigns the checkpoint (as tlog-witness would) and the bundle now passes.
    parsed = parse_bundle(bundle.read_bytes())
    text, signatures = split_note(parsed.note)
    cosig = cosign(text, w.key, w.private.sign, 1_767_000_000)
    cosigned = ProofBundle(
        parsed.index,
        parsed.proof,
        join_note(text, [*signatures, cosig.note_signature()]),
        parsed.extra,
    )
    witnessed = tmp_path / "witnessed.tlog-proof"
    witnessed.write_text(cosigned.encode())
    passed = _verify_proof(live_server.settings, str(witnessed), "--policy", str(needs_witness))
    assert passed.returncode == 0, passed.stderr
    assert "cosigned by W" in passed.stdout

    raw = bytearray(bundle.read_bytes())
    for pos in (0, 40, len(raw) // 2, len(raw) - 5):
        mutated = raw.copy()
        mutated[pos] ^= 0x01
        bad = tmp_path / f"bad-{pos}.tlog-proof"
        bad.write_bytes(bytes(mutated))
        failed = _verify_proof(live_server.settings, str(bad), "--policy", str(policy))
        assert failed.returncode == 1, (pos, failed.stdout)
        assert failed.stderr.startswith("PROOF FAILED: ")
        assert len(failed.stderr.strip().splitlines()) == 1


def test_prove_and_verify_proof_in_process(
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from tests.support.cli import run_cli as run_main

    key, size = _fill(settings, 9)
    out = tmp_path / "e.tlog-proof"
    code, _, err = run_main(monkeypatch, capsys, settings, "prove", "4", "--out", str(out))
    assert code == 0, err
    assert verify_bundle(out.read_bytes(), key_history_policy([parse_verifier_key(key)])).index == 4
    code, stdout, _ = run_main(monkeypatch, capsys, settings, "prove", "4")
    assert code == 0
    assert stdout == out.read_text()

    code, stdout, err = run_main(
        monkeypatch, capsys, settings, "verify-proof", str(out), "--verifier-key", key
    )
    assert (code, err) == (0, "")
    assert "entry 4" in stdout
    leaf_file = tmp_path / "leaf"
    leaf_file.write_bytes(parse_bundle(out.read_bytes()).extra or b"")
    code, _, err = run_main(
        monkeypatch,
        capsys,
        settings,
        "verify-proof",
        str(out),
        "--verifier-key",
        key,
        "--leaf",
        str(tmp_path / "e.tlog-proof"),
    )
    assert code == 1
    assert err.startswith("PROOF FAILED: the bundle's leaf bytes are not the entry given")
    code, _, err = run_main(
        monkeypatch,
        capsys,
        settings,
        "verify-proof",
        str(out),
        "--verifier-key",
        key,
        "--leaf",
        str(leaf_file),
    )
    assert code == 0, err

    bad_policy = tmp_path / "bad-policy"
    bad_policy.write_text(f"log {key}\ngroup G any nobody\nquorum G\n")
    for args, problem in [
        (["prove", str(size)], f"need 0 <= seq < {size}"),
        (["prove", "x"], "must be a non-negative integer"),
        (["verify-proof", str(out), "--policy", str(bad_policy)], "bad policy file: policy line 2"),
        (["verify-proof", str(out), "--policy", str(tmp_path / "missing")], "cannot read"),
        (["verify-proof", str(out)], "one of the arguments"),
        (["verify-proof", str(out), "--verifier-key", "nope"], "bad verifier key"),
        (["prove", "1", "--out", str(tmp_path / "no" / "dir")], "cannot write"),
    ]:
        code, _, err = run_main(monkeypatch, capsys, settings, *args)
        assert code == 2, (args, err)
        assert problem in err, (args, err)
        assert len(err.strip().splitlines()) == 1
