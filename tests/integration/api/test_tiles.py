"""C2SP tlog-tiles over real uvicorn on both backends (DESIGN §7, issue #13 items 1-2).

One log per backend is grown to a few thousand entries with a checkpoint at each size of
:data:`SIZES` (tile edges: 1, 255/256/257, 511/512/513, 2047/2048/2049, …) and published into a
directory after each checkpoint. Then, against real uvicorn servers (one auditor-only, one with
``tiles_public``):

* for *every* checkpointed size, the tiles of that size (full and partial, levels 0 and 1, and
  entry bundles) rebuild the checkpoint's root, and the proofs computed from them equal
  ``/v1/log/proof/inclusion`` and ``/v1/log/proof/consistency``;
* the published directory is byte for byte what ``/tlog/`` serves; a second publication writes
  nothing and no full tile was ever rewritten (same inode, same mtime);
* access (auditor by default, public with the flag), caching headers, recorded reads;
* bad and non-canonical paths are 404 problems, never 5xx;
* Go's ``golang.org/x/mod/sumdb/tlog`` agrees (``tests/go/tlogcheck``) over the directory and
  over HTTP.

Level-2 tiles need 65,536 entries: ``test_level_two_tiles`` builds that once per backend.
"""

from __future__ import annotations

import base64
import json
import random
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event as sa_event

from audit_ledger.core import merkle
from audit_ledger.core.checkpoint import parse_verifier_key, verify_checkpoint
from audit_ledger.core.tiles import (
    Tile,
    decode_entry_bundle,
    parse_tile_path,
    split_hash_tile,
    tile_hash_reader,
    tiles_for_size,
)
from audit_ledger.ledger.service import Ledger
from tests.support.api import assert_problem, records_read_count
from tests.support.databases import BACKENDS, fresh_settings
from tests.support.factories import event
from tests.support.golang import build_tlogcheck
from tests.support.servers import InProcessServer, ThreadedServer, add_principals

SIZES = [1, 2, 255, 256, 257, 300, 511, 512, 513, 1000, 2047, 2048, 2049, 3001]


def grow_to(ledger: Ledger, size: int) -> None:
    """Append events until the log has ``size`` entries (in batches, in this process)."""
    while (need := size - ledger.log.size()) > 0:
        batch = ledger.appends.prepare_batch([event() for _ in range(min(need, 1000))])
        ledger.appends.append(batch, "bot")


