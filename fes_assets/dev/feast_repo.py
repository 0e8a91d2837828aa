"""A local Feast repository's `feature_store.yaml` (file offline store, SQLite online store),
for the demo's users, the tests and the benchmark."""

from __future__ import annotations

from pathlib import Path

FEATURE_STORE_YAML = """\
project: {project}
registry: {folder}/registry.db
provider: local
offline_store:
  type: file
online_store:
  type: sqlite
  path: {folder}/online.db
entity_key_serialization_version: 3
"""


def write_feature_store_yaml(folder: Path, project: str) -> Path:
    """`folder/feature_store.yaml`, with the registry and online store inside `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "feature_store.yaml"
    path.write_text(FEATURE_STORE_YAML.format(project=project, folder=folder))
    return path
