"""`fes features`: `fes_assets.feast.historical_features` from the command line, with a
progress bar per feature view."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pyarrow as pa
from tqdm import tqdm

from ..core.errors import CommandError
from .feast_import import inside


def features_table(args: argparse.Namespace) -> pa.Table:
    try:
        from feast import FeatureStore
    except ImportError as e:  # the optional extra is not installed
        raise CommandError("fes features needs Feast: install fes_assets[feast]") from e
    from ..feast import historical_features

    repo = Path(args.repo).resolve()
    if not (repo / "feature_store.yaml").exists():
        raise CommandError(f"{repo} has no feature_store.yaml: --repo names a Feast repository")
    bars: dict[str, tqdm] = {}

    def progress(view: str, done: int, total: int) -> None:
        bar = bars.get(view)
        if bar is None:
            bar = bars[view] = tqdm(desc=view, unit="object", file=sys.stderr, leave=False)
        if done == 1:  # each look further back is a read of its own
            bar.reset(total=total)
        bar.update(done - bar.n)

    with inside(repo):
        try:
            store = FeatureStore(repo_path=str(repo))
        except Exception as e:  # Feast's own errors for a repository it cannot load
            raise CommandError(f"Feast cannot load {repo}: {e}") from e
        try:
            return historical_features(
                store,
                args.refs,
                args.start,
                args.end,
                latest=args.latest,
                as_of=args.as_of,
                full_feature_names=args.full_feature_names,
                progress=progress,
            ).to_arrow()
        finally:
            for bar in bars.values():
                bar.close()
