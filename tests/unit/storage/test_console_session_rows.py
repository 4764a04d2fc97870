"""The ``console_sessions`` repository on both backends: ``seen_at`` only moves forward (two
workers may touch one session at once), an ended session is neither touched nor ended again,
and the sweep deletes idle and too-old rows only."""

from __future__ import annotations

import hashlib

from audit_ledger.ledger.service import Ledger


def sid(n: int) -> bytes:
    return hashlib.sha256(str(n).encode()).digest()


def test_touch_end_and_sweep(ledger: Ledger) -> None:
    store = ledger.store
    store.insert_console_session(sid(1), "officer", b"t" * 32, 1000)
    store.touch_console_session(sid(1), 1100)
    store.touch_console_session(sid(1), 1050)  # a slower worker's older "now"
    row = store.console_session(sid(1))
    assert row is not None
    assert (row.seen_at, row.token_hash) == (1100, b"t" * 32)
    store.end_console_session(sid(1), 1200)
    store.end_console_session(sid(1), 1300)
    store.touch_console_session(sid(1), 1400)
    row = store.console_session(sid(1))
    assert row is not None
    assert (row.ended_at, row.seen_at) == (1200, 1100)
    assert store.console_session(sid(2)) is None
    store.insert_console_session(sid(2), "officer", b"t" * 32, 500)  # issued long ago
    store.insert_console_session(sid(3), "officer", b"t" * 32, 2000)
    store.touch_console_session(sid(2), 2000)
    assert store.sweep_console_sessions(seen_before=1101, issued_before=600) == 2
    assert [store.console_session(sid(n)) is None for n in (1, 2, 3)] == [True, True, False]
