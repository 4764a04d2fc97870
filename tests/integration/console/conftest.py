"""Fixtures the console's tests share with the API's: a real ``serve --workers 2``."""

from tests.integration.api.test_workers import two_workers

__all__ = ["two_workers"]
