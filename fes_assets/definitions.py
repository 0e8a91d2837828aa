"""The code location: `fes_assets.definitions:defs`."""

from __future__ import annotations

from .orchestration.factory import build_definitions

defs = build_definitions()
