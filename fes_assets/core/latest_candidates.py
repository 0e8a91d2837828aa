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


# How many of the run's newest days an id is looked up in before it is a candidate again. A
# repeat candidate is harmless (latest keeps the greater), while looking each day up in every
# id the run has seen made a long backfill's days cost more and more.
SEEN_DAYS = 7


class NewestRows:
    """Hands out, day by day, each id's newest row of the run. Days come newest first: an id's
    first row seen is then its newest of the run, and older days can never beat it; an id seen
    within the last `SEEN_DAYS` days handed out is not handed out again."""

    def __init__(self, keys: list[str]) -> None:
        self.keys = [*keys, "feature_table_id"]
        self._seen: deque[pa.Table] = deque(maxlen=SEEN_DAYS)
        self._last_day: date | None = None

    def candidates(self, day: date, ordered: pa.Table) -> pa.Table:
        """The rows of `ordered` (a day, as `sort_for_latest` leaves it) that are their ids'
        newest and whose ids no recent newer day of this run has brought."""
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
            # The probe side is the recent days' ids; the build side is the day's ids.
            seen = pa.concat_tables(self._seen)
            last = seen.join(last, self.keys, join_type="right anti")
        index = pc.sort_indices(last.column("_i_max"))
        winners = ordered.take(pc.take(last.column("_i_max"), index))
        self._seen.append(winners.select(self.keys))
        return winners
