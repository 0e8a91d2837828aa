"""The `fes` command: entity ids for Feast, index status and maintenance, the demo."""

from .commands import main

__all__ = ["main"]
