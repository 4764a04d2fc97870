"""The package's layering (DESIGN §1), read from its own imports: the shells (``api``, ``cli``,
``scheduler``) reach the data only through ``ledger``; ``core`` does no I/O and imports nothing
of ours but ``errors``; no module imports itself back through others."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "audit_ledger"

#: What every shell may import: the use cases and the cross-cutting modules.
SHELL_ALLOWED = (
    "audit_ledger.ledger",
    "audit_ledger.settings",
    "audit_ledger.errors",
    "audit_ledger.observability",
    "audit_ledger.roles",
    "audit_ledger.parent_death",
    "audit_ledger.durable",  # atomic, fsync'd file writes (cross-cutting like errors)
    # shells compose: the server starts the scheduler, the CLI starts either
    "audit_ledger.api",
    "audit_ledger.scheduler",
    # the CLI starts the built-in witness (`audit-ledger witness …`), a separate service
    "audit_ledger.witness",
    # the server mounts the compliance console (/console/, issue #14), a shell of its own
    "audit_ledger.console",
)
#: The auditor's commands are the auditor's own tool: they check a server over HTTP (or a
#: mirror offline) with the client and the auditor package, against a published verifier key.
AUDITOR_COMMANDS_ALLOWED = (
    "audit_ledger.auditor",
    "audit_ledger.client",
    "audit_ledger.core.checkpoint",
)
SHELLS = ("api", "cli", "scheduler.py", "console")


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> Iterator[str]:
    """Every ``audit_ledger`` module ``path`` imports (module level, TYPE_CHECKING, local)."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)


def _ours(name: str) -> bool:
    return name == "audit_ledger" or name.startswith("audit_ledger.")


def _shell_files() -> list[Path]:
    files: list[Path] = []
    for shell in SHELLS:
        target = PACKAGE / shell
        files.extend(sorted(target.rglob("*.py")) if target.is_dir() else [target])
    return files


@pytest.mark.parametrize("path", _shell_files(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_shells_reach_the_data_only_through_the_ledger(path: Path) -> None:
    own = _module(path).split(".")[1]  # api, cli or scheduler: a shell may import itself
    allowed = (*SHELL_ALLOWED, f"audit_ledger.{own}")
    if path.name == "audit.py" and path.parent.name == "cli":
        allowed = (*allowed, *AUDITOR_COMMANDS_ALLOWED)
    wrong = sorted(
        name
        for name in _imports(path)
        if _ours(name) and not any(name == a or name.startswith(a + ".") for a in allowed)
    )
    assert wrong == [], f"{path.relative_to(PACKAGE)} imports {wrong}"


@pytest.mark.parametrize("path", sorted((PACKAGE / "core").rglob("*.py")), ids=lambda p: p.name)
def test_core_imports_nothing_of_ours_but_errors(path: Path) -> None:
    wrong = sorted(
        name
        for name in _imports(path)
        if _ours(name) and not name.startswith(("audit_ledger.core", "audit_ledger.errors"))
    )
    assert wrong == [], f"core/{path.name} imports {wrong}"


#: The witness (issue #13) is run by an auditing firm outside the company: it must not reach
#: the ledger's database, keys or use cases, only the pure formats and the cross-cutting modules.
WITNESS_ALLOWED = (
    "audit_ledger.witness",
    "audit_ledger.durable",
    "audit_ledger.core",
    "audit_ledger.errors",
    "audit_ledger.observability",
)


@pytest.mark.parametrize("path", sorted((PACKAGE / "witness").rglob("*.py")), ids=lambda p: p.name)
def test_witness_depends_on_nothing_of_the_ledger(path: Path) -> None:
    wrong = sorted(
        name
        for name in _imports(path)
        if _ours(name) and not any(name == a or name.startswith(a + ".") for a in WITNESS_ALLOWED)
    )
    assert wrong == [], f"witness/{path.name} imports {wrong}"


def test_no_import_cycles() -> None:
    modules = {_module(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps = set()
        for imported in _imports(path):
            target = imported
            while target and target not in modules and "." in target:
                target = target.rsplit(".", 1)[0]
            if target in modules and target != name:
                deps.add(target)
        graph[name] = deps

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            current = todo.pop()
            for nxt in graph[current]:
                if nxt == goal:
                    return True
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return False

    # A package's __init__ that re-exports its own modules is not a cycle worth reporting.
    cycles = sorted(
        f"{a} <-> {b}"
        for a, deps in graph.items()
        for b in deps
        if a < b and reaches(b, a) and not (b.startswith(a + ".") or a.startswith(b + "."))
    )
    assert cycles == []
