"""Permissions of the key store: directories 0700, key files 0600, checked before any key is used.

A key file readable by the group or by others is a key that has already leaked to every account
on the host (or in the container image): the service refuses to start on one rather than serve
with it, naming the file and the ``chmod`` that fixes it. Only the owner bits are allowed; less
than 0600/0700 (say 0400) is fine. Files and directories this service creates are created with
these modes in the first place (:func:`private_dir`).
"""

from __future__ import annotations

import stat
from pathlib import Path

from audit_ledger.errors import ConfigError

#: Bits nobody but the owner may hold on the key store.
GROUP_OTHER = stat.S_IRWXG | stat.S_IRWXO
#: Directories under the keys directory that hold key files.
KEY_SUBDIRS = ("subject-keys", "retired-keks")
#: Of those, the ones whose files are not checked one by one: ``subject-keys`` holds a file per
#: data subject (tens of thousands), and a check of each at every start-up cost most of a
#: second per 20,000 (measured: 0.87 s of every CLI command's start). Its own 0700, checked
#: here, already keeps every other account out of all of them, and the service creates each
#: one 0600.
CHECKED_AS_A_WHOLE = frozenset({"subject-keys"})


def private_dir(path: Path) -> None:
    """Create ``path`` (and parents) if needed and make it 0700 — for a directory we create
    keys in, whatever mode it had (``keys/`` comes 0755 from a git checkout)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)


def check_key_store_modes(keys_dir: Path) -> None:
    """Raise :class:`ConfigError` for the first key directory or key file the group or others
    may access; missing ones are left to the key loader, which names them (an empty directory
    holds nothing to protect: "missing key file" is the message that helps there)."""
    key_files = sorted(keys_dir.glob("*.key"))
    if key_files or any((keys_dir / sub).exists() for sub in KEY_SUBDIRS):
        _check(keys_dir, 0o700)
    for sub in KEY_SUBDIRS:
        directory = keys_dir / sub
        if _check(directory, 0o700) and sub not in CHECKED_AS_A_WHOLE:
            for path in sorted(directory.glob("*.key")):
                _check(path, 0o600)
    for path in key_files:
        _check(path, 0o600)


def _check(path: Path, wanted: int) -> bool:
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return False
    if stat.S_ISLNK(mode):
        # A symlink's own mode is meaningless: judge what it points to.
        mode = path.stat().st_mode
    if mode & GROUP_OTHER:
        kind = "directory" if stat.S_ISDIR(mode) else "key file"
        raise ConfigError(
            f"{kind} {path} is accessible to group/others (mode {stat.S_IMODE(mode):04o}); "
            f"run: chmod {wanted:o} {path}"
        )
    return True
