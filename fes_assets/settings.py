"""Connection settings for commands run outside Dagster: the environment first, then the
file the demo writes (`.fes/demo.env`), so `fes …` works in a second terminal."""

from __future__ import annotations

import os
from pathlib import Path

DEMO_DIR = Path(os.environ.get("FES_DEMO_DIR", ".fes"))
DEMO_ENV = DEMO_DIR / "demo.env"


class SettingsError(RuntimeError):
    pass


def demo_settings() -> dict[str, str]:
    if not DEMO_ENV.exists():
        return {}
    pairs = (line.split("=", 1) for line in DEMO_ENV.read_text().splitlines() if "=" in line)
    return {k.strip(): v.strip() for k, v in pairs}


def setting(name: str, default: str | None = None) -> str | None:
    return os.environ.get(name) or demo_settings().get(name) or default


def index_url() -> str:
    url = setting("FES_PG_URL")
    if not url:
        raise SettingsError(
            "FES_PG_URL is not set (a URL such as postgresql+psycopg://user:pw@host:5432/db), "
            "and no demo is running here"
        )
    return url
