"""Each id's newest new row in a run: the candidates that keep latest current without
re-reading history."""

from __future__ import annotations

from datetime import date

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# A day's rows sorted by these (created: nulls first) end with each id's winner: the newest
# event, then the newest created timestamp, then the greatest path.
ORDER = ("feature_table_id", "event_timestamp", "created_timestamp", "path_rank")


def sort_for_latest(rows: pa.Table) -> pa.Table:
    """Rows in time order within each feature table (the storage order), ties ranked so each
    id's last row is its newest."""
    return rows.sort_by([(c, "ascending", "at_start") for c in ORDER])


def path_ranks(file_ids: pa.Array, paths: dict[int, str]) -> pa.Array:
    """Each row's rank of its file's path among `paths` (file id -> path), in byte order."""
    by_path = sorted(paths, key=lambda i: paths[i].encode())
    return pc.index_in(file_ids, value_set=pa.array(by_path, pa.int64())).cast(pa.int32())


class NewestRows:
    """Hands out, day by day, each id's newest row of the run — once. Days come newest first:
    an id's first row seen is then its newest of the run, and older days can never beat it."""

    def __init__(self, keys: list[str]) -> None:
        self.keys = [*keys, "feature_table_id"]
        self._seen: pa.Table | None = None
        self._last_day: date | None = None

    def candidates(self, day: date, ordered: pa.Table) -> pa.Table:
        """The rows of `ordered` (a day, as `sort_for_latest` leaves it) that are their ids'
        newest and whose ids no newer day of this run has brought."""
        if self._last_day is not None and day >= self._last_day:
            raise ValueError(f"days must come newest first: {day} after {self._last_day}")
        self._last_day = day
        if not ordered.num_rows:
            return ordered
        numbered = ordered.select(self.keys).append_column(
            "_i", pa.array(np.arange(ordered.num_rows, dtype=np.int64))
        )
        last = numbered.group_by(self.keys).aggregate([("_i", "max")])
        if self._seen is not None and self._seen.num_rows:
            # The probe side is the run's growing set; the build side is the day's ids.
            last = self._seen.join(last, self.keys, join_type="right anti")
        index = pc.sort_indices(last.column("_i_max"))
        winners = ordered.take(pc.take(last.column("_i_max"), index))
        new_ids = winners.select(self.keys)
        self._seen = new_ids if self._seen is None else pa.concat_tables([self._seen, new_ids])
        return winners
