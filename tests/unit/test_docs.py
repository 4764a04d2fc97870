"""The newcomer's path (issue #12 item 8): the README and ``docs/`` point only at files inside
the repository, every relative link resolves, and the normative sections users need are here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_links_stay_inside_the_repository_and_resolve(doc: Path) -> None:
    text = doc.read_text(encoding="utf-8")
    assert "../shared" not in text
    assert "/work/" not in text
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        resolved = (doc.parent / target).resolve()
        assert resolved.is_relative_to(ROOT), (doc.name, target)
        assert resolved.exists(), (doc.name, target)


def test_the_normative_sections_are_in_docs() -> None:
    fmt = (ROOT / "docs" / "format.md").read_text(encoding="utf-8")
    api = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    assert "## 3. Ledger format v1 (normative)" in fmt
    assert "**Checkpoints (C2SP tlog-checkpoint + signed-note, Ed25519).**" in fmt
    assert "## 4. HTTP API v1 (normative" in api
    assert "## 7. Interop with the C2SP transparency ecosystem (normative)" in api
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "(docs/format.md)" in readme
    assert "(docs/api.md)" in readme
    assert "scripts/serve --port" in readme
