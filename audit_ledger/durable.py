"""Durable file writes: a file replaced atomically and fsync'd, and its directory fsync'd.

One place for what key files, the auditor's mirror, published tiles, proof bundles and backups
all need: a reader (a static web server, the next start, a crash recovery) sees either the old
file or the whole new one, never half of it, and the rename itself survives a power loss (the
directory entry is fsync'd too, as POSIX requires for that guarantee).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def fsync_dir(directory: Path) -> None:
    """fsync a directory, so that a rename or a new file in it survives a crash."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data``: a private temporary file in the same directory, written
    and fsync'd, given ``mode``, renamed over ``path``, then the directory fsync'd."""
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    temporary = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        temporary.chmod(mode)  # mkstemp creates 0600; widen only when asked (public tiles)
        temporary.replace(path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
