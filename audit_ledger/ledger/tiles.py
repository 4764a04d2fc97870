"""The log as C2SP tlog-tiles (c2sp.org/tlog-tiles, DESIGN §7): tiles, entry bundles and their
static publication.

Tiles exist up to the latest *checkpointed* size: a full tile once a checkpoint covers its last
hash, a partial tile of width W once a checkpoint covers its W hashes (tlog-tiles "Partial
Tiles": logs MUST serve the partial tiles of every checkpointed size; a partial tile is the same
bytes for every size that has it, so serving any one a checkpoint covers reveals nothing
unsigned). Each tile is one range read of stored hashes (:mod:`audit_ledger.storage.tiles`).

Which reads are recorded (``records_read``, as ``GET /v1/log/leaves``): an entry bundle served
to an authenticated principal carries the same headers as a page of leaves, so it is recorded
the same way. Hash tiles carry only hashes, like proofs, and are not. When the operator turns on
``tiles_public`` (or publishes tiles to a directory) the headers are public by configuration:
anonymous fetches are not recorded (recording them would let anyone grow the ledger).

With a read replica (issue #16) a tile's bytes are read through the log's
:class:`~audit_ledger.ledger.replica.ReadSource`: on the replica once it has replayed the
tile's smallest covering tree size, else on the primary; which checkpoint covers a tile is
decided on the primary (the served checkpoint, :meth:`Log.published_checkpoint`).
"""

from __future__ import annotations

import fcntl
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from audit_ledger.core import merkle
from audit_ledger.core.checkpoint import parse_checkpoint_body, split_note
from audit_ledger.core.tiles import Tile, encode_entry_bundle, new_tiles, parse_tile_path
from audit_ledger.durable import write_atomically
from audit_ledger.errors import (
    CheckpointError,
    FormatError,
    NotFoundError,
    RefusedError,
    StorageError,
)
from audit_ledger.ledger.identity import Principal
from audit_ledger.ledger.log import Log
from audit_ledger.ledger.reads import Reads
from audit_ledger.storage.checkpoints import StoredCheckpoint
from audit_ledger.storage.store import Store

log = logging.getLogger("audit_ledger.application.tiles")

#: Name of the checkpoint file in a published directory (tlog-tiles ``<prefix>/checkpoint``).
CHECKPOINT_FILE = "checkpoint"
#: Held (flock) while publishing, so that two publishers (the scheduler and an operator) never
#: interleave: an older one finishing last would put back an older checkpoint.
LOCK_FILE = ".publish.lock"
#: Files written concurrently by one publication.
PUBLISH_THREADS = 4


@dataclass(frozen=True, slots=True)
class TileData:
    """A tile's bytes and what they are (full tiles are immutable: cacheable forever)."""

    tile: Tile
    data: bytes


@dataclass(frozen=True, slots=True)
class PublishReport:
    """What ``tiles publish`` did: the sizes published before and now, tiles written and
    tiles found already there (the checkpoint file is not counted)."""

    previous_size: int
    tree_size: int
    written: int
    kept: int


