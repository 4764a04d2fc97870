"""The messages between a :class:`~audit_ledger.ledger.workers.WorkerPool` and its workers:
length-prefixed pickles (an 8-byte big-endian length, then the pickle), exchanged only between a
process and the workers it started or forked, never with anyone else. Apart from both ends so
that neither imports the other.
"""

from __future__ import annotations

import pickle
import struct
from typing import IO, Any

_LENGTH = struct.Struct(">Q")


def send(stream: IO[bytes], message: object) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_LENGTH.pack(len(data)) + data)
    stream.flush()


def receive(stream: IO[bytes]) -> Any:
    head = stream.read(_LENGTH.size)
    if len(head) != _LENGTH.size:
        raise EOFError
    return pickle.loads(stream.read(_LENGTH.unpack(head)[0]))  # noqa: S301 - our own worker
