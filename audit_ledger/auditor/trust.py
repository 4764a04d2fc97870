"""What an auditor trusts, read from files: verifier keys (one or a key history) or a C2SP
tlog-policy file; and the offline check of a tlog-proof bundle against it.

Everything here works with no network and no database: a bundle (``audit-ledger prove``) and a
policy are all ``audit-ledger verify-proof`` needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from audit_ledger.core.bundle import VerifiedBundle, verify_bundle
from audit_ledger.core.checkpoint import Verifier, parse_verifier_key
from audit_ledger.core.policy import TlogPolicy, key_history_policy, parse_policy
from audit_ledger.errors import CheckpointError, ConfigError, PolicySyntaxError

#: Larger than any sane policy (32 logs and witnesses of ~100 bytes each) or bundle.
MAX_FILE_BYTES = 1024 * 1024


def read_file(path: str | Path, what: str) -> bytes:
    """The bytes of a small input file, or :class:`ConfigError` saying which file is wrong."""
    try:
        with Path(path).open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read the {what} file: {exc.strerror or exc}") from None
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(f"the {what} file is larger than {MAX_FILE_BYTES} bytes")
    return data


def load_policy(path: str | Path) -> TlogPolicy:
    """Parse a tlog-policy file; it must list at least one log key to verify anything."""
    try:
        policy = parse_policy(read_file(path, "policy"))
    except PolicySyntaxError as exc:
        raise ConfigError(f"bad policy file: {exc}") from None
    if not policy.logs:
        raise ConfigError("the policy file lists no log key ('log <vkey>' line)")
    return policy


def parse_keys(texts: Sequence[str]) -> list[Verifier]:
    """Verifier keys (``name+hash+key``), e.g. an old and a new checkpoint key."""
    try:
        return [parse_verifier_key(text.strip()) for text in texts]
    except CheckpointError as exc:
        raise ConfigError(f"bad verifier key: {exc}") from None


def trust_from(
    keys: Sequence[str] = (), key_files: Sequence[str] = (), policy_file: str | None = None
) -> TlogPolicy:
    """The policy given on a command line: ``--policy`` alone, or verifier keys (a history)."""
    if policy_file is not None:
        if keys or key_files:
            raise ConfigError("give either --policy or verifier keys, not both")
        return load_policy(policy_file)
    texts = [*keys]
    for path in key_files:
        texts.extend(
            line
            for line in read_file(path, "verifier key").decode("utf-8", "replace").splitlines()
            if line.strip()
        )
    if not texts:
        raise ConfigError(
            "a verifier key (--verifier-key, --verifier-key-file) or --policy is needed"
        )
    try:
        return key_history_policy(parse_keys(texts))
    except PolicySyntaxError as exc:
        raise ConfigError(str(exc)) from None


def verify_proof_file(
    bundle_path: str | Path, policy: TlogPolicy, leaf_path: str | Path | None = None
) -> VerifiedBundle:
    """Verify a ``.tlog-proof`` file offline (see :func:`audit_ledger.core.bundle.verify_bundle`).

    Unreadable files raise :class:`ConfigError`; a bundle that proves nothing raises a
    :class:`~audit_ledger.errors.CoreError`.
    """
    data = read_file(bundle_path, "proof bundle")
    leaf = read_file(leaf_path, "leaf") if leaf_path is not None else None
    return verify_bundle(data, policy, leaf)
