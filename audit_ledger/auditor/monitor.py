"""An auditor's independent check of a ledger served over HTTP, resumable and offline-capable
(``audit-ledger export`` runs the same checks on the ledger's own database to hand a mirror
to an auditor who has no network access to the service).

:func:`audit_server` trusts nothing but the verifier key the auditor brings (never the one the
server publishes) and the mirror of what it verified before:

1. the latest checkpoint must carry a valid signature by that key — or, given a C2SP tlog-policy
   (:mod:`audit_ledger.core.policy`), by one of its log keys (a key history across a rotation),
   with the quorum of witness cosignatures the policy asks for;
2. it must extend the mirror's checkpoint: a smaller tree is a rollback (a database restored
   from a backup loses entries), the same size with another root is a fork, and a larger tree
   needs a consistency proof (RFC 9162 §2.1.4) from the old checkpoint that verifies;
3. every leaf after the mirror's size, up to the checkpoint's, is checked as ``audit-ledger
   verify`` checks it (canonical format v1, contiguous seq, the ``prev`` chain, ``recorded_at``
   never decreasing) and added to the saved right edge of the tree, whose root must then be the
   checkpoint's root hash;
4. inclusion proofs (RFC 9162 §2.1.3) served for a sample of the new leaves must lead from the
   leaf hashes computed here to that root;
5. only then are the new leaves and checkpoint committed to the mirror.

A contradiction raises :class:`AuditFailedError` with the documents that prove it saved under
the mirror's ``evidence/``. :func:`verify_mirror` re-checks a whole mirror with no server.
Only headers ever travel: the auditor role never receives plaintext.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from audit_ledger.auditor import DEFAULT_INCLUSION_CHECKS
from audit_ledger.auditor.mirror import Mirror, MirrorError, MirrorState, leaf_line
from audit_ledger.core.checkpoint import Checkpoint, Verifier
from audit_ledger.core.merkle import verify_consistency, verify_inclusion
from audit_ledger.core.policy import TlogPolicy, key_history_policy
from audit_ledger.core.verify import ChainVerifier, SegmentVerifier
from audit_ledger.errors import (
    AuditLedgerError,
    ChainBrokenError,
    CheckpointError,
    ConfigError,
    ProofError,
    QuorumError,
)

#: Largest page ``GET /v1/log/leaves`` serves.
PAGE = 1000


class LogSource(Protocol):
    """The auditor's reads of DESIGN §4: :class:`~audit_ledger.client.AuditLedgerClient` as it
    is, or :class:`~audit_ledger.auditor.sources.LedgerSource` over a ledger's own database."""

    async def get_checkpoint(self) -> str | None: ...

    async def get_leaves(self, start: int, end: int) -> list[tuple[int, bytes]]: ...

    async def inclusion_proof(self, seq: int, tree_size: int) -> list[bytes]: ...

    async def consistency_proof(self, first: int, second: int) -> list[bytes]: ...


class AuditFailedError(AuditLedgerError):
    """The ledger contradicts its own signed checkpoints (or the mirror its saved state).

    ``evidence`` is the folder holding the contradicting documents, when they were saved.
    """

    def __init__(self, message: str, evidence: Path | None = None) -> None:
        super().__init__(message if evidence is None else f"{message} (evidence: {evidence})")
        self.evidence = evidence


@dataclass(frozen=True, slots=True)
class AuditReport:
    """What one run verified."""

    tree_size: int
    previous_size: int
    root_hash: str
    new_leaves: int
    inclusion_proofs: int
    consistency_proof: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "tree_size": self.tree_size,
            "previous_size": self.previous_size,
            "root_hash": self.root_hash,
            "new_leaves": self.new_leaves,
            "inclusion_proofs": self.inclusion_proofs,
            "consistency_proof": self.consistency_proof,
        }


#: What an auditor trusts: one verifier key, or a tlog-policy (log key history and quorum).
Trust = Verifier | TlogPolicy


def _policy(trust: Trust) -> TlogPolicy:
    return key_history_policy([trust]) if isinstance(trust, Verifier) else trust


def _check_key(state: MirrorState | None, policy: TlogPolicy) -> None:
    if state is not None and state.verifier_key not in {key.encode() for key in policy.logs}:
        raise ConfigError(
            "the mirror was verified with another verifier key; use a new mirror directory "
            "for a new key (or list the old key too, e.g. in the policy's log lines)"
        )


def _saved_checkpoint(state: MirrorState, policy: TlogPolicy, mirror: Mirror) -> Checkpoint:
    # The saved checkpoint met the trust of its day; its log signature is what binds it now.
    try:
        saved, _ = policy.verify_log_signature(state.checkpoint)
    except CheckpointError as exc:
        raise AuditFailedError(f"the mirror's saved checkpoint does not verify: {exc}") from None
    if saved.size != state.size:
        raise AuditFailedError(f"{mirror.state_path} disagrees with its own checkpoint")
    return saved


