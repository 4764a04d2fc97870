"""``db grants``: the serving role's privileges and the purge rules written from the policy."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from audit_ledger.errors import ConfigError
from audit_ledger.ledger.retention import purge_rules
from audit_ledger.policy import load_policy
from audit_ledger.storage.grants import grant_statements

MIGRATION = Path(__file__).resolve().parents[3] / "migrations/versions/0004_owner_functions.py"


def test_no_direct_writes_on_what_the_owner_functions_guard() -> None:
    statements = grant_statements("app", purge_rules(load_policy()))
    grants = [s for s in statements if s.startswith("GRANT ")]
    for statement in grants:
        if " ON FUNCTION " in statement:
            continue
        privileges, _, rest = statement.partition(" ON ")
        tables = rest.split(" TO ")[0].split(", ")
        for guarded in ("principals", "payload_purges"):
            if guarded in tables:
                assert privileges == "GRANT SELECT", statement
        if "payloads" in tables:
            assert "DELETE" not in privileges, statement
        if "data_keys" in tables and "UPDATE" in privileges:
            assert privileges == "GRANT UPDATE (uses)", statement
    assert any("audit_ledger_purge(" in s for s in grants)


def test_purge_rules_come_from_the_policy_and_are_checked() -> None:
    statements = grant_statements("app", [("security_events", "5 years", False)])
    assert statements[-2:] == [
        "DELETE FROM audit_ledger_purge_rules",
        (
            "INSERT INTO audit_ledger_purge_rules (category, retention, erasable) VALUES"
            " ('security_events', '5 years', false)"
        ),
    ]
    for bad in (("x'; DROP TABLE entries; --", None, False), ("ok", "5 years'", False)):
        with pytest.raises(ConfigError):
            grant_statements("app", [bad])


def test_the_migration_default_rules_are_the_built_in_policy() -> None:
    spec = importlib.util.spec_from_file_location("m0004", MIGRATION)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert sorted(module.DEFAULT_RULES) == purge_rules(load_policy())
