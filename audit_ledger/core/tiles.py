"""C2SP tlog-tiles: tile coordinates, their paths, and entry bundles (pure, no I/O).

A tiled log (c2sp.org/tlog-tiles) serves its Merkle tree as *tiles*: the tile ``N`` at level
``L`` holds the hashes of the complete subtrees at tree level ``8·L`` with indices
``N·256 … N·256+W-1`` (``W`` = 256 for a full tile, 1…255 for a partial one). Level 0 holds the
leaf hashes. Every such hash is a complete subtree, so the ledger has it stored already
(``tree_nodes``, DESIGN §3): a tile is one range read, never a rehash of leaves.

Entry bundles (``tile/entries/N``) carry the leaves of the level-0 tile ``N``, each as a
big-endian uint16 length prefix and the leaf bytes.

As in Go's ``golang.org/x/mod/sumdb/tlog``, entry bundles are tiles with level
:data:`ENTRIES_LEVEL` (-1); their hashes live at level 0.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from audit_ledger.core.merkle import HASH_SIZE, node_hash
from audit_ledger.errors import FormatError, ProofError

#: tlog-tiles fixes the tile height at 8: 256 hashes per full tile.
TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT
#: Level of entry bundles (Go's ``tlog`` uses -1 for its data tiles too).
ENTRIES_LEVEL = -1
#: tlog-tiles: ``<L>`` is 0…63.
MAX_LEVEL = 63
#: Entry bundles prefix each entry with a uint16 length.
MAX_ENTRY_BYTES = 0xFFFF

# Strict grammar (tlog-tiles "Merkle Tree"): decimal without leading zeros for L and W, three
# digits per index group, all but the last group prefixed with "x".
_LEVEL = r"(?P<level>0|[1-9][0-9]?|entries)"
_INDEX = r"(?P<index>(?:x[0-9]{3}/)*[0-9]{3})"
_WIDTH = r"(?:\.p/(?P<width>[1-9][0-9]{0,2}))?"
_PATH = re.compile(rf"tile/{_LEVEL}/{_INDEX}{_WIDTH}")


@dataclass(frozen=True, slots=True, order=True)
class Tile:
    """One tile: ``level`` (:data:`ENTRIES_LEVEL` for an entry bundle), index, width."""

    level: int
    index: int
    width: int = TILE_WIDTH

    def __post_init__(self) -> None:
        if not ENTRIES_LEVEL <= self.level <= MAX_LEVEL:
            raise FormatError("tile level must be 0…63 (or the entries level)")
        if self.index < 0 or not 1 <= self.width <= TILE_WIDTH:
            raise FormatError("tile index must be >= 0 and its width 1…256")

    @property
    def full(self) -> bool:
        return self.width == TILE_WIDTH

    @property
    def entries(self) -> bool:
        return self.level == ENTRIES_LEVEL

    @property
    def hash_level(self) -> int:
        """Tree level of this tile's hashes (entry bundles: the leaves, level 0)."""
        return TILE_HEIGHT * max(self.level, 0)

    @property
    def start(self) -> int:
        """Index (at :attr:`hash_level`) of the first hash in this tile."""
        return self.index * TILE_WIDTH

    @property
    def min_tree_size(self) -> int:
        """The smallest tree size that holds this tile (its last hash complete)."""
        return (self.start + self.width) << self.hash_level

    def path(self) -> str:
        """The tile's path relative to the log prefix, e.g. ``tile/0/x001/234.p/5``."""
        level = "entries" if self.entries else str(self.level)
        suffix = "" if self.full else f".p/{self.width}"
        return f"tile/{level}/{format_index(self.index)}{suffix}"


def format_index(n: int) -> str:
    """tlog-tiles index encoding: 1234067 → ``x001/x234/067``."""
    if n < 0:
        raise FormatError("tile index must not be negative")
    groups = [f"{n % 1000:03d}"]
    n //= 1000
    while n:
        groups.append(f"x{n % 1000:03d}")
        n //= 1000
    return "/".join(reversed(groups))


def parse_tile_path(path: str) -> Tile:
    """The tile named by ``path`` (``tile/…``), refusing every non-canonical spelling.

    Non-canonical: leading zeros in L or W, a leading ``x000`` group (the same index has a
    shorter path), ``.p/256`` (that is the full tile), levels above 63. A static server would
    not find such a file either, so the API answers them as unknown paths.
    """
    m = _PATH.fullmatch(path)
    if m is None:
        raise FormatError("not a tile path: tile/<L>/<N>[.p/<W>] with N in 3-digit groups")
    groups = m["index"].split("/")
    if len(groups) > 1 and groups[0] == "x000":
        raise FormatError("tile index has a leading zero group")
    index = int("".join(g.lstrip("x") for g in groups))
    width = TILE_WIDTH
    if m["width"]:
        width = int(m["width"])
        if width >= TILE_WIDTH:
            raise FormatError("partial tile width must be 1…255")
    level = ENTRIES_LEVEL if m["level"] == "entries" else int(m["level"])
    if level > MAX_LEVEL:
        raise FormatError("tile level must be 0…63")
    return Tile(level, index, width)


