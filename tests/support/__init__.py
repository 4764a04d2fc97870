"""Helpers shared by the test modules: servers (in-process and real), the CLI, event factories,
worker processes and polling. Fixtures that wrap them live in the ``conftest.py`` files."""
