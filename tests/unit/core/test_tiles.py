"""C2SP tlog-tiles coordinates, paths and bundles (audit_ledger.core.tiles).

Paths follow the spec's examples (``x001/x234/067``, the 70,000-entry tree). The property tests
compare what the tiles say with a naive reference written here from the spec's formula
``MTH(D[(n·256 + i)·256^l : (n·256 + i + 1)·256^l])``, computed by rehashing leaves.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audit_ledger.core import merkle
from audit_ledger.core.merkle import CompactRange, leaf_hash, reference_root
from audit_ledger.core.tiles import (
    ENTRIES_LEVEL,
    Tile,
    decode_entry_bundle,
    encode_entry_bundle,
    format_index,
    new_tiles,
    parse_tile_path,
    split_hash_tile,
    tile_for,
    tile_hash_reader,
    tiles_for_size,
)
from audit_ledger.errors import FormatError, ProofError

MAX_SIZE = 70_000  # the spec's example: level-0, level-1 and level-2 tiles
LEAVES = [b"leaf %d" % i for i in range(MAX_SIZE)]
LEAF_HASHES = [leaf_hash(leaf) for leaf in LEAVES]


@functools.cache
def _stored() -> dict[tuple[int, int], bytes]:
    """What the ledger stores: every complete subtree hash (built by the append path)."""
    cr = CompactRange()
    return {(lv, idx): h for lv, idx, h in cr.extend(LEAF_HASHES)}


@functools.cache
def naive_hash(level: int, i: int) -> bytes:
    """The spec's MTH(D[i·256^l : (i+1)·256^l]) by rehashing leaves."""
    span = 256**level
    return reference_root(LEAF_HASHES[i * span : (i + 1) * span])


def naive_tile(tile: Tile) -> bytes:
    if tile.entries:
        return encode_entry_bundle(LEAVES[tile.start : tile.start + tile.width])
    return b"".join(naive_hash(tile.level, tile.start + j) for j in range(tile.width))


def stored_tile(tile: Tile) -> bytes:
    """A tile as the ledger serves it: a range of stored hashes, no rehashing."""
    if tile.entries:
        return encode_entry_bundle(LEAVES[tile.start : tile.start + tile.width])
    stored = _stored()
    return b"".join(stored[(tile.hash_level, tile.start + j)] for j in range(tile.width))


# --- paths --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "text"),
    [(0, "000"), (7, "007"), (999, "999"), (1000, "x001/000"), (1234067, "x001/x234/067")],
)
def test_format_index(n: int, text: str) -> None:
    assert format_index(n) == text


@pytest.mark.parametrize(
    ("path", "tile"),
    [
        ("tile/0/000", Tile(0, 0)),
        ("tile/0/x001/x234/067", Tile(0, 1234067)),
        ("tile/1/001.p/17", Tile(1, 1, 17)),
        ("tile/63/000.p/1", Tile(63, 0, 1)),
        ("tile/entries/x001/234.p/255", Tile(ENTRIES_LEVEL, 1234, 255)),
        ("tile/entries/000", Tile(ENTRIES_LEVEL, 0)),
    ],
)
def test_parse_and_format_round_trip(path: str, tile: Tile) -> None:
    assert parse_tile_path(path) == tile
    assert tile.path() == path


@pytest.mark.parametrize(
    "path",
    [
        "tile/00/000",  # leading zero in L
        "tile/64/000",  # L above 63
        "tile/-1/000",
        "tile/0/0",  # not three digits
        "tile/0/0000",
        "tile/0/x000/001",  # leading zero group: non-canonical spelling of 1
        "tile/0/001/002",  # inner group without x
        "tile/0/x001",  # last group with x
        "tile/0/000.p/0",
        "tile/0/000.p/256",  # that is the full tile
        "tile/0/000.p/07",
        "tile/0/000.p/",
        "tile/0/000.p/1000",
        "tile/0/000/",
        "/tile/0/000",
        "tile/data/000",
        "tile/entries",
        "tile/0/१२३",  # non-ASCII digits
        "tile/0/000\n",
        "",
    ],
)
def test_parse_refuses_non_canonical_paths(path: str) -> None:
    with pytest.raises(FormatError):
        parse_tile_path(path)


@given(st.integers(0, 10**12), st.integers(-1, 63), st.integers(1, 256))
def test_any_tile_path_round_trips(index: int, level: int, width: int) -> None:
    tile = Tile(level, index, width)
    assert parse_tile_path(tile.path()) == tile


# --- which tiles a tree has -----------------------------------------------------------------


def test_spec_example_70000() -> None:
    # tlog-tiles "Partial Tiles": 273 full level-0 tiles, a partial of width 112, one full
    # level-1 tile, a partial level-1 tile of width 17, a partial level-2 tile of width 1.
    tiles = tiles_for_size(70_000, entries=False)
    level0 = [t for t in tiles if t.level == 0]
    assert [t for t in level0 if t.full] == [Tile(0, i) for i in range(273)]
    assert [t for t in level0 if not t.full] == [Tile(0, 273, 112)]
    assert [t for t in tiles if t.level == 1] == [Tile(1, 0), Tile(1, 1, 17)]
    assert [t for t in tiles if t.level == 2] == [Tile(2, 0, 1)]
    assert len(tiles) == 277


