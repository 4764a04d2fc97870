"""audit-ledger: an append-only, hash-chained, Merkle-tree compliance audit ledger.

Layers (imports point down only): ``core`` (pure format, hashes, Merkle, checkpoints, verify),
``crypto`` (envelopes, key ring, blind index, signing), ``storage`` (SQLAlchemy), ``ledger``
(use cases), and thin shells: ``api``, ``cli``, ``scheduler``.
"""

__version__ = "0.1.0"
