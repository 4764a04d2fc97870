"""A real Prometheus server (Debian's ``prometheus``) for the alerting and dashboard tests: it
scrapes one target every second and evaluates deploy/audit-ledger-rules.yml every second."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx

from tests.support.polling import wait_until
from tests.support.servers import free_port

PROMETHEUS = shutil.which("prometheus")
RULES = Path(__file__).resolve().parents[2] / "deploy" / "audit-ledger-rules.yml"


class Prometheus:
    """A Prometheus server scraping one target every second, with our alert rules."""

    def __init__(self, directory: Path, target: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = directory / "prometheus.yml"
        # JSON is YAML.
        config.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            f"rule_files: ['{RULES}']\n"
            "scrape_configs:\n"
            "  - job_name: audit-ledger\n"
            f"    static_configs: [{{targets: ['{target}']}}]\n",
            encoding="utf-8",
        )
        self.log = directory / "prometheus.log"
        assert PROMETHEUS is not None
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [
                    PROMETHEUS,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={directory / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait_until(self._ready, timeout=60, message="prometheus ready")

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(self.log.read_text("utf-8", errors="replace")[-2000:])
        try:
            return httpx.get(self.url + "/-/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def query(self, query: str) -> dict[str, Any]:
        """The API's answer to an instant query (``status``, ``data`` or ``error``)."""
        answer: dict[str, Any] = httpx.get(
            self.url + "/api/v1/query", params={"query": query}, timeout=5
        ).json()
        return answer

    def value(self, query: str) -> float | None:
        result = self.query(query)["data"]["result"]
        return float(result[0]["value"][1]) if result else None

    def firing(self, alert: str) -> bool:
        body: dict[str, Any] = httpx.get(self.url + "/api/v1/alerts", timeout=5).json()
        return any(
            a["labels"]["alertname"] == alert and a["state"] == "firing"
            for a in body["data"]["alerts"]
        )

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=20)
