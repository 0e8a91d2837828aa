"""The code location: `fes_assets.definitions:defs`."""

from __future__ import annotations

import warnings

import dagster as dg

from .orchestration.factory import build_definitions

# This code location is fes's own process: the beta/preview notices of the features its runs
# rely on (single-run backfills, checks on partitioned assets) are known and expected.
warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)

defs = build_definitions()
