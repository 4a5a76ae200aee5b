"""Helpers shared by the tests (importable: pyproject sets pythonpath = ["tests"])."""
