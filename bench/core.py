"""Micro-benchmarks of the pure core (no database).

    .venv/bin/python bench/core.py [--events 20000] [--leaves 1000000] [--proofs 3000]

Measures, per call, in µs:

(a) one event's leaf: build the ``LeafHeader`` (validation), ``encode()`` (RFC 8785 bytes) and
    ``leaf_hash``;
(b) sealing its payload with AES-256-GCM (``audit_ledger.crypto.envelope.DataKey.seal``, plus the
    canonical payload bytes, the AAD and the blob's SHA-256), when the crypto layer provides it;
(c) Merkle proofs from stored hashes in a log of ``--leaves`` leaves: the complete-subtree hashes
    are produced by ``CompactRange.append`` into a bytearray per level (32 bytes per hash, 64 MB
    for a million leaves), then ``inclusion_proof``/``consistency_proof``/``tree_root`` are timed
    at a few thousand random indexes, with the number of stored hashes each one read.

Each row also shows ``hashlib.sha256`` of the same input bytes per call and the ratio to it, as
a yardstick: the machine is a noisy, shared 2-core box, so ratios travel better than absolute
numbers. Timings are the best of several repeats (the least disturbed), with the median beside.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from audit_ledger.core.canonical import canonical_json  # noqa: E402
from audit_ledger.core.header import LeafHeader  # noqa: E402
from audit_ledger.core.merkle import (  # noqa: E402
    CompactRange,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    tree_root,
    verify_consistency,
    verify_inclusion,
)

REPEATS = 5


def timed(
    fn: Callable[[], object], calls: int, baseline: Callable[[], object] | None = None
) -> tuple[float, float, float]:
    """(best, median) µs per call of ``fn`` (which makes ``calls`` calls), and the best µs per
    call of ``baseline``; the two alternate run by run so both see the same machine load."""
    runs, base_runs = [], []
    for _ in range(REPEATS):
        start = time.perf_counter_ns()
        fn()
        runs.append((time.perf_counter_ns() - start) / calls / 1000)
        if baseline is not None:
            start = time.perf_counter_ns()
            baseline()
            base_runs.append((time.perf_counter_ns() - start) / calls / 1000)
    return min(runs), statistics.median(runs), min(base_runs, default=float("nan"))


def sha256_of(inputs: Sequence[bytes]) -> Callable[[], None]:
    """The yardstick: ``hashlib.sha256(x).digest()`` for each input (one call per input)."""
    sha = hashlib.sha256

    def run() -> None:
        for x in inputs:
            sha(x).digest()

    return run


class Table:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str, str, str]] = []

    def add(self, name: str, result: tuple[float, float, float], note: str = "") -> None:
        best, median, base = result
        self.rows.append(
            (name, f"{best:9.2f}", f"{median:9.2f}", f"{base:7.2f}", f"{best / base:7.1f}x", note)
        )

    def print(self) -> None:
        head = ("operation", "best µs", "median µs", "sha256", "ratio", "notes")
        widths = [max(len(r[i]) for r in [head, *self.rows]) for i in range(6)]
        line = "  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))
        print(line)
        print("-" * len(line))
        for row in self.rows:
            print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))


# --- (a) leaf headers ---------------------------------------------------------------------------


def event_inputs(n: int) -> list[dict[str, object]]:
    rng = random.Random(1)
    base = "2026-11-28T03:55:17."
    return [
        {
            "seq": i + 1,
            "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "category": "financial_transactions",
            "event_type": "payment_completed",
            "occurred_at": f"{base}{rng.randrange(10**6):06d}Z",
            "recorded_at": f"{base}{rng.randrange(10**6):06d}Z",
            "writer": "quickcart-bot",
            "correlation_id": f"corr-{i:08d}",
            "refs": {"order": rng.randbytes(32).hex(), "user": rng.randbytes(32).hex()},
            "key_id": "dek-2026-11-0001",
            "payload_sha256": rng.randbytes(32).hex(),
            "prev": rng.randbytes(32).hex(),
        }
        for i in range(n)
    ]


def bench_leaves(table: Table, events: int) -> None:
    inputs = event_inputs(events)
    headers = [LeafHeader(**e) for e in inputs]  # type: ignore[arg-type]
    leaves = [h.encode() for h in headers]
    base = sha256_of(leaves)
    size = sum(map(len, leaves)) // len(leaves)

    def build() -> None:
        for e in inputs:
            LeafHeader(**e)  # type: ignore[arg-type]

    def encode() -> None:
        for h in headers:
            h.encode()

    def hash_leaves() -> None:
        for leaf in leaves:
            leaf_hash(leaf)

    def everything() -> None:
        for e in inputs:
            leaf_hash(LeafHeader(**e).encode())  # type: ignore[arg-type]

    table.add("header build (validate)", timed(build, events, base))
    table.add("header encode (JCS)", timed(encode, events, base), f"{size} B leaf")
    table.add("leaf_hash", timed(hash_leaves, events, base))
    table.add("(a) build+encode+leaf_hash", timed(everything, events, base), "per event")


# --- (b) payload sealing ------------------------------------------------------------------------


def bench_seal(table: Table, events: int) -> None:
    try:
        from audit_ledger.crypto import envelope
    except ImportError as exc:
        print(f"note: (b) seal skipped: audit_ledger.crypto.envelope not importable ({exc})")
        return
    data_key_cls = getattr(envelope, "DataKey", None)
    if data_key_cls is None or not hasattr(data_key_cls, "seal"):
        print("note: (b) seal skipped: audit_ledger.crypto.envelope has no DataKey.seal")
        return
    key = data_key_cls.generate("dek-bench")
    rng = random.Random(2)
    payloads = [
        {
            "user_id": 100000 + i % 5000,
            "amount": f"{rng.randrange(10**7)}.00",
            "payment_method": "qris",
            "timestamp": "2026-11-28T03:55:17.123456Z",
            "order_id": f"ORD-2026-{i:08d}",
        }
        for i in range(events)
    ]
    ids = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(events)]
    plain = [canonical_json(p) for p in payloads]
    base = sha256_of(plain)
    aad = envelope.payload_aad("financial_transactions", ids[0], key.key_id)

    def seal_only() -> None:
        for p in plain:
            key.seal(p, aad)

    def seal_all() -> None:
        for p, event_id in zip(payloads, ids, strict=True):
            blob = key.seal(
                canonical_json(p),
                envelope.payload_aad("financial_transactions", event_id, key.key_id),
            )
            envelope.blob_sha256(blob)

    size = sum(map(len, plain)) // len(plain)
    table.add("AES-256-GCM seal", timed(seal_only, events, base), f"{size} B payload")
    table.add("(b) canonical+aad+seal+sha256", timed(seal_all, events, base), "per event payload")


# --- (c) proofs from stored hashes --------------------------------------------------------------


class LevelStore:
    """Complete-subtree hashes in one bytearray per level (what a table of hashes holds)."""

    def __init__(self) -> None:
        self.levels: list[bytearray] = []
        self.reads = 0
        self.calls = 0

    def put(self, level: int, index: int, h: bytes) -> None:
        if level == len(self.levels):
            self.levels.append(bytearray())
        row = self.levels[level]
        if len(row) != index * 32:
            raise AssertionError("subtrees must arrive in order")
        row += h

    def read(self, indexes: Sequence[tuple[int, int]]) -> list[bytes]:
        self.calls += 1
        self.reads += len(indexes)
        levels = self.levels
        return [bytes(levels[lv][i * 32 : i * 32 + 32]) for lv, i in indexes]


def bench_proofs(table: Table, leaves: int, proofs: int) -> None:
    store = LevelStore()
    compact = CompactRange()
    start = time.perf_counter()
    for i in range(leaves):
        for level, index, h in compact.append(leaf_hash(i.to_bytes(8, "big"))):
            store.put(level, index, h)
    build_s = time.perf_counter() - start
    stored = sum(len(r) for r in store.levels) // 32
    print(
        f"(c) built {leaves:,} leaves in {build_s:.1f} s "
        f"({build_s / leaves * 1e6:.2f} µs/leaf incl. leaf_hash, CompactRange.append, store); "
        f"{stored:,} stored hashes, {stored * 32 / 2**20:.0f} MiB"
    )
    n = leaves
    root = compact.root()
    rng = random.Random(3)
    indexes = [rng.randrange(n) for _ in range(proofs)]
    firsts = [rng.randrange(1, n) for _ in range(proofs)]
    node_input = [bytes(65)] * proofs  # one interior-node hash input, as the yardstick
    base = sha256_of(node_input)

    def measure(name: str, fn: Callable[[], object], note: str) -> None:
        store.reads = store.calls = 0
        result = timed(fn, proofs, base)
        per_proof = store.reads / (REPEATS * proofs)
        calls = store.calls / (REPEATS * proofs)
        table.add(name, result, f"{per_proof:.1f} hashes read, {calls:.0f} call; {note}")

    assert tree_root(n, store.read) == root
    measure("tree_root", lambda: [tree_root(n, store.read) for _ in range(proofs)], f"n={n:,}")
    measure(
        "(c) inclusion_proof",
        lambda: [inclusion_proof(m, n, store.read) for m in indexes],
        f"n={n:,}",
    )
    measure(
        "(c) consistency_proof",
        lambda: [consistency_proof(m, n, store.read) for m in firsts],
        f"m random, n={n:,}",
    )
    max_reads = 0
    for m in indexes[:500]:
        store.reads = 0
        inclusion_proof(m, n, store.read)
        max_reads = max(max_reads, store.reads)
    for m in firsts[:500]:
        store.reads = 0
        consistency_proof(m, n, store.read)
        max_reads = max(max_reads, store.reads)

    incl = [(m, inclusion_proof(m, n, store.read)) for m in indexes]
    leaf_hashes = {m: store.read([(0, m)])[0] for m in indexes}
    cons = [(m, consistency_proof(m, n, store.read), tree_root(m, store.read)) for m in firsts]

    def verify_incl() -> None:
        for m, p in incl:
            verify_inclusion(m, n, leaf_hashes[m], p, root)

    def verify_cons() -> None:
        for m, p, first in cons:
            verify_consistency(m, n, first, root, p)

    avg_len = sum(len(p) for _, p in incl) / len(incl)
    table.add("verify_inclusion", timed(verify_incl, proofs, base), f"{avg_len:.1f} hashes")
    avg_len = sum(len(p) for _, p, _ in cons) / len(cons)
    table.add("verify_consistency", timed(verify_cons, proofs, base), f"{avg_len:.1f} hashes")
    bound = 2 * (n - 1).bit_length() + 2
    print(f"(c) most stored hashes read by one proof: {max_reads} (2*ceil(log2 n)+2 = {bound})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--leaves", type=int, default=1_000_000)
    parser.add_argument("--proofs", type=int, default=3_000)
    args = parser.parse_args()

    print(f"python {sys.version.split()[0]}, best of {REPEATS} runs; sha256 = same input bytes")
    table = Table()
    bench_leaves(table, args.events)
    bench_seal(table, args.events)
    bench_proofs(table, args.leaves, args.proofs)
    print()
    table.print()
    print("\nsha256 column: hashlib.sha256 of the row's input (leaf bytes; payload bytes; one")
    print("65-byte interior-node input for the Merkle rows), µs per call; ratio = best / sha256.")


if __name__ == "__main__":
    main()
