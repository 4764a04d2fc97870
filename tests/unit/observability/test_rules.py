"""deploy/audit-ledger-rules.yml: valid for promtool, has the alerts the QuickCart plan asks
for, and fires (and stays quiet) as intended — proved with ``promtool test rules``."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

RULES = Path(__file__).resolve().parents[3] / "deploy" / "audit-ledger-rules.yml"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool not installed (CI installs it; locally: apt-get install prometheus, "
    "or put promtool from a Prometheus release on PATH)",
)


def _alerts() -> dict[str, dict[str, str]]:
    """``alert name -> {"expr", "for", "severity"}`` read from the rules file's text."""
    text = RULES.read_text(encoding="utf-8")
    out: dict[str, dict[str, str]] = {}
    for block in re.split(r"^\s*- alert:\s*", text, flags=re.MULTILINE)[1:]:
        name = block.splitlines()[0].strip()
        expr = re.search(r"expr:\s*(\|?)(.*?)\n\s*for:", block, flags=re.DOTALL)
        duration = re.search(r"^\s*for:\s*(\S+)", block, flags=re.MULTILINE)
        severity = re.search(r"^\s*severity:\s*(\S+)", block, flags=re.MULTILINE)
        assert expr, f"alert {name} lacks expr"
        assert duration, f"alert {name} lacks for"
        assert severity, f"alert {name} lacks a severity"
        out[name] = {
            "expr": " ".join(expr.group(2).split()),
            "for": duration.group(1),
            "severity": severity.group(1),
        }
    return out


# --- the file -----------------------------------------------------------------------------------