def _fail(
    mirror: Mirror, what: str, message: str, documents: Mapping[str, str | bytes]
) -> AuditFailedError:
    return AuditFailedError(message, mirror.save_evidence(what, documents))


async def audit_server(
    source: LogSource,
    mirror: Mirror,
    trust: Trust,
    *,
    inclusion_checks: int = DEFAULT_INCLUSION_CHECKS,
    rng: random.Random | None = None,
) -> AuditReport:
    """Verify the server's latest checkpoint and the leaves it covers against the mirror, then
    extend the mirror (see the module docstring). Raises :class:`AuditFailedError` on a
    contradiction; source errors (unreachable, 401/403, malformed answers) pass through."""
    state = mirror.load()
    policy = _policy(trust)
    _check_key(state, policy)
    saved = _saved_checkpoint(state, policy, mirror) if state is not None else None
    old_note = state.checkpoint if state is not None else ""

    note = await source.get_checkpoint()
    if note is None:
        if state is None:
            raise ConfigError(
                "there is no signed checkpoint yet (the log is empty or none was made)"
            )
        raise _fail(
            mirror,
            "checkpoint-gone",
            f"the server has no checkpoint, but it signed one of {state.size} entries before",
            {"saved-checkpoint": old_note},
        )
    try:
        verified = policy.verify_checkpoint(note)
    except QuorumError as exc:
        raise _fail(
            mirror, "quorum-not-met", f"the server's checkpoint: {exc}", {"served-checkpoint": note}
        ) from None
    except CheckpointError as exc:
        raise _fail(
            mirror,
            "bad-signature",
            f"the server's checkpoint does not verify with the verifier key: {exc}",
            {"served-checkpoint": note},
        ) from None
    checkpoint = verified.checkpoint

    previous = saved.size if saved is not None else 0
    consistency = False
    if saved is not None:
        both = {"saved-checkpoint": old_note, "served-checkpoint": note}
        if checkpoint.size < saved.size:
            raise _fail(
                mirror,
                "rollback",
                f"the server's checkpoint has {checkpoint.size} entries, fewer than the "
                f"{saved.size} it signed before (a rollback)",
                both,
            )
        if checkpoint.size == saved.size:
            if checkpoint.root_hash != saved.root_hash:
                raise _fail(
                    mirror, "fork", f"two signed roots for the same {saved.size} entries", both
                )
            return AuditReport(checkpoint.size, previous, checkpoint.root_hash.hex(), 0, 0, False)
        if saved.size > 0:
            proof = await source.consistency_proof(saved.size, checkpoint.size)
            try:
                verify_consistency(
                    saved.size, checkpoint.size, saved.root_hash, checkpoint.root_hash, proof
                )
            except ProofError as exc:
                raise _fail(
                    mirror,
                    "inconsistent",
                    f"the checkpoint of {checkpoint.size} entries does not extend the one of "
                    f"{saved.size}: {exc}",
                    {**both, "consistency-proof": "\n".join(h.hex() for h in proof) + "\n"},
                ) from None
            consistency = True

    chain = (
        ChainVerifier(state.tree, state.last_leaf, state.last_recorded_at)
        if state is not None
        else ChainVerifier()
    )
    new = checkpoint.size - previous
    # Unpredictable to the server, so it cannot serve good proofs only where they are checked.
    sample = _sample(previous, checkpoint.size, inclusion_checks, rng or random.SystemRandom())
    sampled: dict[int, bytes] = {}
    pages = _pages(source, previous, checkpoint.size)
    with mirror.appending() as out:
        async with contextlib.aclosing(pages):
            async for page in pages:
                start = chain.size
                try:
                    hashes = _extend(chain, page)
                except ChainBrokenError as exc:
                    bad = exc.seq if exc.seq is not None else start
                    leaf = next((leaf for seq, leaf in page if seq == bad), b"")
                    raise _fail(
                        mirror,
                        "broken-chain",
                        f"leaf {exc}",
                        {"served-checkpoint": note, f"leaf-{bad}": leaf},
                    ) from None
                for seq in sample:
                    if start <= seq < chain.size:
                        sampled[seq] = hashes[seq - start]
                out.writelines(leaf_line(seq, leaf) for seq, leaf in page)
    if chain.root() != checkpoint.root_hash:
        raise _fail(
            mirror,
            "root-mismatch",
            f"the leaves do not hash to the checkpoint's root of {checkpoint.size} entries",
            {"served-checkpoint": note, "computed-root": chain.root().hex() + "\n"},
        )
    for seq, lh in sorted(sampled.items()):
        proof = await source.inclusion_proof(seq, checkpoint.size)
        try:
            verify_inclusion(seq, checkpoint.size, lh, proof, checkpoint.root_hash)
        except ProofError as exc:
            raise _fail(
                mirror,
                "bad-inclusion-proof",
                f"the inclusion proof of seq {seq} does not verify: {exc}",
                {
                    "served-checkpoint": note,
                    f"inclusion-proof-{seq}": "\n".join(h.hex() for h in proof) + "\n",
                },
            ) from None

    mirror.commit(
        MirrorState(
            verifier_key=verified.log_key.encode(),
            checkpoint=note,
            size=checkpoint.size,
            leaves_bytes=mirror.leaves_path.stat().st_size,
            tree=chain.tree,
            last_leaf=bytes.fromhex(chain.last_leaf_hex) if chain.size else None,
            last_recorded_at=chain.last_recorded_at,
        )
    )
    return AuditReport(
        checkpoint.size, previous, checkpoint.root_hash.hex(), new, len(sampled), consistency
    )


