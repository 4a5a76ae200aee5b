"""The package version, in a module of its own: the store's reader and writer stamp it without
importing the package root (which loads the analysis, which loads the store: a cycle)."""

__version__ = "0.1.0"  # also pyproject.toml's `version`; tests/architecture checks they agree
