"""Every identifier belonging to one entity key, and the SQL fragments built from them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from psycopg import sql

from ..registry import VALUE_TYPES, Registry


@dataclass(frozen=True)
class EntityNames:
    schema: str
    key: str
    join_keys: list[str]
    types: dict[str, str]

    @classmethod
    def of(cls, schema: str, key: str, types: dict[str, str]) -> EntityNames:
        return cls(schema, key, sorted(types), dict(types))

    @classmethod
    def from_registry(cls, schema: str, registry: Registry, key: str) -> EntityNames:
        return cls.of(schema, key, registry.entity_types(key))

    @property
    def entity_view(self) -> str:
        return f"entity_{self.key}"

    @property
    def latest_view(self) -> str:
        return f"latest_{self.key}"

    @property
    def rows(self) -> str:
        return f"_e_{self.key}"

    @property
    def latest_table(self) -> str:
        return f"_l_{self.key}"

    @property
    def changes(self) -> str:
        return f"_c_{self.key}"

    @property
    def trail(self) -> str:
        """The months each id has rows in (or had: a superset), so a latest recompute reads
        those months only."""
        return f"_t_{self.key}"

    def partition(self, day: date) -> str:
        """The storage partition holding `day`: one a month, so decades stay a few hundred
        relations (a query locks every partition it may read)."""
        return f"_e_{self.key}_{day:%Y%m}"

    def parts(self, **extra: sql.Composable) -> dict[str, sql.Composable]:
        ids = [sql.Identifier(k) for k in self.join_keys]

        def qualified(alias: str) -> sql.Composable:
            return sql.SQL(", ").join(sql.Identifier(alias, k) for k in self.join_keys)

        def equal(a: str, b: str) -> sql.Composable:
            return sql.SQL(" AND ").join(
                sql.SQL("{} = {}").format(sql.Identifier(a, k), sql.Identifier(b, k))
                for k in self.join_keys
            )

        return {
            "schema": sql.Identifier(self.schema),
            "rows": sql.Identifier(self.rows),
            "latest_table": sql.Identifier(self.latest_table),
            "changes": sql.Identifier(self.changes),
            "trail": sql.Identifier(self.trail),
            "entity_view": sql.Identifier(self.entity_view),
            "latest_view": sql.Identifier(self.latest_view),
            "rows_time_index": sql.Identifier(f"{self.rows}_brin"),
            "old_rows_time_index": sql.Identifier(f"{self.rows}_time"),
            "rows_id_index": sql.Identifier(f"{self.rows}_ids"),
            "id_columns": sql.SQL(", ").join(
                sql.SQL("{} {} NOT NULL").format(
                    sql.Identifier(k), sql.SQL(VALUE_TYPES[self.types[k]])
                )
                for k in self.join_keys
            ),
            "id_list": sql.SQL(", ").join(ids),
            "r_ids": qualified("r"),
            "l_eq_c": equal("l", "c"),
            "r_eq_c": equal("r", "c"),
            "m_eq_c": equal("m", "c"),
            "t_eq_c": equal("t", "c"),
            "g_ids": qualified("g"),
            "l_eq_g": equal("l", "g"),
            "c_eq_g": equal("c", "g"),
            **extra,
        }


def partition_month(name: str) -> date:
    """The first day of the month a storage partition lies in, from its name: months
    (`_YYYYMM`), and days (`_YYYYMMDD`) of indexes not yet moved to months."""
    suffix = name.rpartition("_")[2]
    return date(int(suffix[:4]), int(suffix[4:6]), 1)
