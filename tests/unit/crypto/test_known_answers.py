"""Known-answer tests through our own code (issue #12, item 7), from ``cryptography-vectors``.

* AES-256-GCM: NIST CAVP ``gcmEncryptExtIV256.rsp`` and ``gcmDecrypt256.rsp``, the 96-bit IV
  and 128-bit tag sections (the envelope's only shape, DESIGN §3), through
  :class:`~audit_ledger.crypto.envelope.DataKey`: the sealed blob must be exactly
  ``IV || CT || Tag``, opening it must give ``PT``, and every ``FAIL`` vector must be refused.
* Ed25519: the ``sign.input`` set whose first lines are RFC 8032 §7.1 TEST 1-3, through
  :class:`~audit_ledger.crypto.keys.CheckpointSigner` (the public key it derives from the
  seed) and :class:`~audit_ledger.core.checkpoint.Verifier` (accepts the vector's signature,
  refuses a flipped bit). A signed note signs its text, which no vector's message is; so the
  note signature our signer makes with the RFC 8032 test keys is held against RFC 8032 §6's
  reference code (tests/support/ed25519_reference.py), itself checked on the vectors first.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

import cryptography_vectors
import pytest

from audit_ledger.core.checkpoint import Checkpoint, parse_verifier_key, split_note
from audit_ledger.crypto.envelope import DataKey
from audit_ledger.crypto.keys import CheckpointSigner
from audit_ledger.crypto.secret import Secret
from audit_ledger.errors import CryptoError
from tests.support import ed25519_reference

ORIGIN = "kat.example/ledger"


def _vector_text(path: str) -> str:
    with cryptography_vectors.open_vector_file(path, "r") as handle:
        return str(handle.read())


# --- AES-256-GCM (NIST CAVP) ------------------------------------------------------------------


@dataclass(frozen=True)
class GcmVector:
    count: str
    key: bytes
    iv: bytes
    aad: bytes
    pt: bytes | None  # None: a FAIL vector (decrypt file)
    ct: bytes
    tag: bytes


def gcm_vectors(name: str) -> list[GcmVector]:
    """The vectors of a CAVP GCM ``.rsp`` file with a 96-bit IV and a 128-bit tag."""
    vectors: list[GcmVector] = []
    section: dict[str, str] = {}
    record: dict[str, str] = {}

    def flush() -> None:
        if record and section.get("IVlen") == "96" and section.get("Taglen") == "128":
            vectors.append(
                GcmVector(
                    f"{name} [PTlen={section['PTlen']} AADlen={section['AADlen']}] "
                    f"Count={record['Count']}",
                    bytes.fromhex(record["Key"]),
                    bytes.fromhex(record["IV"]),
                    bytes.fromhex(record["AAD"]),
                    None if "FAIL" in record else bytes.fromhex(record["PT"]),
                    bytes.fromhex(record["CT"]),
                    bytes.fromhex(record["Tag"]),
                )
            )
        record.clear()

    for raw in _vector_text(f"ciphers/AES/GCM/{name}").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            flush()
            key, _, value = line.strip("[]").partition("=")
            section[key.strip()] = value.strip()
        elif line == "FAIL":
            record["FAIL"] = ""
        else:
            key, _, value = line.partition("=")
            if key.strip() == "Count":
                flush()
            record[key.strip()] = value.strip()
    flush()
    return vectors


ENCRYPT = gcm_vectors("gcmEncryptExtIV256.rsp")
DECRYPT = gcm_vectors("gcmDecrypt256.rsp")


def test_the_cavp_files_hold_the_expected_vectors() -> None:
    # 5 PT lengths x 5 AAD lengths x 15 counts in each file; a parser that silently dropped
    # sections would make the tests below pass on nothing.
    assert len(ENCRYPT) == 375
    assert len(DECRYPT) == 375
    assert all(len(v.key) == 32 and len(v.iv) == 12 and len(v.tag) == 16 for v in ENCRYPT)
    assert sum(v.pt is None for v in DECRYPT) > 0
    assert sum(v.pt is not None for v in DECRYPT) > 0
    assert {len(v.aad) for v in ENCRYPT} == {0, 16, 20, 48, 90}


@pytest.mark.parametrize("vector", ENCRYPT, ids=lambda v: v.count)
def test_envelope_seals_nist_gcm_encrypt_vectors(vector: GcmVector) -> None:
    key = DataKey("kat", Secret(vector.key))
    assert vector.pt is not None
    blob = key._seal_with_nonce(vector.iv, vector.pt, vector.aad)  # the private KAT seam
    assert blob == vector.iv + vector.ct + vector.tag
    assert key.open(blob, vector.aad) == vector.pt


@pytest.mark.parametrize("vector", DECRYPT, ids=lambda v: v.count)
def test_envelope_opens_nist_gcm_decrypt_vectors(vector: GcmVector) -> None:
    key = DataKey("kat", Secret(vector.key))
    blob = vector.iv + vector.ct + vector.tag
    if vector.pt is None:
        with pytest.raises(CryptoError, match="failed authentication"):
            key.open(blob, vector.aad)
    else:
        assert key.open(blob, vector.aad) == vector.pt


def test_a_changed_aad_does_not_open() -> None:
    vector = next(v for v in ENCRYPT if v.aad and v.pt)
    key = DataKey("kat", Secret(vector.key))
    with pytest.raises(CryptoError):
        key.open(vector.iv + vector.ct + vector.tag, vector.aad[:-1] + bytes([vector.aad[-1] ^ 1]))


def test_the_nonce_seam_refuses_other_lengths() -> None:
    key = DataKey("kat", Secret(ENCRYPT[0].key))
    with pytest.raises(CryptoError):
        key._seal_with_nonce(bytes(8), b"", b"")  # the private KAT seam


# --- Ed25519 (RFC 8032) -----------------------------------------------------------------------


@dataclass(frozen=True)
class Ed25519Vector:
    line: int
    seed: bytes
    public: bytes
    message: bytes
    signature: bytes


def ed25519_vectors() -> list[Ed25519Vector]:
    """``sign.input``: ``sk||pk : pk : message : signature||message :`` per line."""
    vectors = []
    for number, line in enumerate(_vector_text("asymmetric/Ed25519/sign.input").splitlines(), 1):
        secret, public, message, signed, _ = line.split(":")
        vectors.append(
            Ed25519Vector(
                number,
                bytes.fromhex(secret)[:32],
                bytes.fromhex(public),
                bytes.fromhex(message),
                bytes.fromhex(signed)[:64],
            )
        )
    return vectors


ED25519 = ed25519_vectors()
#: RFC 8032 §7.1 TEST 1, 2 and 3 (secret key, public key, message, signature).
RFC8032 = {
    "TEST 1": (
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        (
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555"
            "fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
        ),
    ),
    "TEST 2": (
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        (
            "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
            "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"
        ),
    ),
    "TEST 3": (
        "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
        "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
        "af82",
        (
            "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac"
            "18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a"
        ),
    ),
}


def test_the_vector_file_starts_with_rfc_8032_tests_1_to_3() -> None:
    assert len(ED25519) == 1024
    for vector, (seed, public, message, signature) in zip(ED25519, RFC8032.values(), strict=False):
        assert (vector.seed.hex(), vector.public.hex()) == (seed, public)
        assert (vector.message.hex(), vector.signature.hex()) == (message, signature)


@pytest.mark.parametrize("vector", ED25519[:24], ids=lambda v: f"line{v.line}")
def test_the_reference_implementation_meets_the_vectors(vector: Ed25519Vector) -> None:
    assert ed25519_reference.public_key(vector.seed) == vector.public
    assert ed25519_reference.sign(vector.seed, vector.message) == vector.signature


def test_checkpoint_signer_derives_every_vector_public_key_and_verifies_its_signature() -> None:
    for vector in ED25519:
        signer = CheckpointSigner(ORIGIN, Secret(vector.seed))
        verifier = signer.verifier
        assert verifier.public_key == vector.public, vector.line
        # The published verifier key string round-trips to the same key.
        assert parse_verifier_key(verifier.encode()) == verifier, vector.line
        assert verifier.verify(vector.message, vector.signature), vector.line
        flipped = bytearray(vector.signature)
        flipped[vector.line % 64] ^= 1 << (vector.line % 8)
        assert not verifier.verify(vector.message, bytes(flipped)), vector.line


@pytest.mark.parametrize("name", list(RFC8032))
@pytest.mark.parametrize("size", [1, 2, 1_000_000])
def test_checkpoint_note_signature_with_rfc_8032_keys(name: str, size: int) -> None:
    seed = bytes.fromhex(RFC8032[name][0])
    signer = CheckpointSigner(ORIGIN, Secret(seed))
    root = bytes(range(size % 7, size % 7 + 32))
    note = signer.sign_checkpoint(Checkpoint(ORIGIN, size, root))
    text, signatures = split_note(note)
    assert len(signatures) == 1
    blob = signatures[0].blob
    # C2SP signed-note: key hash (4 bytes) then the Ed25519 signature of the note text.
    assert blob[:4] == signer.verifier.key_hash
    assert blob[4:] == ed25519_reference.sign(seed, text.encode("utf-8"))
    assert base64.b64encode(blob).decode("ascii") in note