def test_spec_example_256() -> None:
    assert tiles_for_size(256, entries=False) == [Tile(0, 0), Tile(1, 0, 1)]
    assert tiles_for_size(256) == [Tile(-1, 0), Tile(0, 0), Tile(1, 0, 1)]
    assert tiles_for_size(0) == []


@settings(max_examples=200, deadline=None)
@given(st.integers(0, MAX_SIZE), st.integers(0, MAX_SIZE))
def test_new_tiles_are_the_difference(a: int, b: int) -> None:
    old, new = min(a, b), max(a, b)
    added = new_tiles(old, new)
    # Every tile of the new tree but those already full in the old one.
    assert added == [t for t in tiles_for_size(new) if not (t.full and t in tiles_for_size(old))]
    assert all(t.min_tree_size <= new for t in added)
    assert all(t.min_tree_size > old or not t.full for t in added)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, MAX_SIZE))
def test_tiles_match_the_naive_reference(size: int) -> None:
    tiles = tiles_for_size(size)
    for tile in tiles:
        assert tile.min_tree_size <= size
        assert stored_tile(tile) == naive_tile(tile), tile
        assert tile_for(max(tile.level, 0), tile.index, size).width == tile.width
    # tlog-tiles: the partial tile at level l has floor(s / 256^l) mod 256 hashes.
    for level in range(3):
        width = (size // 256**level) % 256
        partial = [t for t in tiles if t.level == level and not t.full]
        assert partial == ([Tile(level, size // 256 ** (level + 1), width)] if width else [])


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_tile_reader_gives_the_rfc_root_and_proofs(data: st.DataObject) -> None:
    size = data.draw(st.integers(1, MAX_SIZE))
    m = data.draw(st.integers(0, size - 1))
    first = data.draw(st.integers(1, size))
    tiles = {t: stored_tile(t) for t in tiles_for_size(size, entries=False)}
    fetched: list[Tile] = []

    def fetch(tile: Tile) -> bytes:
        fetched.append(tile)
        return tiles[tile]

    read = tile_hash_reader(size, fetch)
    stored = _stored()

    def read_stored(idx: Sequence[tuple[int, int]]) -> list[bytes]:
        return [stored[i] for i in idx]

    assert merkle.tree_root(size, read) == reference_root(LEAF_HASHES[:size])
    assert merkle.inclusion_proof(m, size, read) == merkle.inclusion_proof(m, size, read_stored)
    assert merkle.consistency_proof(first, size, read) == merkle.consistency_proof(
        first, size, read_stored
    )
    assert len(fetched) == len(set(fetched))  # each tile fetched once


def test_tile_reader_refuses_hashes_beyond_the_tree() -> None:
    read = tile_hash_reader(300, stored_tile)
    with pytest.raises(ProofError):
        read([(0, 300)])
    with pytest.raises(ProofError):
        read([(8, 1)])
    bad = tile_hash_reader(300, lambda t: stored_tile(t)[:-32])  # one hash short
    with pytest.raises(ProofError):
        bad([(0, 299)])


def test_tile_for_outside_the_tree() -> None:
    assert tile_for(0, 1, 300) == Tile(0, 1, 44)
    assert tile_for(0, 0, 300) == Tile(0, 0)
    with pytest.raises(ProofError):
        tile_for(0, 2, 300)
    with pytest.raises(ProofError):
        tile_for(1, 0, 255)


# --- bundles --------------------------------------------------------------------------------


@given(st.lists(st.binary(max_size=300), max_size=20))
def test_entry_bundle_round_trip(leaves: list[bytes]) -> None:
    data = encode_entry_bundle(leaves)
    assert len(data) == sum(2 + len(leaf) for leaf in leaves)
    assert decode_entry_bundle(data) == leaves


def test_entry_bundle_prefix_is_big_endian_uint16() -> None:
    assert encode_entry_bundle([b"ab", b"x" * 258]) == b"\x00\x02ab\x01\x02" + b"x" * 258
    assert encode_entry_bundle([b"y" * 65535])[:2] == b"\xff\xff"
    with pytest.raises(FormatError):
        encode_entry_bundle([b"z" * 65536])


@pytest.mark.parametrize("data", [b"\x00", b"\x00\x03ab", b"\x00\x01a\x00"])
def test_truncated_bundles_are_refused(data: bytes) -> None:
    with pytest.raises(FormatError):
        decode_entry_bundle(data)


@pytest.mark.parametrize("data", [b"", b"x" * 31, b"x" * 33, b"x" * (257 * 32)])
def test_hash_tiles_must_be_whole_hashes(data: bytes) -> None:
    with pytest.raises(FormatError):
        split_hash_tile(data)


def test_tile_rejects_bad_coordinates() -> None:
    for args in [(-2, 0, 1), (64, 0, 1), (0, -1, 1), (0, 0, 0), (0, 0, 257)]:
        with pytest.raises(FormatError):
            Tile(*args)
