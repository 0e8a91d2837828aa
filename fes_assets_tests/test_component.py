"""fes in a host `dg` project: `dg scaffold defs fes_assets.EntityIndexComponent`, `dg check
defs` without a reachable database, then the project's definitions materialize a partition
against the test servers, and the component builds the code location's graph."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import yaml

from fes_assets.orchestration.assets import entity_asset_key, latest_asset_key
from fes_assets_tests.conftest import ACCESS_KEY, SECRET_KEY, T0, drivers, drivers_registry
from fes_assets_tests.graph_snapshot import describe_graph

ROOT = Path(__file__).resolve().parents[1]
SNAPSHOT = Path(__file__).parent / "snapshots" / "asset_graph.json"
PYPROJECT = """\
[project]
name = "hostproj"
version = "0.1.0"
requires-python = ">=3.11"
dependencies = ["dagster", "fes_assets"]

[tool.dg]
directory_type = "project"

[tool.dg.project]
root_module = "hostproj"
"""
DEFINITIONS = """\
from pathlib import Path

import dagster as dg


@dg.definitions
def defs() -> dg.Definitions:
    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
"""


def host_project(folder: Path) -> Path:
    """A project as `dg scaffold project` lays it out, written by hand (no network)."""
    (folder / "hostproj" / "defs").mkdir(parents=True)
    (folder / "pyproject.toml").write_text(PYPROJECT)
    (folder / "hostproj" / "__init__.py").write_text("")
    (folder / "hostproj" / "defs" / "__init__.py").write_text("")
    (folder / "hostproj" / "definitions.py").write_text(DEFINITIONS)
    return folder


def dg_cli(project: Path, *args: str) -> subprocess.CompletedProcess:
    bin_dir = str(Path(sys.executable).parent)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FES_", "AWS_", "DAGSTER_"))}
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    env["VIRTUAL_ENV"] = str(Path(bin_dir).parent)
    done = subprocess.run(
        [str(Path(bin_dir) / "dg"), *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def test_scaffold_check_and_materialize_in_a_host_project(lab, tmp_path, monkeypatch):
    project = host_project(tmp_path / "host")
    dg_cli(project, "scaffold", "defs", "fes_assets.EntityIndexComponent", "fes_index")
    component = project / "hostproj" / "defs" / "fes_index"
    written = yaml.safe_load((component / "defs.yaml").read_text())
    assert written["type"] == "fes_assets.EntityIndexComponent"
    assert written["attributes"]["database_url_env"] == "FES_PG_URL"
    # As written (the example registry beside it), with no database anywhere.
    assert "All definitions loaded successfully" in dg_cli(project, "check", "defs").stdout

    # The scaffolded component builds exactly the code location's graph.
    monkeypatch.syspath_prepend(str(project))
    defs = dg.load_from_defs_folder(path_within_project=project / "hostproj")
    assert describe_graph(defs) == json.loads(SNAPSHOT.read_text())
    assert defs.executor is None  # nothing project-wide is imposed on the host

    # Pointed at the test servers through its attributes and variables of its own choosing.
    lab.use_registry(drivers_registry())
    lab.write_registry(component)
    written["attributes"] |= {
        "schema_name": lab.schema,
        "database_url_env": "HOST_INDEX_URL",
        "s3_endpoint_url_env": "HOST_S3_ENDPOINT",
        "s3_access_key_id_env": "HOST_S3_KEY",
        "s3_secret_access_key_env": "HOST_S3_SECRET",
    }
    (component / "defs.yaml").write_text(yaml.safe_dump(written))
    monkeypatch.setenv("HOST_INDEX_URL", lab.pg_url)
    monkeypatch.setenv("HOST_S3_ENDPOINT", lab.endpoint)
    monkeypatch.setenv("HOST_S3_KEY", ACCESS_KEY)
    monkeypatch.setenv("HOST_S3_SECRET", SECRET_KEY)
    lab.put("d/a.parquet", drivers([1, 2], [T0, T0]))
    defs = dg.load_from_defs_folder(path_within_project=project / "hostproj")
    assert set(defs.resources) == {"fes_object_store", "fes_index_db"}
    keys = [entity_asset_key("driver_id"), latest_asset_key("driver_id")]
    result = dg.materialize(
        [defs.get_assets_def(k) for k in keys],
        resources=defs.resources,
        instance=lab.instance,
        partition_key="2021-04-01",
    )
    assert result.success
    assert lab.ids("entity_driver_id", "driver_id") == [(1,), (2,)]
    assert lab.ids("latest_driver_id", "driver_id") == [(1,), (2,)]
    # The config the UI shows names the secret's variable, never its value.
    assert SECRET_KEY not in (component / "defs.yaml").read_text()
    assert SECRET_KEY not in repr(defs.resources["fes_object_store"])