async def _pages(
    source: LogSource, start: int, end: int
) -> AsyncGenerator[list[tuple[int, bytes]], None]:
    """Pages of leaves from ``start`` up to ``end``; each next page is already on its way while
    the caller checks the current one."""

    def fetch(lo: int) -> asyncio.Future[list[tuple[int, bytes]]]:
        return asyncio.ensure_future(source.get_leaves(lo, min(end, lo + PAGE)))

    # Imported here, not at the top: the client pulls in httpx, which ``verify`` and
    # ``append`` (importing this through the ledger service) never need (start-up time).
    from audit_ledger.client import ServerError  # noqa: PLC0415

    pending = fetch(start) if start < end else None
    try:
        while pending is not None:
            page, pending = await pending, None
            if not page:
                raise ServerError(f"the server returned no leaves below seq {end}")
            after = page[-1][0] + 1
            if after > end:
                raise ServerError("the server returned more leaves than asked for")
            if after < end:
                # If the page is not contiguous the caller's check fails and this is cancelled.
                pending = fetch(after)
            yield page
    finally:
        if pending is not None:
            pending.cancel()


def _extend(chain: ChainVerifier, leaves: Sequence[tuple[int, bytes]]) -> list[bytes]:
    """Check consecutive leaves onto ``chain`` as one segment (the checks of ``audit-ledger
    verify``, without building a header object per leaf); their leaf hashes."""
    segment = SegmentVerifier(chain.size)
    for seq, leaf in leaves:
        segment.add(seq, leaf)
    chain.check_seam(segment.first_prev, segment.first_recorded_at)
    for leaf_hash in segment.leaf_hashes:
        chain.append(leaf_hash)
    chain.end_segment(segment.last_recorded_at)
    return segment.leaf_hashes


def _sample(lo: int, hi: int, count: int, rng: random.Random) -> set[int]:
    """Up to ``count`` seqs in ``[lo, hi)``: always the last (the newest entry), and a random
    sample of the rest."""
    if count <= 0 or hi <= lo:
        return set()
    rest = range(lo, hi - 1)
    return {hi - 1, *rng.sample(rest, min(count - 1, len(rest)))}


def verify_mirror(mirror: Mirror, trust: Trust) -> AuditReport:
    """Re-check a whole mirror offline: its checkpoint's signature, every leaf from seq 0, the
    root, and that its saved state is what the leaves give."""
    try:
        state = mirror.load()
    except MirrorError as exc:
        raise AuditFailedError(f"the mirror is damaged: {exc}") from None
    if state is None:
        raise ConfigError(f"{mirror.directory} holds no verified checkpoint yet")
    policy = _policy(trust)
    _check_key(state, policy)
    checkpoint = _saved_checkpoint(state, policy, mirror)
    chain = ChainVerifier()
    try:
        page: list[tuple[int, bytes]] = []
        for record in mirror.read_leaves(state.leaves_bytes):
            page.append(record)
            if len(page) == PAGE:
                _extend(chain, page)
                page = []
        _extend(chain, page)
    except MirrorError as exc:
        raise AuditFailedError(f"the mirror is damaged: {exc}") from None
    except ChainBrokenError as exc:
        raise AuditFailedError(f"the mirror's leaves are not a valid log: leaf {exc}") from None
    if chain.size != checkpoint.size or chain.root() != checkpoint.root_hash:
        raise AuditFailedError(
            f"the mirror's {chain.size} leaves do not hash to its checkpoint's root of "
            f"{checkpoint.size} entries"
        )
    last_leaf = bytes.fromhex(chain.last_leaf_hex) if chain.size else None
    if (chain.tree.hashes, last_leaf, chain.last_recorded_at) != (
        state.tree.hashes,
        state.last_leaf,
        state.last_recorded_at,
    ):
        raise AuditFailedError("the mirror's saved state does not match its leaves")
    return AuditReport(checkpoint.size, 0, checkpoint.root_hash.hex(), chain.size, 0, False)
