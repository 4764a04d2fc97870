"""``audit-ledger tiles publish DIR``, the scheduler's publication, the public flag in a real
server process, and a log large enough for level-2 tiles (DESIGN §7, c2sp.org/tlog-tiles).

The HTTP side of tiles is in ``tests/integration/api/test_tiles.py``.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from audit_ledger.core import merkle
from audit_ledger.core.tiles import Tile, tile_hash_reader, tiles_for_size
from audit_ledger.errors import NotFoundError
from audit_ledger.ledger.service import Ledger
from audit_ledger.scheduler import default_jobs, run_job
from audit_ledger.settings import Settings
from tests.support.cli import run_cli
from tests.support.databases import BACKENDS, fresh_settings
from tests.support.factories import event
from tests.support.golang import build_tlogcheck
from tests.support.servers import make_server
from tests.support.servers import run_cli as run_cli_process


def grow_to(ledger: Ledger, size: int) -> None:
    while (need := size - ledger.log.size()) > 0:
        batch = ledger.appends.prepare_batch([event() for _ in range(min(need, 1000))])
        ledger.appends.append(batch, "bot")


def one_line_error(code: int, out: str, err: str) -> str:
    assert code == 2, (out, err)
    assert "Traceback" not in out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("audit-ledger: error: ")
    return lines[0]


@pytest.mark.process
def test_cli_publishes_incrementally(ledger: Ledger, settings: Settings, tmp_path: Path) -> None:
    target = tmp_path / "site"
    grow_to(ledger, 600)
    ledger.log.checkpoint()
    first = run_cli_process(settings, "tiles", "publish", str(target))
    assert first.returncode == 0, first.stderr
    # 600 = 2·256 + 88: entries and level 0: 2 full + 1 partial each; level 1: width 2.
    assert first.stdout == "published tree size 600 (was 0): 7 tiles written, 0 already there\n"
    latest = ledger.log.latest_checkpoint()
    assert latest is not None
    assert (target / "checkpoint").read_text(encoding="utf-8") == latest.note
    again = run_cli_process(settings, "tiles", "publish", str(target))
    assert again.stdout == "published tree size 600 (was 600): 0 tiles written, 7 already there\n"
    grow_to(ledger, 800)
    ledger.log.checkpoint()
    third = run_cli_process(settings, "tiles", "publish", str(target))
    # 800 = 3·256 + 32: tiles 002 became full and 003.p/32 appeared (entries and level 0),
    # level 1 is 000.p/3; the four full tiles 000 and 001 were there already.
    assert third.stdout == "published tree size 800 (was 600): 5 tiles written, 4 already there\n"
    (target / "tile/0/001").unlink()  # a file lost from the directory is written again
    fourth = run_cli_process(settings, "tiles", "publish", str(target))
    assert fourth.stdout == "published tree size 800 (was 800): 1 tiles written, 8 already there\n"
    for tile in tiles_for_size(600) + tiles_for_size(800):
        assert (target / tile.path()).read_bytes() == ledger.tiles.read(tile), tile


def test_cli_errors_are_one_line(
    ledger: Ledger,
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("AUDIT_LEDGER_TILES_DIR", raising=False)
    line = one_line_error(*run_cli(monkeypatch, capsys, settings, "tiles", "publish"))
    assert "AUDIT_LEDGER_TILES_DIR" in line
    line = one_line_error(*run_cli(monkeypatch, capsys, settings, "tiles", "publish", "d"))
    assert "no checkpoint yet" in line
    grow_to(ledger, 10)
    ledger.log.checkpoint()
    a_file = tmp_path / "file"
    a_file.write_text("x")
    line = one_line_error(*run_cli(monkeypatch, capsys, settings, "tiles", "publish", str(a_file)))
    assert "cannot write the tiles directory" in line
    other = tmp_path / "other"
    other.mkdir()
    foreign = "other.example/log\n10\n" + "A" * 43 + "=\n\n— other.example/log AAAAAAE=\n"
    (other / "checkpoint").write_text(foreign)
    line = one_line_error(*run_cli(monkeypatch, capsys, settings, "tiles", "publish", str(other)))
    assert "another log's checkpoint" in line
    # A directory ahead of (or forked from) this database is refused, not overwritten.
    ahead = tmp_path / "ahead"
    ahead.mkdir()
    note = ledger.log.latest_checkpoint()
    assert note is not None
    (ahead / "checkpoint").write_text(note.note.replace("\n10\n", "\n11\n"))
    line = one_line_error(*run_cli(monkeypatch, capsys, settings, "tiles", "publish", str(ahead)))
    assert "does not have" in line
    assert (ahead / "checkpoint").read_text() != note.note
    assert not (ahead / "tile").exists()
    monkeypatch.setenv("AUDIT_LEDGER_TILES_DIR", str(tmp_path / "env"))
    code, out, _ = run_cli(monkeypatch, capsys, settings, "tiles", "publish")
    assert code == 0
    assert out.startswith("published tree size 10 (was 0)")


def test_the_checkpoint_job_publishes(settings: Settings, tmp_path: Path) -> None:
    target = tmp_path / "tiles"
    ledger = Ledger.open(settings.model_copy(update={"tiles_dir": target}))
    try:
        job = next(j for j in default_jobs(ledger) if j.name == "checkpoint")
        now = datetime(2026, 12, 5, 6, 0, tzinfo=UTC)
        run_job(ledger, job, now)  # empty log: no checkpoint, nothing to publish
        assert not (target / "checkpoint").exists()
        grow_to(ledger, 300)
        run_job(ledger, job, now.replace(minute=1))
        latest = ledger.log.latest_checkpoint()
        assert latest is not None
        assert latest.tree_size == 300
        assert (target / "checkpoint").read_text(encoding="utf-8") == latest.note
        assert (target / "tile/0/000").read_bytes() == ledger.tiles.read(Tile(0, 0))
        assert ledger.jobs.runs()["checkpoint"][2] == "signed, +5"
    finally:
        ledger.close()


@pytest.mark.process
def test_public_flag_in_a_real_server(settings: Settings, tmp_path: Path) -> None:
    ledger = Ledger.open(settings)
    try:
        grow_to(ledger, 20)
        ledger.log.checkpoint()
    finally:
        ledger.close()
    server = make_server(settings, tmp_path)
    server.extra_env["AUDIT_LEDGER_TILES_PUBLIC"] = "true"
    server.start()
    try:
        r = httpx.get(server.url + "/tlog/tile/entries/000.p/20", timeout=30)
        assert r.status_code == 200
        assert r.headers["cache-control"] == "public, max-age=60"
        assert httpx.get(server.url + "/tlog/checkpoint", timeout=30).status_code == 200
    finally:
        server.stop()
    server.extra_env["AUDIT_LEDGER_TILES_PUBLIC"] = "false"
    server.start()
    try:
        r = httpx.get(server.url + "/tlog/tile/entries/000.p/20", timeout=30)
        assert r.status_code == 401
    finally:
        server.stop()


# --- level-2 tiles: 65,536 entries and more ---------------------------------------------------

BIG_SIZES = [65_535, 65_536, 65_537, 65_836]


@pytest.fixture(scope="module", params=BACKENDS)
def big(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Ledger, Path]]:
    backend = str(request.param)
    tmp = tmp_path_factory.mktemp(f"big-{backend}")
    with fresh_settings(backend, request, tmp) as (settings, _):
        ledger = Ledger.open(settings)
        try:
            for size in BIG_SIZES:
                grow_to(ledger, size)
                ledger.log.checkpoint()
                ledger.tiles.publish(tmp / "site")
            yield ledger, tmp / "site"
        finally:
            ledger.close()


@pytest.mark.slow
def test_level_two_tiles(big: tuple[Ledger, Path]) -> None:
    ledger, _ = big
    for cp in ledger.store.checkpoints():
        size = cp.tree_size
        tiles = tiles_for_size(size)
        levels = {t.level for t in tiles}
        assert levels == ({-1, 0, 1, 2} if size >= 65_536 else {-1, 0, 1})
        if size >= 65_536:
            assert Tile(1, 0) in tiles  # the first full level-1 tile
            assert Tile(2, 0, 1) in tiles  # tlog-tiles: a partial level-2 tile of width 1

        def fetch(tile: Tile) -> bytes:
            return ledger.tiles.get(tile.path(), None, "test").data

        assert merkle.tree_root(size, tile_hash_reader(size, fetch)) == cp.root_hash, size
    with pytest.raises(NotFoundError):
        ledger.tiles.get("tile/2/000", None, "test")  # needs 16,777,216 entries


@pytest.mark.slow
@pytest.mark.process
def test_level_two_tiles_in_go(big: tuple[Ledger, Path], tmp_path: Path) -> None:
    ledger, site = big
    binary = build_tlogcheck(tmp_path)
    result = subprocess.run(
        [str(binary), "-vkey", ledger.log.verifier_key(), "-dir", str(site),
         "-old", ",".join(str(s) for s in BIG_SIZES), "-sample", "300"],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert '"size":65836' in result.stdout
    assert '"entries":65836' in result.stdout
