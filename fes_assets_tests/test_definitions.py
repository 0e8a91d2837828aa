"""The code location loads from the repository root with the documented settings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url

from fes_assets.core.storage.database import conninfo

ROOT = Path(__file__).resolve().parents[1]


def test_dagster_definitions_validate(pg_url):
    with psycopg.connect(conninfo(pg_url), autocommit=True) as conn:
        if not conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = 'dagster_validate'"
        ).fetchone():
            conn.execute("CREATE DATABASE dagster_validate")
    dagster_url = make_url(pg_url).set(
        drivername="postgresql+psycopg2", database="dagster_validate"
    )
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/tmp"),
        "FES_PG_URL": pg_url,
        "DAGSTER_PG_URL": dagster_url.render_as_string(hide_password=False),
    }
    done = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Validation successful" in done.stdout + done.stderr
