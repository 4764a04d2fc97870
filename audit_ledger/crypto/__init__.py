"""Cryptography beside the core: payload envelopes, data keys and their wrapping key, blind
indexes, and the checkpoint signing key. Everything secret hides itself from ``repr``."""
