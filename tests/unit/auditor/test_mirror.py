"""The auditor's mirror directory: crash-safe commits, damage detection, one run at a time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from audit_ledger.auditor.mirror import (
    LEAVES_FILE,
    STATE_FILE,
    Mirror,
    MirrorError,
    MirrorState,
    leaf_line,
    open_mirror,
    parse_leaf_line,
)
from audit_ledger.core.merkle import CompactRange, leaf_hash


def _state(leaves: list[bytes], leaves_bytes: int) -> MirrorState:
    tree = CompactRange()
    tree.extend(leaf_hash(leaf) for leaf in leaves)
    return MirrorState(
        verifier_key="origin+01020304+AQ==",
        checkpoint="origin\n2\nAAAA\n\n— origin sig\n",
        size=len(leaves),
        leaves_bytes=leaves_bytes,
        tree=tree,
        last_leaf=leaf_hash(leaves[-1]) if leaves else None,
        last_recorded_at="2026-11-28T03:55:17.123456Z" if leaves else None,
    )


def _commit(mirror: Mirror, leaves: list[bytes]) -> MirrorState:
    with mirror.appending() as out:
        for seq, leaf in enumerate(leaves):
            out.write(leaf_line(seq, leaf))
    state = _state(leaves, mirror.leaves_path.stat().st_size)
    mirror.commit(state)
    return state


def test_state_round_trips_and_leaves_read_back(tmp_path: Path) -> None:
    leaves = [b'{"a":1}', b"\x00\xff binary \n is fine"]
    with open_mirror(tmp_path / "m", create=True) as mirror:
        assert mirror.load() is None
        state = _commit(mirror, leaves)
        assert mirror.load() == state
        assert list(mirror.read_leaves(state.leaves_bytes)) == list(enumerate(leaves))
    assert json.loads((tmp_path / "m" / STATE_FILE).read_text())["size"] == 2
    assert not list((tmp_path / "m").glob("*.tmp"))


def test_an_unfinished_run_is_cut_off(tmp_path: Path) -> None:
    with open_mirror(tmp_path, create=True) as mirror:
        state = _commit(mirror, [b"one", b"two"])
        with mirror.appending() as out:  # a run that died before committing its state
            out.write(leaf_line(2, b"three"))
            out.write(b'{"leaf":"cut sh')
        assert mirror.load() == state
        assert mirror.leaves_path.stat().st_size == state.leaves_bytes


def test_a_truncated_mirror_is_refused(tmp_path: Path) -> None:
    with open_mirror(tmp_path, create=True) as mirror:
        state = _commit(mirror, [b"one", b"two"])
        data = mirror.leaves_path.read_bytes()
        mirror.leaves_path.write_bytes(data[:-3])
        with pytest.raises(MirrorError, match="truncated"):
            mirror.load()
        with pytest.raises(MirrorError, match="cut short"):
            list(mirror.read_leaves(state.leaves_bytes))


_GOOD = {
    "format": 1,
    "size": 1,
    "leaves_bytes": 0,
    "verifier_key": "k",
    "checkpoint": "c",
    "last_leaf_hash": "00" * 32,
    "last_recorded_at": "2026-11-28T03:55:17.123456Z",
    "right_edge": ["00" * 32],
}


@pytest.mark.parametrize(
    "state",
    [
        "not json",
        "[]",
        json.dumps({**_GOOD, "format": 2}),
        json.dumps({"format": 1}),
        json.dumps({**_GOOD, "size": "1"}),
        json.dumps({**_GOOD, "size": 3}),  # a right edge of the wrong length
        json.dumps({**_GOOD, "right_edge": ["00"]}),
        json.dumps({**_GOOD, "last_leaf_hash": "zz"}),
        json.dumps({**_GOOD, "leaves_bytes": -1}),
        json.dumps({**_GOOD, "checkpoint": None}),
    ],
)
def test_a_malformed_state_is_refused(tmp_path: Path, state: str) -> None:
    (tmp_path / STATE_FILE).write_text(json.dumps(_GOOD))
    with open_mirror(tmp_path, create=False) as mirror:
        assert mirror.load() is not None  # the baseline is valid: each case breaks one thing
    (tmp_path / STATE_FILE).write_text(state)
    with open_mirror(tmp_path, create=False) as mirror, pytest.raises(MirrorError):
        mirror.load()


@pytest.mark.parametrize(
    "line",
    [b"{}\n", b'{"seq": 1}\n', b'{"seq": "1", "leaf": ""}\n', b'{"seq": 1, "leaf": "!"}\n', b"x"],
)
def test_a_malformed_leaf_line_is_refused(line: bytes) -> None:
    with pytest.raises(MirrorError, match="line 7"):
        parse_leaf_line(line, 7)


def test_one_run_at_a_time(tmp_path: Path) -> None:
    with (
        open_mirror(tmp_path, create=True),
        pytest.raises(MirrorError, match="in use"),
        open_mirror(tmp_path, create=False),
    ):
        pass
    with open_mirror(tmp_path, create=False):
        pass  # released


def test_a_missing_mirror_is_not_created_offline(tmp_path: Path) -> None:
    with pytest.raises(MirrorError, match="no mirror"), open_mirror(tmp_path / "x", create=False):
        pass
    assert not (tmp_path / "x").exists()


def test_evidence_is_kept_verbatim(tmp_path: Path) -> None:
    with open_mirror(tmp_path, create=True) as mirror:
        first = mirror.save_evidence("fork", {"a": "signed\nnote\n", "b": b"\x00raw"})
        second = mirror.save_evidence("fork", {"a": "other"})
    assert first != second
    assert (first / "a").read_text() == "signed\nnote\n"
    assert (first / "b").read_bytes() == b"\x00raw"
    assert first.parent == tmp_path / "evidence"


def test_leaves_file_name_is_the_documented_one(tmp_path: Path) -> None:
    with open_mirror(tmp_path, create=True) as mirror:
        _commit(mirror, [b"x"])
    assert (tmp_path / LEAVES_FILE).read_bytes() == b'{"leaf":"eA==","seq":0}\n'