@needs_promtool
def test_promtool_check_rules() -> None:
    assert PROMTOOL is not None
    result = subprocess.run(
        [PROMTOOL, "check", "rules", str(RULES)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def _one(alerts: dict[str, dict[str, str]], *needles: str) -> dict[str, str]:
    found = [a for a in alerts.values() if all(n in a["expr"] for n in needles)]
    assert len(found) == 1, (needles, found)
    return found[0]


def test_required_alerts_exist_with_severities() -> None:
    alerts = _alerts()
    assert all(name.startswith("AuditLedger") for name in alerts)
    assert all(a["severity"] in {"critical", "high", "medium", "low"} for a in alerts.values())

    verify = _one(alerts, "ledger_last_verification_success", "== 0")
    assert verify["severity"] == "critical"
    assert verify["for"] == "0m"

    checkpoint = _one(
        alerts, "ledger_checkpoint_lag_entries", "ledger_seconds_since_last_checkpoint"
    )
    assert "> 300" in checkpoint["expr"]

    errors = [a for a in alerts.values() if 'ledger_appends_total{outcome="error"}' in a["expr"]]
    by_threshold = {a["expr"].rsplit(">", 1)[-1].strip(): a["severity"] for a in errors}
    assert by_threshold == {"0.01": "high", "0.05": "critical"}

    p95 = _one(alerts, "histogram_quantile(0.95", "http_request_duration_seconds_bucket")
    p99 = _one(alerts, "histogram_quantile(0.99", "http_request_duration_seconds_bucket")
    assert p95["expr"].endswith("> 2")
    assert p99["expr"].endswith("> 3")

    retention = _one(alerts, 'ledger_job_last_run_timestamp_seconds{scheduled_job="retention"}')
    assert "2 * 86400" in retention["expr"] or "172800" in retention["expr"]

    database = _one(alerts, "max(ledger_database_up) == 0")
    assert database["severity"] == "critical"

    tamper = _one(alerts, "ledger_last_incremental_verification_success", "== 0")
    assert (tamper["severity"], tamper["for"]) == ("critical", "0m")


def _annotations() -> dict[str, dict[str, str]]:
    """``alert name -> {"summary", "description"}`` (quoted one-line values)."""
    text = RULES.read_text(encoding="utf-8")
    out: dict[str, dict[str, str]] = {}
    for block in re.split(r"^\s*- alert:\s*", text, flags=re.MULTILINE)[1:]:
        name = block.splitlines()[0].strip()
        out[name] = {
            key: json.loads(m.group(1))
            for key in ("summary", "description")
            if (m := re.search(rf'^\s*{key}:\s*(".*")\s*$', block, flags=re.MULTILINE))
        }
    return out


def test_every_alert_says_what_happened_and_what_to_do_first() -> None:
    texts = _annotations()
    assert set(texts) == set(_alerts())
    for name, text in texts.items():
        assert text.get("summary"), name
        assert text.get("description"), name
        assert any(w in text["description"] for w in ("First", "Check", "check")), name
    # Its $value is the number of entries not yet covered (the left side of "and"), not a time.
    no_checkpoint = texts["AuditLedgerNoCheckpoint"]["description"]
    assert "{{ $value }} entries" in no_checkpoint
    assert "{{ $value }} seconds" not in no_checkpoint


# --- behaviour: promtool test rules -------------------------------------------------------------


def _without_annotations(text: str) -> str:
    """The rules with their ``annotations:`` blocks dropped: promtool compares annotations
    verbatim (rendered templates and all), and these tests are about expr, for and labels."""
    out: list[str] = []
    skip_deeper_than: int | None = None
    for line in text.splitlines():
        indent = len(line) - len(line.lstrip())
        if skip_deeper_than is not None:
            if line.strip() and indent <= skip_deeper_than:
                skip_deeper_than = None
            else:
                continue
        if line.strip() == "annotations:":
            skip_deeper_than = indent
            continue
        out.append(line)
    return "\n".join(out) + "\n"


def _run_promtool_test(tmp_path: Path, tests: list[dict[str, Any]], every: str = "1m") -> None:
    assert PROMTOOL is not None
    rules = tmp_path / "rules.yml"
    rules.write_text(_without_annotations(RULES.read_text(encoding="utf-8")), encoding="utf-8")
    spec = tmp_path / "rules_test.yml"
    # JSON is YAML: no YAML library needed.
    spec.write_text(
        json.dumps({"rule_files": [str(rules)], "evaluation_interval": every, "tests": tests}),
        encoding="utf-8",
    )
    result = subprocess.run(
        [PROMTOOL, "test", "rules", str(spec)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


#: ``(eval time, alert name, labels of each alert expected to fire then)``
Check = tuple[str, str, list[dict[str, str]]]


def _case(series: dict[str, str], checks: list[Check]) -> dict[str, Any]:
    """One promtool test: input series (1 m apart) and ``(eval time, alert, expected labels)``."""
    return {
        "interval": "1m",
        "input_series": [{"series": s, "values": v} for s, v in series.items()],
        "alert_rule_test": [
            {
                "eval_time": at,
                "alertname": name,
                "exp_alerts": [{"exp_labels": labels} for labels in expected],
            }
            for at, name, expected in checks
        ],
    }


HEALTHY = {
    'ledger_database_up{instance="a"}': "1x5000",
    'ledger_last_verification_success{instance="a"}': "1x5000",
    'ledger_last_verification_timestamp_seconds{instance="a"}': "0+60x5000",
    'ledger_checkpoint_size{instance="a"}': "0+10x5000",
    'ledger_log_size{instance="a"}': "0+10x5000",
    'ledger_checkpoint_lag_entries{instance="a"}': "0x5000",
    'ledger_seconds_since_last_checkpoint{instance="a"}': "30x5000",
    'ledger_job_last_run_timestamp_seconds{instance="a",scheduled_job="retention"}': "0+60x5000",
    'ledger_appends_total{instance="a",category="financial_transactions",outcome="appended"}': (
        "0+100x5000"
    ),
    # A witness keeping up: a few entries behind, cosigning every minute.
    'ledger_witness_lag_entries{instance="a",witness="w1"}': "5x5000",
    'ledger_witness_seconds_since_cosignature{instance="a",witness="w1"}': "60x5000",
    'ledger_last_incremental_verification_success{instance="a"}': "1x5000",
    'ledger_last_incremental_verification_timestamp_seconds{instance="a"}': "0+60x5000",
    'ledger_syslog_messages_dropped_total{instance="a"}': "0x5000",
    'ledger_syslog_messages_queued{instance="a"}': "3x5000",
}
ALL_ALERTS = sorted(_alerts())


@needs_promtool
def test_a_healthy_ledger_raises_no_alert(tmp_path: Path) -> None:
    checks: list[Check] = [(at, name, []) for at in ("10m", "1h", "3d") for name in ALL_ALERTS]
    _run_promtool_test(tmp_path, [_case(HEALTHY, checks)], every="5m")


@needs_promtool
def test_verification_failed_fires_at_once(tmp_path: Path) -> None:
    series = {**HEALTHY, 'ledger_last_verification_success{instance="a"}': "1x3 0x20"}
    critical = [{"severity": "critical", "instance": "a"}]
    checks = [
        ("2m", "AuditLedgerVerificationFailed", []),
        ("4m", "AuditLedgerVerificationFailed", critical),
        ("20m", "AuditLedgerVerificationFailed", critical),
    ]
    _run_promtool_test(tmp_path, [_case(series, checks)])


@needs_promtool
def test_database_unreachable(tmp_path: Path) -> None:
    down = {**HEALTHY, 'ledger_database_up{instance="a"}': "1x3 0x20"}
    critical = [{"severity": "critical"}]
    checks = [
        ("4m", "AuditLedgerDatabaseUnreachable", []),  # for: 2m
        ("6m", "AuditLedgerDatabaseUnreachable", critical),
    ]
    # No ledger_database_up at all (the service is not scraped or /metrics fails).
    gone = {k: v for k, v in HEALTHY.items() if "ledger_database_up" not in k}
    _run_promtool_test(
        tmp_path,
        [
            _case(down, checks),
            _case(
                gone,
                [
                    ("1m", "AuditLedgerDatabaseUnreachable", []),
                    ("3m", "AuditLedgerDatabaseUnreachable", critical),
                ],
            ),
        ],
    )


@needs_promtool
def test_no_checkpoint_for_five_minutes_while_growing(tmp_path: Path) -> None:
    stalled = {
        **HEALTHY,
        'ledger_checkpoint_lag_entries{instance="a"}': "0+5x30",
        'ledger_seconds_since_last_checkpoint{instance="a"}': "0+60x30",
    }
    high = [{"severity": "high"}]
    quiet = {**stalled, 'ledger_checkpoint_lag_entries{instance="a"}': "0x30"}
    _run_promtool_test(
        tmp_path,
        [
            _case(
                stalled,
                [
                    ("4m", "AuditLedgerNoCheckpoint", []),
                    ("6m", "AuditLedgerNoCheckpoint", high),
                ],
            ),
            # Nothing appended since the last checkpoint: nothing to sign, no alert.
            _case(quiet, [("20m", "AuditLedgerNoCheckpoint", [])]),
        ],
    )


@needs_promtool
def test_a_log_never_checkpointed_alerts(tmp_path: Path) -> None:
    """Entries but no checkpoint at all (no scheduler running): not silence."""
    never = {
        k: v
        for k, v in HEALTHY.items()
        if "ledger_seconds_since_last_checkpoint" not in k and "ledger_checkpoint_size" not in k
    }
    never['ledger_checkpoint_size{instance="a"}'] = "0x60"
    never['ledger_checkpoint_lag_entries{instance="a"}'] = "0+10x60"
    checks = [
        ("4m", "AuditLedgerNeverCheckpointed", []),  # the first checkpoint may take a minute
        ("30m", "AuditLedgerNeverCheckpointed", [{"severity": "high"}]),
    ]
    empty = {**never, 'ledger_checkpoint_lag_entries{instance="a"}': "0x60"}
    _run_promtool_test(
        tmp_path,
        [_case(never, checks), _case(empty, [("30m", "AuditLedgerNeverCheckpointed", [])])],
    )


def _appends(appended_per_min: int, errors_per_min: int) -> dict[str, str]:
    base = {k: v for k, v in HEALTHY.items() if "ledger_appends_total" not in k}
    base[
        'ledger_appends_total{instance="a",category="financial_transactions",outcome="appended"}'
    ] = f"0+{appended_per_min}x60"
    base['ledger_appends_total{instance="a",category="financial_transactions",outcome="error"}'] = (
        f"0+{errors_per_min}x60"
    )
    return base


@needs_promtool
@pytest.mark.parametrize(
    ("errors", "high", "critical"),
    [(0, False, False), (1, False, False), (2, True, False), (10, True, True)],
    ids=["0%", "1%", "2%", "10%"],
)
def test_append_error_rate(tmp_path: Path, errors: int, high: bool, critical: bool) -> None:
    series = _appends(100 - errors, errors)
    checks = [
        ("3m", "AuditLedgerAppendErrorRateHigh", []),  # for: 5m
        ("15m", "AuditLedgerAppendErrorRateHigh", [{"severity": "high"}] if high else []),
        (
            "15m",
            "AuditLedgerAppendErrorRateCritical",
            [{"severity": "critical"}] if critical else [],
        ),
    ]
    _run_promtool_test(tmp_path, [_case(series, checks)])


def _latency(
    fast: int, slow_bucket: str, route: str = "/v1/events", method: str = "POST"
) -> dict[str, str]:
    """100 requests a minute: ``fast`` of them under 1 s, the rest in ``slow_bucket``."""
    buckets = ("0.5", "1.0", "2.0", "3.0", "5.0", "+Inf")
    series = {}
    for le in buckets:
        count = fast if float(le.replace("+Inf", "inf")) < float(slow_bucket) else 100
        labels = f'instance="a",method="{method}",route="{route}",status_class="2xx",le="{le}"'
        series[f"http_request_duration_seconds_bucket{{{labels}}}"] = f"0+{count}x60"
    return series


@needs_promtool
@pytest.mark.parametrize(
    ("fast", "bucket", "p95", "p99"),
    [
        (100, "5.0", False, False),  # all fast
        (90, "3.0", True, False),  # p95 ≈ 2.5 s, p99 ≈ 2.9 s
        (90, "5.0", True, True),  # p95 ≈ 4 s, p99 ≈ 4.8 s
    ],
    ids=["fast", "p95-slow", "p99-slow"],
)
def test_append_latency(tmp_path: Path, fast: int, bucket: str, p95: bool, p99: bool) -> None:
    series = {**HEALTHY, **_latency(fast, bucket), **_latency(fast, bucket, "/v1/events/batch")}
    checks = [
        ("15m", "AuditLedgerAppendLatencyP95", [{"severity": "high"}] if p95 else []),
        ("15m", "AuditLedgerAppendLatencyP99", [{"severity": "critical"}] if p99 else []),
    ]
    _run_promtool_test(tmp_path, [_case(series, checks)])


@needs_promtool
def test_slow_reads_are_not_append_latency(tmp_path: Path) -> None:
    series = {**HEALTHY, **_latency(0, "5.0", route="/v1/events", method="GET")}
    checks: list[Check] = [
        ("15m", "AuditLedgerAppendLatencyP95", []),
        ("15m", "AuditLedgerAppendLatencyP99", []),
    ]
    _run_promtool_test(tmp_path, [_case(series, checks)])


@needs_promtool
def test_retention_missing_for_two_days(tmp_path: Path) -> None:
    retention = 'ledger_job_last_run_timestamp_seconds{instance="a",scheduled_job="retention"}'
    stuck = {k: (v if k != retention else "0x4000") for k, v in HEALTHY.items()}
    daily = {
        k: (v if k != retention else "0x1439 86400x1439 172800x1439") for k, v in HEALTHY.items()
    }
    high = [{"severity": "high"}]
    _run_promtool_test(
        tmp_path,
        [
            _case(
                stuck,
                [
                    ("1d", "AuditLedgerRetentionMissing", []),
                    ("2d20m", "AuditLedgerRetentionMissing", []),  # for: 30m
                    ("2d40m", "AuditLedgerRetentionMissing", high),
                ],
            ),
            _case(daily, [("2d12h", "AuditLedgerRetentionMissing", [])]),
        ],
        every="5m",
    )


@needs_promtool
def test_retention_that_never_ran_alerts(tmp_path: Path) -> None:
    """No retention run recorded at all while the database answers (no scheduler running)."""
    never = {k: v for k, v in HEALTHY.items() if 'scheduled_job="retention"' not in k}
    never['ledger_job_last_run_timestamp_seconds{instance="a",scheduled_job="verify"}'] = "0+60x200"
    _run_promtool_test(
        tmp_path,
        [
            _case(
                never,
                [
                    (
                        "2h",
                        "AuditLedgerRetentionMissing",
                        [{"severity": "high", "scheduled_job": "retention"}],
                    )
                ],
            )
        ],
    )


@needs_promtool
def test_verification_that_never_ran_alerts(tmp_path: Path) -> None:
    never = {k: v for k, v in HEALTHY.items() if "verification" not in k}
    checks = [
        ("10m", "AuditLedgerVerificationStale", []),  # for: 15m
        ("20m", "AuditLedgerVerificationStale", [{"severity": "high"}]),
    ]
    stale = {**HEALTHY, 'ledger_last_verification_timestamp_seconds{instance="a"}': "0x400"}
    late = [
        ("2h10m", "AuditLedgerVerificationStale", []),
        ("2h20m", "AuditLedgerVerificationStale", [{"severity": "high"}]),
    ]
    _run_promtool_test(tmp_path, [_case(never, checks), _case(stale, late)])


@needs_promtool
def test_a_witness_that_stops_cosigning_alerts(tmp_path: Path) -> None:
    """Lag with a cosignature older than 15 minutes (or none at all) for 5 minutes: high."""
    quiet = {k: v for k, v in HEALTHY.items() if "ledger_witness" not in k}
    stale = {
        **quiet,
        'ledger_witness_lag_entries{instance="a",witness="w1"}': "0+10x60",
        'ledger_witness_seconds_since_cosignature{instance="a",witness="w1"}': "0+60x60",
    }
    never = {**quiet, 'ledger_witness_lag_entries{instance="a",witness="w1"}': "0+10x60"}
    idle = {
        **quiet,
        'ledger_witness_lag_entries{instance="a",witness="w1"}': "0x60",
        'ledger_witness_seconds_since_cosignature{instance="a",witness="w1"}': "0+60x60",
    }
    high = [{"severity": "high", "witness": "w1"}]
    _run_promtool_test(
        tmp_path,
        [
            _case(
                stale,
                [
                    ("18m", "AuditLedgerWitnessLagging", []),  # age > 15 m since 16 m, for 5 m
                    ("22m", "AuditLedgerWitnessLagging", high),
                ],
            ),
            _case(
                never,
                [
                    ("3m", "AuditLedgerWitnessLagging", []),
                    ("8m", "AuditLedgerWitnessLagging", high),
                ],
            ),
            # Nothing appended since its last cosignature: an old cosignature is fine.
            _case(idle, [("40m", "AuditLedgerWitnessLagging", [])]),
        ],
    )


@needs_promtool
def test_tamper_detected_fires_at_once_and_only_then(tmp_path: Path) -> None:
    series = {**HEALTHY, 'ledger_last_incremental_verification_success{instance="a"}': "1x3 0x20"}
    critical = [{"severity": "critical", "instance": "a"}]
    checks = [
        ("2m", "AuditLedgerTamperDetected", []),
        ("4m", "AuditLedgerTamperDetected", critical),
        ("20m", "AuditLedgerTamperDetected", critical),
    ]
    repaired = {
        **HEALTHY,
        'ledger_last_incremental_verification_success{instance="a"}': "1x3 0x3 1x20",
    }
    _run_promtool_test(
        tmp_path,
        [
            _case(series, checks),
            _case(repaired, [("5m", "AuditLedgerTamperDetected", critical)]),
            _case(repaired, [("10m", "AuditLedgerTamperDetected", [])]),
        ],
    )


@needs_promtool
def test_incremental_verification_stale_or_never_run(tmp_path: Path) -> None:
    ts = 'ledger_last_incremental_verification_timestamp_seconds{instance="a"}'
    stuck = {**HEALTHY, ts: "0x60"}  # ran once at t=0, then never again
    never = {k: v for k, v in HEALTHY.items() if "incremental" not in k}
    high = [{"severity": "high"}]
    _run_promtool_test(
        tmp_path,
        [
            _case(
                stuck,
                [
                    ("12m", "AuditLedgerIncrementalVerificationStale", []),  # > 10 m, for 5 m
                    ("17m", "AuditLedgerIncrementalVerificationStale", high),
                ],
            ),
            _case(
                never,
                [
                    ("3m", "AuditLedgerIncrementalVerificationStale", []),
                    ("6m", "AuditLedgerIncrementalVerificationStale", high),
                ],
            ),
        ],
    )


@needs_promtool
def test_syslog_drops_and_backlog(tmp_path: Path) -> None:
    dropping = {**HEALTHY, 'ledger_syslog_messages_dropped_total{instance="a"}': "0x5 0+7x20"}
    backlog = {**HEALTHY, 'ledger_syslog_messages_queued{instance="a"}': "0x2 5000x30"}
    _run_promtool_test(
        tmp_path,
        [
            _case(
                dropping,
                [
                    ("4m", "AuditLedgerSyslogDropping", []),
                    ("8m", "AuditLedgerSyslogDropping", [{"severity": "high"}]),
                ],
            ),
            _case(
                backlog,
                [
                    ("10m", "AuditLedgerSyslogBacklog", []),  # for: 10m
                    ("14m", "AuditLedgerSyslogBacklog", [{"severity": "medium"}]),
                ],
            ),
        ],
    )
