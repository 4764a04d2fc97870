"""A bot process for the outbox tests (``python -m tests.integration.outbox_bot CONFIG.json``).

It does what QuickCart's bot does with the client: for each payment ``i`` in ``[start, end)``
it logs ``payment_completed`` through a durable :class:`~audit_ledger.client.Outbox` (idempotency
key = the invoice id, occurred_at = the gateway's time, both fixed per ``i``, so a redelivered
payment is the same event), printing ``enqueued <i>`` once the event is on disk, while the
outbox's flusher runs beside it. When everything is enqueued it waits for the outbox to drain,
prints ``done <pending> <poisoned>`` and exits 0.

Config (JSON): ``url``, ``token``, ``outbox``, ``start``, ``end``, ``batch_size``,
``enqueue_delay`` (seconds between payments), ``flush_after_enqueue`` (start the flusher only
once everything is queued, so that batches are full), and ``hang_after_batches``: when set, the bot
stops dead after the response of that many ``/v1/events/batch`` requests has arrived and before
the outbox has seen it — it prints ``receipt <n>`` and sleeps — so that the test can SIGKILL it
between the ledger's commit and the deletion of the acknowledged rows.

Only the standard library and the client: no pytest, no fixtures, no server code.
"""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from audit_ledger.client import AuditLedgerClient, Outbox

EPOCH = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


def payment(i: int) -> dict[str, Any]:
    """The fields of payment ``i`` (the same every time: what a redelivery carries)."""
    return {
        "idempotency_key": f"INV-{i:06d}",
        "occurred_at": EPOCH + timedelta(seconds=i),
        "user_id": 1000 + i,
        "amount": 1000 * (i + 1),
        "payment_method": "qris",
        "order_id": f"ORD-{i:06d}",
    }


class HangingTransport(httpx.AsyncBaseTransport):
    """A real transport that freezes the process after the n-th batch answer has arrived."""

    def __init__(self, hang_after: int | None) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.hang_after = hang_after
        self.batches = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.url.path == "/v1/events/batch" and self.hang_after is not None:
            await response.aread()
            if response.status_code in {200, 201}:
                self.batches += 1
                if self.batches >= self.hang_after:
                    print(f"receipt {self.batches}", flush=True)
                    await asyncio.sleep(3600)  # the test kills us here
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


async def main(config: dict[str, Any]) -> int:
    outbox = Outbox(config["outbox"], batch_size=config["batch_size"])
    client = AuditLedgerClient(
        config["url"],
        config["token"],
        timeout=5.0,
        max_retries=2,
        backoff=0.05,
        max_backoff=0.2,
        transport=HangingTransport(config.get("hang_after_batches")),
    )
    stop = asyncio.Event()
    late = bool(config.get("flush_after_enqueue"))
    flusher = (
        None
        if late
        else asyncio.create_task(outbox.run(client, interval=0.1, max_interval=1.0, stop=stop))
    )
    for i in range(config["start"], config["end"]):
        await outbox.log(client, "payment_completed", **payment(i))
        print(f"enqueued {i}", flush=True)
        if config.get("enqueue_delay"):
            await asyncio.sleep(config["enqueue_delay"])
    if flusher is None:
        flusher = asyncio.create_task(outbox.run(client, interval=0.1, max_interval=1.0, stop=stop))
    while outbox.pending():
        await asyncio.sleep(0.05)
    stop.set()
    await flusher
    print(f"done {outbox.pending()} {len(outbox.poisoned())}", flush=True)
    await client.aclose()
    outbox.close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(json.loads(Path(sys.argv[1]).read_text()))))
