"""The tlog-witness v1 wire format (audit_ledger.core.tlog_witness): the spec's example request
parses, requests round-trip, and every framing error is a CheckpointError."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from audit_ledger.core.tlog_witness import (
    format_add_checkpoint,
    format_size,
    parse_add_checkpoint,
    parse_cosignature_lines,
    parse_size,
)
from audit_ledger.errors import CheckpointError

# The example request body of tlog-witness.md, "add-checkpoint".
SPEC_REQUEST = """old 20852014
PlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw=
jrJZDmY8Y7SyJE0MWLpLozkIVMSMZcD5kvuKxPC3swk=
5+pKlUdi2LeF/BcMHBn+Ku6yhPGNCswZZD1X/6QgPd8=
/6WVhPs2CwSsb5rYBH5cjHV/wSmA79abXAwhXw3Kj/0=

example.com/behind-the-sofa
20852163
CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=

\u2014 example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=
\u2014 example.com/behind-the-sofa opLqBQsREYCgu6xQkYQwJr9fo45a62DN9EdmHXnZdXNqlcVGlCum2Wks+49/V6267UEjw6QUXTS5Rovnzv++qbSzm9Q=
"""  # noqa: E501 - the spec's lines verbatim


def test_spec_example_request() -> None:
    request = parse_add_checkpoint(SPEC_REQUEST.encode())
    assert request.old_size == 20852014
    assert len(request.proof) == 4
    assert request.proof[0] == base64.b64decode("PlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw=")
    assert request.note.startswith("example.com/behind-the-sofa\n20852163\n")
    assert format_add_checkpoint(request.old_size, request.proof, request.note) == (
        SPEC_REQUEST.encode()
    )


@given(st.integers(0, 2**63), st.lists(st.binary(min_size=32, max_size=32), max_size=63))
def test_round_trip(old: int, proof: list[bytes]) -> None:
    note = SPEC_REQUEST.split("\n\n", 1)[1]
    parsed = parse_add_checkpoint(format_add_checkpoint(old, proof, note))
    assert (parsed.old_size, list(parsed.proof), parsed.note) == (old, proof, note)


def test_sizes_and_lines() -> None:
    assert format_size(20) == "20\n"
    assert parse_size(b"20\n") == 20
    for bad in (b"20", b"020\n", b"-1\n", b"x\n", b"\xff\n"):
        with pytest.raises(CheckpointError):
            parse_size(bad)
    lines = SPEC_REQUEST.rsplit("\n\n", 1)[1].encode()
    assert [s.name for s in parse_cosignature_lines(lines)] == ["example.com/behind-the-sofa"] * 2
    for bad in (b"", b"not a signature line\n", b"\xff"):
        with pytest.raises(CheckpointError):
            parse_cosignature_lines(bad)
    with pytest.raises(CheckpointError):
        format_add_checkpoint(0, [bytes(32)] * 64, "x\n\n")
