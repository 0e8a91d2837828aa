"""The code location: `fes_assets.definitions:defs`."""

from __future__ import annotations

import warnings

import dagster as dg

from .orchestration.factory import build_definitions

# BackfillPolicy and checks on partitioned assets are marked beta/preview in Dagster 1.13;
# they are what single-run backfills and per-partition checks need.
warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)

defs = build_definitions()
