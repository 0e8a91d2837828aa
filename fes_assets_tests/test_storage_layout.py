"""Month-sized storage under daily partitions: what a removal or a latest catch-up touches
(counted by the server's statistics, not timed), and the move from day-sized storage."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import psycopg
import pyarrow as pa
from psycopg.rows import dict_row

from fes_assets.core.latest_candidates import NewestRows, sort_for_latest
from fes_assets.core.queries import entity_df
from fes_assets.core.storage.database import conninfo
from fes_assets.core.storage.day_writes import DayRows, replace_day
from fes_assets.core.storage.latest import catch_up_latest_in
from fes_assets.core.storage.names import EntityNames
from fes_assets_tests.conftest import drivers, drivers_registry, failure_message

NAMES_TYPES = {"driver_id": "INT64"}
HOURS = 24
IDS_PER_FILE = 500


def _hourly_files(lab, first: date, days: int) -> None:
    """Every hour of every day, one file of the same 500 drivers (hourly files split a day
    by time, as Feast's offline data usually is)."""
    for i in range(days):
        day = first + timedelta(days=i)
        for hour in range(HOURS):
            at = datetime(day.year, day.month, day.day, hour, tzinfo=UTC)
            ids = list(range(IDS_PER_FILE))
            lab.put(f"d/{day}/{hour:02d}.parquet", drivers(ids, [at] * len(ids)))


def _touched(conn: psycopg.Connection) -> dict[str, dict[str, int]]:
    """This transaction's row reads and deletes per storage partition."""
    rows = conn.execute(
        "SELECT relname, coalesce(seq_tup_read, 0) AS seq, coalesce(idx_tup_fetch, 0) AS idx, "
        "n_tup_del AS deleted FROM pg_stat_xact_user_tables "
        "WHERE schemaname = current_schema() AND relname LIKE '\\_e\\_driver\\_id\\_%%'"
    ).fetchall()
    return {r["relname"]: {k: r[k] for k in ("seq", "idx", "deleted")} for r in rows}


def test_removing_one_file_reads_its_rows_not_the_month_and_latest_recomputes_in_one_month(lab):
    lab.use_registry(drivers_registry())
    _hourly_files(lab, date(2021, 3, 30), 4)  # March 30 and 31, April 1 and 2
    result = lab.materialize("driver_id", ("2021-03-30", "2021-04-02"))
    assert result.success, failure_message(result)
    (file_id,) = lab.sql("SELECT id FROM files WHERE key = 'd/2021-04-02/23.parquet'")[0]
    names = EntityNames.of(lab.schema, "driver_id", NAMES_TYPES)
    month_rows = 2 * HOURS * IDS_PER_FILE

    with psycopg.connect(conninfo(lab.pg_url), row_factory=dict_row) as conn:
        conn.execute(f'SET search_path TO "{lab.schema}"')
        replace_day(conn, names, date(2021, 4, 2), DayRows(0, None, None), file_ids=[file_id])
        touched = _touched(conn)["_e_driver_id_202104"]
        assert touched["deleted"] == IDS_PER_FILE
        # Only the file's pages: no scan of the month, at most the two BRIN ranges (8 pages
        # each) its rows begin and end in.
        pages = conn.execute(
            "SELECT pg_relation_size('_e_driver_id_202104') / current_setting('block_size')::int"
        ).fetchone()["?column?"]
        edges = 2 * 8 * month_rows / pages
        assert touched["seq"] == 0, touched
        assert touched["idx"] <= IDS_PER_FILE + edges < month_rows / 4, (touched, edges)
        # Every id's latest row went with the file: latest recomputes them from history, in
        # the newest month alone, and finds their 22:00 rows.
        stats = catch_up_latest_in(lab.db, conn, names, datetime.now(UTC))
        assert stats["recomputed_ids"] == IDS_PER_FILE
        after = _touched(conn)
        older = after.get("_e_driver_id_202103", {"seq": 0, "idx": 0})
        assert older["seq"] == older["idx"] == 0, after
        assert after["_e_driver_id_202104"]["seq"] <= month_rows, after
        newest = conn.execute("SELECT DISTINCT event_timestamp FROM _l_driver_id").fetchall()
        assert [r["event_timestamp"] for r in newest] == [datetime(2021, 4, 2, 22, tzinfo=UTC)]
        conn.rollback()


def test_ids_whose_every_row_went_are_recomputed_from_the_years_they_had_rows_in_only(lab):
    lab.use_registry(drivers_registry(), start="2020-01-01")
    for day in ("2020-06-15", "2021-03-15", "2021-04-15"):  # drivers 0..99
        at = datetime.fromisoformat(day).replace(hour=6, tzinfo=UTC)
        lab.put(f"d/{day}.parquet", drivers(list(range(100)), [at] * 100))
    gone_ids = list(range(1000, 1200))  # found in one file of February 2020 only
    gone_at = [datetime(2020, 2, 10, 6, tzinfo=UTC)] * len(gone_ids)
    lab.put("d/2020-02-10-gone.parquet", drivers(gone_ids, gone_at))
    result = lab.materialize("driver_id", ("2020-02-10", "2021-04-15"))
    assert result.success, failure_message(result)
    (file_id,) = lab.sql("SELECT id FROM files WHERE key = 'd/2020-02-10-gone.parquet'")[0]
    trail = "SELECT year, count(*) FROM _t_driver_id GROUP BY year ORDER BY year"
    assert lab.sql(trail) == [(2020, 300), (2021, 100)]
    names = EntityNames.of(lab.schema, "driver_id", NAMES_TYPES)

    with psycopg.connect(conninfo(lab.pg_url), row_factory=dict_row) as conn:
        conn.execute(f'SET search_path TO "{lab.schema}"')
        replace_day(conn, names, date(2020, 2, 10), DayRows(0, None, None), file_ids=[file_id])
        before = _touched(conn)
        stats = catch_up_latest_in(lab.db, conn, names, datetime.now(UTC))
        assert stats["recomputed_ids"] == len(gone_ids)
        after = _touched(conn)
        read = {
            name: after[name]["seq"]
            + after[name]["idx"]
            - before.get(name, {}).get("seq", 0)
            - before.get(name, {}).get("idx", 0)
            for name in after
        }
        # 2020 alone is read (its months' 100 remaining rows), not the newer year above it.
        assert {name for name, n in read.items() if n} == {"_e_driver_id_202006"}, read
        assert sum(read.values()) <= 100
        left = conn.execute(
            "SELECT count(*) AS n FROM _l_driver_id WHERE driver_id >= 1000"
        ).fetchone()
        assert left["n"] == 0
        # 2020 without them: the trail forgets them, so no later recompute reads it again.
        years = conn.execute("SELECT year FROM _t_driver_id WHERE driver_id >= 1000").fetchall()
        assert years == []
        conn.rollback()


def test_an_index_stored_by_day_moves_to_months_on_the_next_run_and_answers_the_same(lab):
    lab.use_registry(drivers_registry())
    for day, ids in (("2021-03-31", [1, 2]), ("2021-04-01", [2, 3]), ("2021-04-02", [4])):
        at = datetime.fromisoformat(day).replace(hour=6, tzinfo=UTC)
        lab.put(f"d/{day}.parquet", drivers(ids, [at] * len(ids)))
    assert lab.materialize("driver_id", ("2021-03-31", "2021-04-02")).success
    before = lab.ids("entity_driver_id", "driver_id", "event_timestamp", "path")

    # Storage as releases before months kept it: a partition per day, the BRIN index on time.
    _script(
        lab,
        """
        DO $$
        DECLARE m record; d date;
        BEGIN
          FOR m IN SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                   WHERE i.inhparent = '_e_driver_id'::regclass LOOP
            EXECUTE format('ALTER TABLE _e_driver_id DETACH PARTITION %I', m.relname);
            FOR d IN EXECUTE format('SELECT DISTINCT event_timestamp::date FROM %I', m.relname)
            LOOP
              EXECUTE format('CREATE TABLE %I PARTITION OF _e_driver_id FOR VALUES FROM (%L) '
                             'TO (%L)', '_e_driver_id_' || to_char(d, 'YYYYMMDD'),
                             d::timestamptz, (d + 1)::timestamptz);
              EXECUTE format('INSERT INTO _e_driver_id SELECT * FROM %I '
                             'WHERE event_timestamp::date = %L', m.relname, d);
            END LOOP;
            EXECUTE format('DROP TABLE %I', m.relname);
          END LOOP;
        END $$;
        DROP INDEX _e_driver_id_brin;
        CREATE INDEX _e_driver_id_time ON _e_driver_id
            USING brin (feature_table_id, event_timestamp);
        DROP TABLE _t_driver_id;
        DELETE FROM meta WHERE key = 'layout';
        """,
    )
    assert len(_children(lab)) == 3 and all(
        len(c) == len("_e_driver_id_20210331") for c in _children(lab)
    )

    lab.put("d/2021-04-03.parquet", drivers([5], [datetime(2021, 4, 3, 6, tzinfo=UTC)]))
    result = lab.materialize("driver_id", "2021-04-03")
    assert result.success, failure_message(result)
    assert _children(lab) == ["_e_driver_id_202103", "_e_driver_id_202104"]
    assert lab.ids("entity_driver_id", "driver_id", "event_timestamp", "path") == sorted(
        [
            *before,
            (5, datetime(2021, 4, 3, 6, tzinfo=UTC), f"s3://{lab.bucket}/d/2021-04-03.parquet"),
        ]
    )
    indexes = {
        r[0] for r in lab.sql("SELECT indexname FROM pg_indexes WHERE tablename = '_e_driver_id'")
    }
    assert indexes == {"_e_driver_id_brin"}
    trail = lab.sql("SELECT driver_id, year FROM _t_driver_id ORDER BY 1, 2")
    assert trail == [(1, 2021), (2, 2021), (3, 2021), (4, 2021), (5, 2021)]
    window = entity_df(
        "driver_hourly_stats", "2021-04-01", "2021-04-03", url=lab.pg_url, schema=lab.schema
    )
    assert sorted(window["driver_id"]) == [2, 3, 4]


def _script(lab, text: str) -> None:
    with psycopg.connect(conninfo(lab.pg_url), autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{lab.schema}"')
        conn.execute(text.encode())  # bytes: no placeholders to look for


def _children(lab) -> list[str]:
    return sorted(
        r[0]
        for r in lab.sql(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = '_e_driver_id'::regclass"
        )
    )


def test_a_long_run_remembers_a_bounded_number_of_ids_and_hands_forgotten_ones_out_again():
    newest = NewestRows(["driver_id"], remember=2)

    def day_of(ids: list[int]) -> pa.Table:
        n = len(ids)
        rows = pa.table(
            {
                "driver_id": pa.array(ids, pa.int64()),
                "feature_table_id": pa.array([1] * n, pa.int16()),
                "event_timestamp": pa.array([datetime(2021, 4, 1, tzinfo=UTC)] * n, data_ts()),
                "created_timestamp": pa.nulls(n, data_ts()),
                "path_rank": pa.array([0] * n, pa.int32()),
            }
        )
        return sort_for_latest(rows)

    handed = [
        sorted(newest.candidates(date(2021, 4, d), day_of(ids))["driver_id"].to_pylist())
        for d, ids in ((10, [1, 2]), (9, [1, 3]), (8, [1, 3]))
    ]
    # Day 9 knows 1 from day 10; by day 8 only day 9's id (3) is remembered, so 1 comes again.
    assert handed == [[1, 2], [3], [1]]


def data_ts() -> pa.DataType:
    return pa.timestamp("us", tz="UTC")


def test_a_day_partition_made_by_an_earlier_release_during_the_upgrade_is_moved_not_stuck(lab):
    lab.use_registry(drivers_registry())
    lab.put("d/a.parquet", drivers([1], [datetime(2021, 4, 1, 6, tzinfo=UTC)]))
    assert lab.materialize("driver_id", "2021-04-01").success
    # A run of the earlier release, still going while this one took over, made a day of May.
    _script(
        lab,
        "CREATE TABLE _e_driver_id_20210501 PARTITION OF _e_driver_id "
        "FOR VALUES FROM ('2021-05-01 00:00+00') TO ('2021-05-02 00:00+00');"
        "INSERT INTO _e_driver_id_20210501 SELECT driver_id, feature_table_id, "
        "'2021-05-01 06:00+00', created_timestamp, file_id FROM _e_driver_id",
    )
    lab.put("d/b.parquet", drivers([2], [datetime(2021, 5, 2, 6, tzinfo=UTC)]))
    first = lab.materialize("driver_id", "2021-05-02")
    assert not first.success and "the next run moves them" in failure_message(first)
    again = lab.materialize("driver_id", "2021-05-02")
    assert again.success, failure_message(again)
    assert _children(lab) == ["_e_driver_id_202104", "_e_driver_id_202105"]
    assert lab.ids("entity_driver_id", "driver_id", "event_timestamp") == [
        (1, datetime(2021, 4, 1, 6, tzinfo=UTC)),
        (1, datetime(2021, 5, 1, 6, tzinfo=UTC)),
        (2, datetime(2021, 5, 2, 6, tzinfo=UTC)),
    ]
    # The moved day's rows are in the trail: a recompute of driver 1 reads 2021.
    assert (1, 2021) in lab.sql("SELECT driver_id, year FROM _t_driver_id")
