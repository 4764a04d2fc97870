"""End to end, as an outside auditor would do it over HTTP (DESIGN §3, §4).

Append events through the API, sign checkpoints (the CLI and the library), then check with
nothing but ``audit_ledger.core``: the checkpoint signature against the published verifier key,
every leaf (re-parsed, chained, hashed) against the checkpoint's root, inclusion proofs for a
sample of entries and a consistency proof between an older and a newer checkpoint.
"""

from __future__ import annotations

import base64
import random
from typing import Any

from audit_ledger.core import merkle
from audit_ledger.core.checkpoint import Checkpoint, parse_verifier_key, verify_checkpoint
from audit_ledger.core.header import parse_leaf
from tests.conftest import ORIGIN
from tests.integration.api.conftest import InProcessServer, run_cli
from tests.support.api import CATEGORIES, open_ledger
from tests.support.factories import event

ZERO = "0" * 64


def _append(
    server: InProcessServer, client: InProcessServer, count: int
) -> dict[int, dict[str, Any]]:
    """Append ``count`` events (mostly in batches, some alone); receipts by seq."""
    receipts: dict[int, dict[str, Any]] = {}
    rng = random.Random(count)
    left = count
    while left:
        n = min(left, rng.choice([1, 1, 7, 50, 120]))
        events = [event(rng.choice(CATEGORIES), user_id=rng.randrange(1, 50)) for _ in range(n)]
        if n == 1:
            r = client.post("/v1/events", json=events[0], headers=server.headers("writer"))
            assert r.status_code == 201, r.text
            got = [r.json()]
        else:
            r = client.post(
                "/v1/events/batch", json={"events": events}, headers=server.headers("writer")
            )
            assert r.status_code == 201, r.text
            got = r.json()["receipts"]
        for raw, receipt in zip(events, got, strict=True):
            assert receipt["event_id"] == raw["event_id"]
            receipts[receipt["seq"]] = receipt
        left -= n
    return receipts


def _checkpoint(server: InProcessServer, client: InProcessServer) -> tuple[str, Checkpoint]:
    key = client.get("/v1/log/verifier-key")
    assert key.status_code == 200
    assert key.headers["content-type"].startswith("text/plain")
    verifier = parse_verifier_key(key.text)
    assert verifier.name == ORIGIN
    r = client.get("/v1/log/checkpoint", headers=server.headers("auditor"))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    checkpoint = verify_checkpoint(r.text, verifier)
    assert checkpoint.origin == ORIGIN
    return r.text, checkpoint


def _leaves(server: InProcessServer, client: InProcessServer, size: int) -> list[bytes]:
    """Every leaf of the first ``size`` entries, page by page (at most 1000 a page)."""
    leaves: list[bytes] = []
    while len(leaves) < size:
        r = client.get(
            "/v1/log/leaves",
            params={"start": len(leaves), "end": size},
            headers=server.headers("auditor"),
        )
        assert r.status_code == 200, r.text
        page = r.json()["leaves"]
        assert 0 < len(page) <= 1000
        assert len(page) == min(1000, size - len(leaves))
        for item in page:
            assert item["seq"] == len(leaves)
            leaves.append(base64.b64decode(item["leaf"], validate=True))
    return leaves


def test_an_auditor_verifies_the_log_over_http(app_server: InProcessServer) -> None:
    server = app_server
    with server.session() as client:
        # No checkpoint was made yet, but the principals' entries are in the log: the first
        # reader gets one signed on demand, covering them.
        _, first = _checkpoint(server, client)
        assert first.size > 0
        receipts = _append(server, client, 300)

        # An older checkpoint, signed by the CLI with the server's settings.
        done = run_cli(server.settings, "checkpoint")
        assert done.returncode == 0, done.stderr
        old_note, old = _checkpoint(server, client)
        assert done.stdout == old_note
        assert old.size >= 300

        # More entries (over 1000 in all, so leaves come in several pages), a newer checkpoint.
        receipts |= _append(server, client, 800)
        with open_ledger(server.settings) as ledger:
            made = ledger.log.checkpoint()
        assert made is not None
        note, new = _checkpoint(server, client)
        assert note == made.note
        assert new.size == made.tree_size > 1000
        assert new.size > old.size

        # Every leaf: parsed, chained, hashed; the roots match both checkpoints.
        leaves = _leaves(server, client, new.size)
        hashes = [merkle.leaf_hash(leaf) for leaf in leaves]
        prev = ZERO
        for seq, (leaf, leaf_hash) in enumerate(zip(leaves, hashes, strict=True)):
            header = parse_leaf(leaf)
            assert header.seq == seq
            assert header.prev == prev
            assert header.encode() == leaf  # the stored bytes are the canonical encoding
            prev = leaf_hash.hex()
            if seq in receipts:
                assert receipts[seq]["leaf_hash"] == leaf_hash.hex()
                assert receipts[seq]["event_id"] == header.event_id
                assert receipts[seq]["recorded_at"] == header.recorded_at
                assert header.writer == "p-writer"
        assert set(receipts) <= set(range(new.size))
        assert merkle.reference_root(hashes) == new.root_hash
        assert merkle.reference_root(hashes[: old.size]) == old.root_hash
        compact = merkle.CompactRange()
        compact.extend(hashes[: old.size])
        assert compact.root() == old.root_hash
        compact.extend(hashes[old.size :])
        assert compact.root() == new.root_hash

        # Inclusion proofs for a sample of entries, in the newer and in the older tree.
        rng = random.Random(7)
        sample = {0, 1, old.size - 1, old.size, new.size - 1, *rng.sample(range(new.size), 25)}
        for seq in sorted(sample):
            for tree in (new, old):
                if seq >= tree.size:
                    continue
                r = client.get(
                    "/v1/log/proof/inclusion",
                    params={"seq": seq, "tree_size": tree.size},
                    headers=server.headers("auditor"),
                )
                assert r.status_code == 200, r.text
                body = r.json()
                assert (body["seq"], body["tree_size"]) == (seq, tree.size)
                proof = [bytes.fromhex(h) for h in body["hashes"]]
                merkle.verify_inclusion(seq, tree.size, hashes[seq], proof, tree.root_hash)
            # The entry's own view agrees with the leaf (header and leaf hash).
            r = client.get(f"/v1/events/{seq}", headers=server.headers("auditor"))
            assert r.status_code == 200, r.text
            assert r.json()["leaf_hash"] == hashes[seq].hex()
            assert r.json()["header"] == parse_leaf(leaves[seq]).to_dict()

        # Consistency: the older checkpoint is a prefix of the newer one.
        pairs = [(old.size, new.size), (new.size, new.size), (1, new.size), (old.size, old.size)]
        pairs += [(m, new.size) for m in rng.sample(range(1, new.size), 10)]
        for first, second in pairs:
            r = client.get(
                "/v1/log/proof/consistency",
                params={"first": first, "second": second},
                headers=server.headers("auditor"),
            )
            assert r.status_code == 200, r.text
            body = r.json()
            assert (body["first"], body["second"]) == (first, second)
            proof = [bytes.fromhex(h) for h in body["hashes"]]
            if first == second:
                assert proof == []
            first_root = merkle.reference_root(hashes[:first])
            second_root = merkle.reference_root(hashes[:second])
            merkle.verify_consistency(first, second, first_root, second_root, proof)
        assert merkle.reference_root(hashes[: old.size]) == old.root_hash

        # A checkpoint of the same size is not re-signed; the latest stays the newest.
        again = run_cli(server.settings, "checkpoint")
        assert again.returncode == 0, again.stderr
        _, latest = _checkpoint(server, client)
        assert latest.size >= new.size