def tile_for(level: int, index: int, tree_size: int) -> Tile:
    """The tile ``index`` at ``level`` as it is in the tree of ``tree_size`` (full, or partial
    with the width that size gives); :class:`ProofError` if the tree holds none of it."""
    hashes = tree_size >> (TILE_HEIGHT * max(level, 0))
    width = min(TILE_WIDTH, hashes - index * TILE_WIDTH)
    if width < 1:
        raise ProofError("the tree of this size holds no such tile")
    return Tile(level, index, width)


def tiles_for_size(tree_size: int, *, entries: bool = True) -> list[Tile]:
    """Every tile (full and partial) of the tree of ``tree_size``, level by level."""
    return new_tiles(0, tree_size, entries=entries)


def new_tiles(old_size: int, new_size: int, *, entries: bool = True) -> list[Tile]:
    """The tiles a log growing from ``old_size`` to ``new_size`` adds: the full tiles that were
    not full at ``old_size`` and the partial tiles of ``new_size`` (as Go's ``tlog.NewTiles``).
    tlog-tiles "Partial Tiles": the partial tile at level L has floor(s / 256^L) mod 256 hashes.
    """
    if not 0 <= old_size <= new_size:
        raise ProofError("need 0 <= old size <= new size")
    out: list[Tile] = []
    level = 0
    while level <= MAX_LEVEL and new_size >> (TILE_HEIGHT * level):
        old_n = old_size >> (TILE_HEIGHT * level)
        new_n = new_size >> (TILE_HEIGHT * level)
        levels = (ENTRIES_LEVEL, 0) if level == 0 and entries else (level,)
        for lv in levels:
            out.extend(Tile(lv, i) for i in range(old_n // TILE_WIDTH, new_n // TILE_WIDTH))
            if new_n % TILE_WIDTH:
                out.append(Tile(lv, new_n // TILE_WIDTH, new_n % TILE_WIDTH))
        level += 1
    return out


# --- entry bundles ----------------------------------------------------------------------------


def encode_entry_bundle(leaves: Sequence[bytes]) -> bytes:
    """tlog-tiles "Log entries": each leaf with a big-endian uint16 length prefix."""
    out = bytearray()
    for leaf in leaves:
        if len(leaf) > MAX_ENTRY_BYTES:
            raise FormatError("a leaf longer than 65535 bytes cannot go into an entry bundle")
        out += len(leaf).to_bytes(2, "big")
        out += leaf
    return bytes(out)


def decode_entry_bundle(data: bytes) -> list[bytes]:
    """The leaves of an entry bundle; :class:`FormatError` if it is truncated."""
    leaves: list[bytes] = []
    pos = 0
    while pos < len(data):
        if pos + 2 > len(data):
            raise FormatError("entry bundle ends inside a length prefix")
        n = int.from_bytes(data[pos : pos + 2], "big")
        if pos + 2 + n > len(data):
            raise FormatError("entry bundle ends inside an entry")
        leaves.append(data[pos + 2 : pos + 2 + n])
        pos += 2 + n
    return leaves


def split_hash_tile(data: bytes) -> list[bytes]:
    """The hashes of a hash tile; :class:`FormatError` unless it is 1…256 whole hashes."""
    if not data or len(data) % HASH_SIZE or len(data) > TILE_WIDTH * HASH_SIZE:
        raise FormatError("a hash tile is 1…256 concatenated 32-byte hashes")
    return [data[i : i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE)]


# --- reading the tree back from tiles (what a tiles client does) -----------------------------


def _fold_complete(hashes: Sequence[bytes]) -> bytes:
    """Root of a complete subtree from its 2^k hashes one level down (k >= 0)."""
    level = list(hashes)
    while len(level) > 1:
        level = [node_hash(level[i], level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


def tile_hash_reader(
    tree_size: int, fetch: Callable[[Tile], bytes]
) -> Callable[[Sequence[tuple[int, int]]], list[bytes]]:
    """A :data:`~audit_ledger.core.merkle.HashReader` over the tiles of ``tree_size`` (as Go's
    ``tlog.TileHashReader``): stored hash ``(level, idx)`` with ``level = 8·L + k`` is the
    root of ``2^k`` consecutive hashes of the level-L tile that holds them. ``fetch`` returns a
    tile's bytes; each tile is fetched once per reader."""
    cache: dict[Tile, list[bytes]] = {}

    def read(indexes: Sequence[tuple[int, int]]) -> list[bytes]:
        out: list[bytes] = []
        for level, idx in indexes:
            if (idx + 1) << level > tree_size:
                raise ProofError("hash is not in the tree of this size")
            tile_level, k = divmod(level, TILE_HEIGHT)
            first = idx << k  # index of its first hash at level 8·L
            tile = tile_for(tile_level, first // TILE_WIDTH, tree_size)
            if tile not in cache:
                hashes = split_hash_tile(fetch(tile))
                if len(hashes) != tile.width:
                    raise ProofError("tile has the wrong width")
                cache[tile] = hashes
            start = first - tile.start
            out.append(_fold_complete(cache[tile][start : start + (1 << k)]))
        return out

    return read
