"""deploy/grafana/*.json: well-formed Grafana dashboards whose every panel query is valid PromQL
for ``promtool`` (each query becomes a recording rule that ``promtool check rules`` parses) and
names only metrics the service exports. ``tests/integration/test_dashboards_live.py`` runs the
same queries against a real Prometheus scraping a real service."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

GRAFANA = Path(__file__).resolve().parents[3] / "deploy" / "grafana"
DASHBOARDS = sorted(GRAFANA.glob("*.json"))
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed")
SOURCES = [
    Path(__file__).resolve().parents[3] / "audit_ledger" / "observability" / name
    for name in ("metrics.py", "syslog.py", "pool.py")
]


def panel_queries() -> list[tuple[str, str, str]]:
    """``(dashboard file, panel title, PromQL)`` for every target of every panel."""
    out = []
    for path in DASHBOARDS:
        board: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        for panel in board["panels"]:
            out.extend((path.name, panel["title"], t["expr"]) for t in panel["targets"])
    return out


def test_three_dashboards_with_unique_ids() -> None:
    assert [p.name for p in DASHBOARDS] == ["integrity.json", "operations.json", "retention.json"]
    boards = [json.loads(p.read_text(encoding="utf-8")) for p in DASHBOARDS]
    assert len({b["uid"] for b in boards}) == len(boards)
    for board in boards:
        assert board["panels"], board["uid"]
        assert len({p["id"] for p in board["panels"]}) == len(board["panels"])
        assert {v["name"] for v in board["templating"]["list"]} == {"datasource"}
        for panel in board["panels"]:
            assert panel["datasource"]["uid"] == "${datasource}"
            assert panel["targets"], panel["title"]
            assert panel.get("description"), panel["title"]


def _rules_file(tmp_path: Path, queries: list[str]) -> Path:
    rules = {
        "groups": [
            {
                "name": "dashboards",
                "rules": [
                    {"record": f"dashboard:query_{n}", "expr": q} for n, q in enumerate(queries)
                ],
            }
        ]
    }
    path = tmp_path / "dashboards.yml"
    path.write_text(json.dumps(rules), encoding="utf-8")  # JSON is YAML
    return path


def _promtool_check(path: Path) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@needs_promtool
def test_every_panel_query_is_valid_promql(tmp_path: Path) -> None:
    queries = [q for _, _, q in panel_queries()]
    result = _promtool_check(_rules_file(tmp_path, queries))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(queries)} rules found" in result.stdout


@needs_promtool
def test_promtool_refuses_a_broken_query(tmp_path: Path) -> None:
    result = _promtool_check(_rules_file(tmp_path, ["sum by (le (rate(x[5m]))"]))
    assert result.returncode != 0


def _exported_names() -> set[str]:
    text = "\n".join(p.read_text(encoding="utf-8") for p in SOURCES)
    names = set(re.findall(r'"((?:ledger|http|database)_[a-z_]+)"', text))
    # prometheus-client's process collector (in every registry the service renders).
    names |= {"process_cpu_seconds_total", "process_resident_memory_bytes"}
    # Histograms expose _bucket, _sum and _count series; counters are declared with _total.
    return names | {f"{n}_{s}" for n in names for s in ("bucket", "sum", "count")}


def test_panels_name_only_exported_metrics() -> None:
    exported = _exported_names()
    for board, title, query in panel_queries():
        used = set(re.findall(r"\b((?:ledger|http|database|process)_[a-z_]+)\b", query))
        assert used, (board, title)
        assert used <= exported, (board, title, used - exported)