def full_tile_stats(directory: Path) -> dict[str, tuple[int, int]]:
    """Inode and mtime of every full tile file (paths without ``.p/``) under ``directory``."""
    return {
        str(p.relative_to(directory)): (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in (directory / "tile").rglob("*")
        if p.is_file() and ".p" not in p.relative_to(directory).parts
    }


@dataclass
class Tiled:
    ledger: Ledger
    auditor: ThreadedServer
    public: ThreadedServer
    published: Path
    sizes: list[int]
    full_stats: dict[str, tuple[int, int]] = field(default_factory=dict)

    def get(self, path: str, server: ThreadedServer | None = None, **kw: Any) -> httpx.Response:
        return httpx.get((server or self.public).url + path, timeout=30, **kw)

    def proof(self, path: str) -> list[bytes]:
        r = self.get(path, self.auditor, headers=self.auditor.headers("auditor"))
        assert r.status_code == 200, r.text
        return [bytes.fromhex(h) for h in r.json()["hashes"]]


@pytest.fixture(scope="module", params=BACKENDS)
def tiled(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Tiled]:
    backend = str(request.param)
    tmp = tmp_path_factory.mktemp(f"tiles-{backend}")
    with fresh_settings(backend, request, tmp) as (settings, _):
        published = tmp / "published"
        ledger = Ledger.open(settings)
        full_stats: dict[str, tuple[int, int]] = {}
        try:
            for size in SIZES:
                grow_to(ledger, size)
                made = ledger.log.checkpoint()
                assert made is not None
                assert made.tree_size == size
                ledger.tiles.publish(published)
                # Remember each full tile the first time it appears: never rewritten later.
                for path, stat in full_tile_stats(published).items():
                    full_stats.setdefault(path, stat)
            # Principals are records too: added after the checkpointed sizes, to keep them exact.
            tokens = add_principals(settings)
            auditor = ThreadedServer(settings, tokens)
            public = ThreadedServer(settings.model_copy(update={"tiles_public": True}), tokens)
            auditor.start()
            public.start()
            try:
                yield Tiled(ledger, auditor, public, published, SIZES, full_stats)
            finally:
                public.stop()
                auditor.stop()
        finally:
            ledger.close()


def _tile_fetcher(tiled: Tiled) -> Any:
    cache: dict[Tile, bytes] = {}

    def fetch(tile: Tile) -> bytes:
        if tile not in cache:
            r = tiled.get(f"/tlog/{tile.path()}")
            assert r.status_code == 200, (tile.path(), r.text)
            cache[tile] = r.content
        return cache[tile]

    return fetch


def test_tiles_of_every_checkpointed_size_agree_with_proofs_and_roots(tiled: Tiled) -> None:
    fetch = _tile_fetcher(tiled)
    checkpoints = tiled.ledger.store.checkpoints()
    assert [c.tree_size for c in checkpoints] == SIZES
    rng = random.Random(13)
    previous = None
    for cp in checkpoints:
        size = cp.tree_size
        tiles = tiles_for_size(size)
        for tile in tiles:  # each tile of this size is served, at its width
            data = fetch(tile)
            if tile.entries:
                assert len(decode_entry_bundle(data)) == tile.width
            else:
                assert len(split_hash_tile(data)) == tile.width
        read = tile_hash_reader(size, fetch)
        assert merkle.tree_root(size, read) == cp.root_hash, size
        # Entry bundles hash to the level-0 tiles.
        for tile in (t for t in tiles if t.entries):
            leaves = decode_entry_bundle(fetch(tile))
            level0 = split_hash_tile(fetch(Tile(0, tile.index, tile.width)))
            assert [merkle.leaf_hash(leaf) for leaf in leaves] == level0
        for seq in {0, size - 1, *(rng.randrange(size) for _ in range(3))}:
            ours = tiled.proof(f"/v1/log/proof/inclusion?seq={seq}&tree_size={size}")
            assert merkle.inclusion_proof(seq, size, read) == ours, (seq, size)
        if previous is not None:
            ours = tiled.proof(f"/v1/log/proof/consistency?first={previous}&second={size}")
            assert merkle.consistency_proof(previous, size, read) == ours
        previous = size


def test_tiles_stop_at_the_served_checkpoint(app_server: InProcessServer) -> None:
    """A log without a checkpoint serves none (404); one whose first checkpoint is signed on
    the first read (as ``/v1/log/checkpoint`` may do) serves exactly the tiles of its size."""
    auditor = app_server.headers("auditor")
    r = app_server.get("/tlog/checkpoint", headers=auditor)
    size = 0
    if r.status_code == 404:
        assert_problem(r, 404)
    else:
        verifier = parse_verifier_key(app_server.get("/v1/log/verifier-key").text)
        size = verify_checkpoint(r.text, verifier).size
        for path in (f"tile/0/000.p/{size}", f"tile/entries/000.p/{size}"):
            assert app_server.get(f"/tlog/{path}", headers=auditor).status_code == 200
    for path in (f"tile/0/000.p/{size + 1}", f"tile/entries/000.p/{size + 1}", "tile/0/000"):
        assert_problem(app_server.get(f"/tlog/{path}", headers=auditor), 404)


def test_a_tile_is_one_range_read(tiled: Tiled) -> None:
    statements: list[str] = []

    def count(*args: Any) -> None:
        if str(args[2]).lstrip().upper().startswith("SELECT"):
            statements.append(str(args[2]))

    engine = tiled.ledger.engine
    sa_event.listen(engine, "before_cursor_execute", count)
    try:
        for path in ("tile/0/001", "tile/1/000.p/11", "tile/entries/010.p/193"):
            statements.clear()
            tiled.ledger.tiles.get(path, None, "test")
            # The latest checkpoint, then one range SELECT (never a per-hash read).
            assert len(statements) == 2, statements
    finally:
        sa_event.remove(engine, "before_cursor_execute", count)


def test_checkpoint_is_the_v1_note(tiled: Tiled) -> None:
    r = tiled.get("/tlog/checkpoint")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/plain; charset=utf-8"
    assert r.headers["cache-control"] == "no-cache"
    v1 = tiled.get("/v1/log/checkpoint", tiled.auditor, headers=tiled.auditor.headers("auditor"))
    assert r.text == v1.text
    verifier = parse_verifier_key(tiled.get("/v1/log/verifier-key").text)
    assert verify_checkpoint(r.text, verifier).size == SIZES[-1]


def test_public_tiles_need_no_token_and_are_cacheable(tiled: Tiled) -> None:
    before = records_read_count(tiled.ledger)
    full = tiled.get("/tlog/tile/0/000")
    partial = tiled.get("/tlog/tile/0/011.p/185")  # 3001 = 11·256 + 185
    bundle = tiled.get("/tlog/tile/entries/000")
    for r in (full, partial, bundle):
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "application/octet-stream"
    assert len(full.content) == 8192
    assert len(partial.content) == 185 * 32
    assert full.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert bundle.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert partial.headers["cache-control"] == "public, max-age=60"
    # Anonymous reads are not recorded (the operator made the headers public).
    assert records_read_count(tiled.ledger) == before


def test_entry_bundles_are_gzipped_when_asked(tiled: Tiled) -> None:
    plain = tiled.get("/tlog/tile/entries/002", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    assert plain.headers["vary"] == "Accept-Encoding"
    for accept in ("gzip", "br, gzip;q=0.5", "GZIP"):
        r = tiled.get("/tlog/tile/entries/002", headers={"Accept-Encoding": accept})
        assert r.headers["content-encoding"] == "gzip", accept
        assert r.content == plain.content  # httpx decodes it
        assert int(r.headers["content-length"]) < len(plain.content) / 2
    refused = tiled.get("/tlog/tile/entries/002", headers={"Accept-Encoding": "gzip;q=0"})
    assert "content-encoding" not in refused.headers
    hashes = tiled.get("/tlog/tile/0/002", headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in hashes.headers


def test_auditor_only_by_default(tiled: Tiled) -> None:
    server = tiled.auditor
    for path in ("/tlog/checkpoint", "/tlog/tile/0/000", "/tlog/tile/entries/000"):
        assert_problem(tiled.get(path, server), 401)
        assert_problem(tiled.get(path, server, headers=server.headers("revoked")), 401)
        for role in ("writer", "compliance_officer", "admin"):
            assert_problem(tiled.get(path, server, headers=server.headers(role)), 403)
    before = records_read_count(tiled.ledger)
    hashes = tiled.get("/tlog/tile/1/000.p/11", server, headers=server.headers("auditor"))
    assert hashes.status_code == 200
    assert hashes.headers["cache-control"] == "private, max-age=60"
    assert records_read_count(tiled.ledger) == before  # hashes only: not a read of records
    bundle = tiled.get("/tlog/tile/entries/001", server, headers=server.headers("auditor"))
    assert bundle.status_code == 200
    assert bundle.headers["cache-control"] == "private, max-age=31536000, immutable"
    assert bundle.content == tiled.get("/tlog/tile/entries/001").content
    # The same headers as GET /v1/log/leaves: recorded the same way.
    assert records_read_count(tiled.ledger) == before + 1


@pytest.mark.parametrize(
    "path",
    [
        "tile/0/00",
        "tile/00/000",
        "tile/64/000",
        "tile/0/x000/001",
        "tile/0/000.p/256",
        "tile/0/000.p/0",
        "tile/0/000.p/01",
        "tile/data/000",
        "tile/8/0/000",  # Go sumdb's path with the height: not C2SP
        "tile/0/" + "x999/" * 30 + "999",
        "tile/0/%2e%2e/000",
        "tile/entries/",
        "tile/",
    ],
)
def test_non_canonical_paths_are_404(tiled: Tiled, path: str) -> None:
    assert_problem(tiled.get(f"/tlog/{path}"), 404)


def test_tiles_beyond_the_latest_checkpoint_are_404(tiled: Tiled) -> None:
    # 3001 = 11·256 + 185: the level-0 tile 11 exists at width 185 (and any width below it).
    assert tiled.get("/tlog/tile/0/011.p/184").status_code == 200
    for path in ("tile/0/011.p/186", "tile/0/011", "tile/0/012.p/1", "tile/entries/011.p/186",
                 "tile/1/000", "tile/1/000.p/12", "tile/2/000.p/1"):  # fmt: skip
        assert_problem(tiled.get(f"/tlog/{path}"), 404)


def test_published_directory_is_what_the_api_serves(tiled: Tiled) -> None:
    files = [p for p in tiled.published.rglob("*") if p.is_file()]
    assert not [p for p in files if p.name.startswith(".tmp-")]
    files.remove(tiled.published / ".publish.lock")
    assert (tiled.published / "checkpoint").read_text() == tiled.get("/tlog/checkpoint").text
    names = set()
    for p in files:
        rel = p.relative_to(tiled.published).as_posix()
        names.add(rel)
        if rel != "checkpoint":
            parse_tile_path(rel)  # every file is at a canonical tile path
        r = tiled.get(f"/tlog/{rel}")
        assert r.status_code == 200, rel
        assert r.content == p.read_bytes(), rel
    # Every tile of the latest size and the partial tiles of every size since the first.
    for size in SIZES:
        assert {t.path() for t in tiles_for_size(size) if not t.full} <= names, size
    assert {t.path() for t in tiles_for_size(SIZES[-1])} <= names


def test_publishing_again_rewrites_nothing(tiled: Tiled) -> None:
    before = full_tile_stats(tiled.published)
    report = tiled.ledger.tiles.publish(tiled.published)
    assert (report.previous_size, report.tree_size, report.written) == (SIZES[-1], SIZES[-1], 0)
    assert full_tile_stats(tiled.published) == before
    # No full tile was rewritten by any publication since it first appeared.
    for path, stat in tiled.full_stats.items():
        assert before[path] == stat, path


def _tlogcheck(binary: Path, tiled: Tiled, *args: str) -> dict[str, Any]:
    result = subprocess.run(
        [
            str(binary),
            "-vkey",
            tiled.ledger.log.verifier_key(),
            "-token",
            tiled.auditor.tokens["auditor"],
            "-old",
            ",".join(str(s) for s in SIZES),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    summary: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return summary


@pytest.fixture(scope="module")
def tlogcheck(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tlogcheck(tmp_path_factory.mktemp("go"))


@pytest.mark.process
def test_go_sumdb_tlog_agrees_over_the_directory_and_http(tlogcheck: Path, tiled: Tiled) -> None:
    root = tiled.ledger.store.latest_checkpoint()
    assert root is not None
    # The published directory, and the service's own proofs compared with Go's.
    by_dir = _tlogcheck(
        tlogcheck, tiled, "-dir", str(tiled.published), "-api", tiled.auditor.url, "-sample", "100"
    )
    assert by_dir["api_proofs_equal"] == by_dir["inclusion_checked"] + len(SIZES)
    assert by_dir["inclusion_checked"] > 100
    # The same tiles over HTTP (auditor token).
    by_url = _tlogcheck(tlogcheck, tiled, "-url", tiled.auditor.url + "/tlog", "-sample", "30")
    for summary in (by_dir, by_url):
        assert summary["size"] == summary["entries"] == SIZES[-1]
        assert base64.b64decode(summary["root"]) == root.root_hash
        assert summary["consistency_checked"] == len(SIZES)


@pytest.mark.process
def test_go_refuses_a_tampered_tile(tlogcheck: Path, tiled: Tiled, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(tiled.published), str(copy)], check=True)
    victim = copy / "tile/0/003"
    data = bytearray(victim.read_bytes())
    data[100] ^= 1
    victim.write_bytes(bytes(data))
    result = subprocess.run(
        [str(tlogcheck), "-vkey", tiled.ledger.log.verifier_key(), "-dir", str(copy)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "tlogcheck:" in result.stderr
