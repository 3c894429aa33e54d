"""The tiny run fixture moved up to tests/conftest.py (shared with the registry, export and serving tests)."""

from tests.conftest import tiny_cfg  # noqa: F401 - tests import it from here