class Tiles:
    """Serving tiles and entry bundles, and publishing them to a directory."""

    def __init__(self, store: Store, log_: Log, reads: Reads) -> None:
        self.store = store
        self.log = log_
        self.reads = reads

    def _latest(self) -> StoredCheckpoint:
        latest = self.log.published_checkpoint()
        if latest is None:
            raise NotFoundError("no checkpoint yet (the log is empty or none was made)")
        return latest

    def read(self, tile: Tile, store: Store | None = None) -> bytes:
        """The tile's bytes from ``store`` (the primary by default): one range read, nothing
        rehashed."""
        store = self.store if store is None else store
        if tile.entries:
            rows = store.leaves(tile.start, tile.start + tile.width)
            if len(rows) != tile.width:
                raise StorageError("a leaf of a checkpointed tile is missing")
            return encode_entry_bundle([leaf for _, leaf in rows])
        return b"".join(store.hash_range(tile.hash_level, tile.start, tile.width))

    def routed_read(self, tile: Tile) -> bytes:
        """:meth:`read` on a replica that has replayed the tile's tree size, else the primary."""
        return self.log.source.run(tile.min_tree_size, lambda store: self.read(tile, store))

    def get(self, path: str, principal: Principal | None, endpoint: str) -> TileData:
        """The tile at ``path`` (``tile/…``) if a checkpoint covers it.

        An entry bundle served to ``principal`` is recorded as a read before it is returned;
        ``principal`` is None when tiles are public (see the module docstring).
        """
        try:
            tile = parse_tile_path(path)
        except FormatError as exc:
            raise NotFoundError(f"no such tile: {exc}") from None
        if tile.min_tree_size > self._latest().tree_size:
            raise NotFoundError("no checkpoint covers this tile yet")
        data = self.routed_read(tile)
        if tile.entries and principal is not None:
            self.reads.record(principal, endpoint, range(tile.start, tile.start + tile.width))
        return TileData(tile, data)

    # --- static publication ----------------------------------------------------------------

    def _published_size(self, directory: Path) -> int:
        """Tree size of the checkpoint already in ``directory`` (0 if none), refusing a
        directory that holds another log or a tree this database does not have."""
        path = directory / CHECKPOINT_FILE
        if not path.exists():
            return 0
        try:
            text, _ = split_note(path.read_text(encoding="utf-8"))
            published = parse_checkpoint_body(text)
        except (CheckpointError, UnicodeDecodeError, OSError):
            raise RefusedError(f"{path} is not a checkpoint; refusing to publish over it") from None
        if published.origin != self.log.signer.name:
            raise RefusedError(f"{path} is another log's checkpoint; refusing to publish over it")
        if published.size > self.log.size() or (
            merkle.tree_root(published.size, self.store.read_hashes) != published.root_hash
        ):
            raise RefusedError(
                f"{path} names a tree this ledger does not have; refusing to publish over it"
            )
        return published.size

    def _sizes_since(self, old: int, latest: int) -> list[int]:
        """Checkpointed sizes in (old, latest]; only ``latest`` for a first publication."""
        if old == 0:
            return [latest]
        sizes: list[int] = []
        after = old
        while True:
            page = self.store.checkpoints(after_size=after, limit=1000)
            sizes.extend(c.tree_size for c in page if c.tree_size <= latest)
            if len(page) < 1000 or page[-1].tree_size >= latest:
                return sizes
            after = page[-1].tree_size

    def publish(self, directory: Path) -> PublishReport:
        """Write the latest checkpoint and its tiles into ``directory`` (tlog-tiles paths).

        Incremental: tiles already there are never rewritten (a tile's bytes never change);
        missing ones are written, including the partial tiles of every checkpointed size since
        the last publication. Each file is written to a temporary name and renamed into place,
        and the checkpoint is written last, so a reader of the directory never sees a
        checkpoint whose tiles are missing.
        """
        latest = self._latest()
        try:
            return self._publish(directory, latest)
        except OSError as exc:  # one clear line, not a traceback (a CLI or scheduler error)
            raise StorageError(f"cannot write the tiles directory: {exc.strerror}") from None

    def _publish(self, directory: Path, latest: StoredCheckpoint) -> PublishReport:
        directory.mkdir(parents=True, exist_ok=True)
        with (directory / LOCK_FILE).open("a+b") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            # Whoever waited publishes the newest checkpoint, not the one it saw before.
            return self._publish_locked(directory, self._latest())

    def _publish_locked(self, directory: Path, latest: StoredCheckpoint) -> PublishReport:
        old = self._published_size(directory)
        if old > latest.tree_size:  # pragma: no cover - _published_size refuses it first
            raise RefusedError("the directory is ahead of the ledger")
        # Every tile of the latest size (a file missing from the directory is written again;
        # the rest cost one stat each), plus the partial tiles of the sizes in between.
        tiles = dict.fromkeys(new_tiles(0, latest.tree_size))
        prev = old
        for size in self._sizes_since(old, latest.tree_size):
            tiles.update(dict.fromkeys(new_tiles(prev, size)))
            prev = size
        # Same path, same bytes: a tile never changes once written, so existing files stay.
        missing = [t for t in tiles if not (directory / t.path()).exists()]
        kept = len(tiles) - len(missing)

        def write(tile: Tile) -> None:
            _write_atomic(directory / tile.path(), self.routed_read(tile))

        # Each file waits on a database read and an fsync: a few threads overlap those waits
        # (the GIL is released in both). All are written before the checkpoint.
        with ThreadPoolExecutor(PUBLISH_THREADS, thread_name_prefix="tiles-publish") as pool:
            for _ in pool.map(write, missing):
                pass
        written = len(missing)
        note = self.log.cosigned_note(latest).encode("utf-8")
        checkpoint = directory / CHECKPOINT_FILE
        # Rewritten when it changed (a newer size, or the same size with new cosignatures).
        if not checkpoint.exists() or checkpoint.read_bytes() != note:
            _write_atomic(checkpoint, note)
        log.info("tiles published: size %d -> %d, %d files", old, latest.tree_size, written)
        return PublishReport(old, latest.tree_size, written, kept)


def _write_atomic(target: Path, data: bytes) -> None:
    """Write ``data`` to ``target`` atomically, so a static server never serves half a tile
    (0644: a web server must read it)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(target, data, mode=0o644)
