"""``audit-ledger audit`` (a subprocess) against a server on a real socket (the application in a
thread of the test process): an auditor's mirror follows the log, and every kind of
contradiction (rollback, fork, altered leaves, a forged checkpoint, a damaged mirror) ends in
exit 1 with the contradicting documents kept as evidence."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from audit_ledger.auditor.mirror import LEAVES_FILE, STATE_FILE, parse_leaf_line
from audit_ledger.core.checkpoint import parse_verifier_key, verify_checkpoint
from audit_ledger.crypto.keys import init_keys
from audit_ledger.settings import Settings
from tests.conftest import ORIGIN
from tests.integration.api.conftest import ThreadedServer, run_cli
from tests.support.api import open_ledger
from tests.support.factories import event
from tests.support.servers import add_principals, run_cli_here

# The audit CLI runs as a subprocess (its exit codes are the point) and talks to the server
# over a socket; some tests stop or restart the server.
pytestmark = pytest.mark.process
SECRET_ORDER = "ORD-PLAINTEXT-7731"


def _append(server: ThreadedServer, count: int) -> None:
    events = [
        event("financial_transactions", user_id=4242, order_id=SECRET_ORDER) for _ in range(count)
    ]
    for lo in range(0, count, 200):
        r = httpx.post(
            server.url + "/v1/events/batch",
            json={"events": events[lo : lo + 200]},
            headers=server.headers("writer"),
            timeout=60,
        )
        assert r.status_code == 201, r.text


def _checkpoint(settings: Settings) -> int:
    with open_ledger(settings) as ledger:
        made = ledger.log.checkpoint()
    assert made is not None
    return made.tree_size


def _audit(
    server: ThreadedServer, mirror: Path, *extra: str, key: str | None = None, role: str = "auditor"
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    token = mirror.parent / f"{role}.token"
    token.write_text(server.tokens[role] + "\n")
    with open_ledger(server.settings) as ledger:
        verifier_key = key or ledger.log.verifier_key()
    args = ["audit", "--mirror", str(mirror), "--verifier-key", verifier_key, "--json", *extra]
    if "--offline" not in extra:
        args += ["--url", server.url, "--token-file", str(token)]
    result = run_cli(server.settings, *args)
    report = json.loads(result.stdout) if result.stdout.strip() else {}
    return result, report


def _mirror_leaves(mirror: Path) -> list[tuple[int, bytes]]:
    lines = (mirror / LEAVES_FILE).read_bytes().splitlines(keepends=True)
    return [parse_leaf_line(line, n) for n, line in enumerate(lines, start=1)]


def _evidence(mirror: Path) -> list[Path]:
    folder = mirror / "evidence"
    return sorted(folder.iterdir()) if folder.exists() else []


def test_mirror_follows_the_log_and_rechecks_offline(
    socket_server: ThreadedServer, tmp_path: Path
) -> None:
    mirror = tmp_path / "mirror"
    _append(socket_server, 1150)  # more than one page of leaves
    first = _checkpoint(socket_server.settings)

    result, report = _audit(socket_server, mirror)
    assert result.returncode == 0, result.stderr
    assert report["ok"] is True
    assert report["tree_size"] == first
    assert (report["previous_size"], report["new_leaves"]) == (0, first)
    assert report["inclusion_proofs"] == 8
    assert report["consistency_proof"] is False
    with open_ledger(socket_server.settings) as ledger:
        assert _mirror_leaves(mirror) == ledger.store.leaves(0, first)
        assert report["root_hash"] == ledger.log.root(first).hex()

    # More entries (the auditor's own page reads among them) and a newer checkpoint: only the
    # new leaves are fetched, and the new checkpoint must extend the old one.
    _append(socket_server, 130)
    second = _checkpoint(socket_server.settings)
    result, report = _audit(socket_server, mirror)
    assert result.returncode == 0, result.stderr
    assert (report["previous_size"], report["tree_size"]) == (first, second)
    assert report["new_leaves"] == second - first
    assert report["consistency_proof"] is True
    with open_ledger(socket_server.settings) as ledger:
        assert _mirror_leaves(mirror) == ledger.store.leaves(0, second)

    # Nothing new signed: nothing to fetch.
    result, report = _audit(socket_server, mirror)
    assert result.returncode == 0, result.stderr
    assert (report["tree_size"], report["new_leaves"]) == (second, 0)

    # Offline, with no server at all, from seq 0.
    socket_server.stop()
    result, report = _audit(socket_server, mirror, "--offline")
    assert result.returncode == 0, result.stderr
    assert (report["tree_size"], report["new_leaves"]) == (second, second)

    # The auditor's copy holds headers only: no plaintext identifier or amount anywhere in it.
    for path in mirror.rglob("*"):
        if path.is_file():
            assert SECRET_ORDER.encode() not in path.read_bytes()
    assert _evidence(mirror) == []


def test_text_output_and_usage_errors(socket_server: ThreadedServer, tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    _append(socket_server, 5)
    _checkpoint(socket_server.settings)
    with open_ledger(socket_server.settings) as ledger:
        key = ledger.log.verifier_key()
    token = tmp_path / "token"
    token.write_text(socket_server.tokens["auditor"])
    base = ["audit", "--mirror", str(mirror), "--verifier-key", key]

    ok = run_cli(
        socket_server.settings, *base, "--url", socket_server.url, "--token-file", str(token)
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("ok: checkpoint of ")

    writer_token = tmp_path / "writer"
    writer_token.write_text(socket_server.tokens["writer"])
    cases = {
        "no token": [*base, "--url", socket_server.url],
        "both modes": [*base, "--url", socket_server.url, "--offline"],
        "no mode": base,
        "bad key": ["audit", "--mirror", str(mirror), "--verifier-key", "nonsense", "--offline"],
        # The checkpoint is any principal's to read, the leaves an auditor's: a fresh mirror.
        "writer's token": [
            *base[:2],
            str(tmp_path / "writer-mirror"),
            *base[3:],
            "--url",
            socket_server.url,
            "--token-file",
            str(writer_token),
        ],
        "nobody listening": [
            *base,
            *("--url", "http://127.0.0.1:9", "--token-file", str(token), "--retries", "1"),
        ],
        "no mirror offline": [
            "audit",
            "--mirror",
            str(tmp_path / "absent"),
            "--verifier-key",
            key,
            "--offline",
        ],
    }
    for name, args in cases.items():
        env_less = run_cli_here(socket_server.settings, *args)
        assert env_less.returncode == 2, (name, env_less.stderr)
        assert env_less.stderr.count("\n") == 1, (name, env_less.stderr)
        assert "Traceback" not in env_less.stderr
        assert socket_server.tokens["writer"] not in env_less.stderr
    # A failed run leaves the mirror as it was: the next one still verifies.
    again = run_cli(socket_server.settings, *base, "--offline")
    assert again.returncode == 0, again.stderr


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_rollback_is_caught_with_evidence(
    socket_server: ThreadedServer, settings: Settings, tmp_path: Path
) -> None:
    """A database restored from a backup serves an older (smaller) checkpoint."""
    mirror = tmp_path / "mirror"
    _append(socket_server, 40)
    _checkpoint(settings)
    database = Path(settings.database_url.removeprefix("sqlite:///"))
    socket_server.stop()
    backup = tmp_path / "backup.sqlite3"
    shutil.copyfile(database, backup)
    socket_server.start()
    _append(socket_server, 40)
    newer = _checkpoint(settings)
    result, _ = _audit(socket_server, mirror)
    assert result.returncode == 0, result.stderr

    socket_server.stop()
    shutil.copyfile(backup, database)
    socket_server.start()
    before = (mirror / STATE_FILE).read_bytes()
    result, report = _audit(socket_server, mirror)
    assert result.returncode == 1, result.stderr
    assert report["ok"] is False
    assert "rollback" in report["problem"]
    assert (mirror / STATE_FILE).read_bytes() == before  # the mirror keeps what it verified
    (folder,) = _evidence(mirror)
    # Both documents are signed by the ledger's key: anyone can check the contradiction.
    verifier = parse_verifier_key(json.loads(before)["verifier_key"])
    sizes = {
        verify_checkpoint((folder / name).read_text(), verifier).size
        for name in ("saved-checkpoint", "served-checkpoint")
    }
    assert max(sizes) == newer
    assert min(sizes) < newer


def _second_ledger(settings: Settings, tmp_path: Path) -> ThreadedServer:
    """Another database signed with the same keys: a server showing a different history."""
    other = settings.model_copy(update={"database_url": f"sqlite:///{tmp_path / 'fork.sqlite3'}"})
    result = run_cli(other, "db", "upgrade")
    assert result.returncode == 0, result.stderr
    return ThreadedServer(other, add_principals(other))


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
@pytest.mark.parametrize("longer", [True, False], ids=["inconsistent", "fork"])
def test_another_history_under_the_same_key_is_caught(
    socket_server: ThreadedServer, settings: Settings, tmp_path: Path, longer: bool
) -> None:
    mirror = tmp_path / "mirror"
    _append(socket_server, 30)
    size = _checkpoint(settings)
    result, _ = _audit(socket_server, mirror)
    assert result.returncode == 0, result.stderr

    fork = _second_ledger(settings, tmp_path)
    fork.start()
    try:
        # The fork's own principals exist (add_principals), so the "ops" entries differ from
        # the original's; top it up to the same size, or beyond.
        with open_ledger(fork.settings) as ledger:
            have = ledger.log.size()
        _append(fork, size - have + (25 if longer else 0))
        assert _checkpoint(fork.settings) == size + (25 if longer else 0)
        result, report = _audit(fork, mirror)
    finally:
        fork.stop()
    assert result.returncode == 1, result.stderr
    assert ("does not extend" if longer else "two signed roots") in report["problem"]
    (folder,) = _evidence(mirror)
    assert {p.name for p in folder.iterdir()} >= {"saved-checkpoint", "served-checkpoint"}


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_altered_leaf_on_the_server_is_caught(
    socket_server: ThreadedServer, settings: Settings, tmp_path: Path
) -> None:
    """A superuser rewrites a leaf after it was signed: the served leaves no longer give the
    checkpoint's root, whatever the server's own hashes say."""
    mirror = tmp_path / "mirror"
    _append(socket_server, 1100)  # the next page is on its way when the first one fails
    _checkpoint(settings)
    database = settings.database_url.removeprefix("sqlite:///")
    with sqlite3.connect(database) as conn:
        for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'"):
            conn.execute(f'DROP TRIGGER "{name}"')
        # Same length, same JSON shape: one digit of the writer-visible event type changes.
        leaf = conn.execute("SELECT leaf FROM entries WHERE seq = 12").fetchone()[0]
        altered = leaf.replace(b'"occurred_at":"20', b'"occurred_at":"19', 1)
        assert altered != leaf
        conn.execute("UPDATE entries SET leaf = ? WHERE seq = 12", (altered,))
    result, report = _audit(socket_server, mirror)
    assert result.returncode == 1, result.stderr
    assert "seq 13" in report["problem"] or "root" in report["problem"]
    assert not (mirror / STATE_FILE).exists()
    assert len(_evidence(mirror)) == 1


def test_forged_checkpoint_is_caught(
    socket_server: ThreadedServer, settings: Settings, tmp_path: Path
) -> None:
    """The server's checkpoint is checked with the auditor's key, never the server's."""
    _append(socket_server, 3)
    _checkpoint(settings)
    other = init_keys(tmp_path / "other-keys", ORIGIN)
    result, report = _audit(socket_server, tmp_path / "mirror", key=other.encode())
    assert result.returncode == 1, result.stderr
    assert "does not verify" in report["problem"]
    (folder,) = _evidence(tmp_path / "mirror")
    assert (folder / "served-checkpoint").read_text().startswith(ORIGIN + "\n")


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    "damage", ["leaf byte", "missing line", "state edited", "last leaf edited", "cut short"]
)
def test_offline_check_catches_a_damaged_mirror(
    socket_server: ThreadedServer, settings: Settings, tmp_path: Path, damage: str
) -> None:
    mirror = tmp_path / "mirror"
    _append(socket_server, 12)
    _checkpoint(settings)
    result, _ = _audit(socket_server, mirror)
    assert result.returncode == 0, result.stderr
    leaves = mirror / LEAVES_FILE
    lines = leaves.read_bytes().splitlines(keepends=True)
    if damage == "leaf byte":
        # Another valid base64 character inside the leaf: the leaf changes, the line parses.
        pos = lines[5].index(b'"leaf":"') + 40
        swapped = b"B" if lines[5][pos : pos + 1] != b"B" else b"C"
        lines[5] = lines[5][:pos] + swapped + lines[5][pos + 1 :]
        leaves.write_bytes(b"".join(lines))
    elif damage == "missing line":
        leaves.write_bytes(b"".join(lines[:3] + lines[4:]) + lines[3])
    elif damage in {"state edited", "last leaf edited"}:
        state = json.loads((mirror / STATE_FILE).read_text())
        if damage == "state edited":
            state["last_recorded_at"] = "2000-01-01T00:00:00.000000Z"
        else:
            state["last_leaf_hash"] = "ab" * 32
        (mirror / STATE_FILE).write_text(json.dumps(state))
    else:
        leaves.write_bytes(b"".join(lines[:-1]))
    result, report = _audit(socket_server, mirror, "--offline")
    assert result.returncode == 1, (damage, result.stderr)
    assert report["ok"] is False
