"""Named SQL templates from `fes_assets/core/sql/*.sql`, composed with psycopg.sql.

A template names identifiers in braces ({schema}, {rows}); values stay `%(name)s`
parameters bound at execution, never pasted into the text. Text between two `-- name:` lines
belongs to the template above it.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

from psycopg import sql

SQL_DIR = Path(__file__).parent / "sql"
_NAME = re.compile(r"^-- name: (\w+)\s*$", re.M)


@cache
def _templates(file: str) -> dict[str, str]:
    text = (SQL_DIR / f"{file}.sql").read_text()
    parts = _NAME.split(text)
    # Without the final semicolon a statement can also be wrapped as a subquery.
    return {parts[i]: parts[i + 1].strip().removesuffix(";") for i in range(1, len(parts), 2)}


def template(file: str, name: str, **parts: sql.Composable) -> sql.Composed:
    """The statement `name` of `sql/<file>.sql` with its braces filled by `parts`."""
    return sql.SQL(_templates(file)[name]).format(**parts)
