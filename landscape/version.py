"""The package's version (recorded in every file written; `--version` of every command)."""
__version__ = "2.0.0"
