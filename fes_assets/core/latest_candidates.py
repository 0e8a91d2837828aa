"""Each id's newest new row in a run: the candidates that keep latest current without
re-reading history."""

from __future__ import annotations

from collections import deque
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


# How many ids a run remembers having handed out. Each day's ids are looked up in them, so a
# long backfill's days would cost more and more; past this, the oldest days' ids are
# forgotten, and such an id may be handed out again (harmless: latest keeps the greater).
SEEN_IDS = 1_000_000


class NewestRows:
    """Hands out, day by day, each id's newest row of the run. Days come newest first: an id's
    first row seen is then its newest of the run, and older days can never beat it; an id
    handed out is not handed out again while it is among the last `SEEN_IDS` handed out."""

    def __init__(self, keys: list[str], remember: int = SEEN_IDS) -> None:
        self.keys = [*keys, "feature_table_id"]
        self.remember = remember
        self._seen: deque[pa.Table] = deque()  # the ids each day handed out, newest last
        self._seen_rows = 0
        self._last_day: date | None = None

    def candidates(self, day: date, ordered: pa.Table) -> pa.Table:
        """The rows of `ordered` (a day, as `sort_for_latest` leaves it) that are their ids'
        newest and whose ids no newer day of this run has handed out."""
        if self._last_day is not None and day >= self._last_day:
            raise ValueError(f"days must come newest first: {day} after {self._last_day}")
        self._last_day = day
        if not ordered.num_rows:
            return ordered
        numbered = ordered.select(self.keys).append_column(
            "_i", pa.array(np.arange(ordered.num_rows, dtype=np.int64))
        )
        last = numbered.group_by(self.keys).aggregate([("_i", "max")])
        if self._seen:
            # The probe side is the remembered ids; the build side is the day's ids.
            last = pa.concat_tables(self._seen).join(last, self.keys, join_type="right anti")
        index = pc.sort_indices(last.column("_i_max"))
        winners = ordered.take(pc.take(last.column("_i_max"), index))
        self._remember(winners.select(self.keys))
        return winners

    def _remember(self, ids: pa.Table) -> None:
        self._seen.append(ids)
        self._seen_rows += ids.num_rows
        while len(self._seen) > 1 and self._seen_rows > self.remember:
            self._seen_rows -= self._seen.popleft().num_rows
