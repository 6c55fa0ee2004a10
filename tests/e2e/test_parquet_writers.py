"""Parquet task files as real writers produce them (pyarrow, pandas through
pyarrow, polars' own writer, DuckDB's own writer), imported through a GCS
storage by the official SDK: every value of every type comes back exactly
(docs/compatibility.md lists the JSON each type gives)."""

from __future__ import annotations

import datetime as dt
import decimal
import io
import uuid

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pandas as pd

from test_sdk_storage import CONFIG, all_tasks, make_project, sync_and_wait  # noqa: F401 (fixture)


def parquet(table: pa.Table) -> bytes:
    out = io.BytesIO()
    pq.write_table(table, out)
    return out.getvalue()


def pyarrow_table() -> pa.Table:
    berlin = pa.timestamp("ms", tz="Europe/Berlin")
    return pa.table(
        {
            "ts_utc": pa.array([dt.datetime(2024, 1, 1, 12, tzinfo=dt.timezone.utc)], pa.timestamp("us", tz="UTC")),
            "ts_berlin": pa.array([dt.datetime(2024, 1, 1, 12, tzinfo=dt.timezone.utc)], berlin),
            "date": pa.array([dt.date(2024, 1, 1)], pa.date32()),
            "time": pa.array([dt.time(12, 34, 56, 1)], pa.time64("us")),
            "duration": pa.array([dt.timedelta(seconds=90)], pa.duration("s")),
            "decimal": pa.array([decimal.Decimal("1234567890123456789.0123456789")], pa.decimal128(38, 10)),
            "big": pa.array([2**53 + 1], pa.int64()),
            "ubig": pa.array([2**64 - 1], pa.uint64()),
            "bin": pa.array([b"\x00\xffab"], pa.binary()),
            "fixed": pa.array([b"\x01\x02"], pa.binary(2)),
            "dict": pa.array(["cat"]).dictionary_encode(),
            "large": pa.array(["ü"], pa.large_string()),
            "map": pa.array([[("a", 1)]], pa.map_(pa.string(), pa.int32())),
            "nested": pa.array([[[1, None], []]], pa.list_(pa.list_(pa.int32()))),
            "struct": pa.array([{"image": "gs://x/1.png", "n": 1}]),
            "nothing": pa.array([None], pa.null()),
        }
    )


PYARROW_ROW = {
    "ts_utc": "2024-01-01T12:00:00Z",
    "ts_berlin": "2024-01-01T13:00:00+01:00",
    "date": "2024-01-01",
    "time": "12:34:56.000001",
    "duration": "PT90S",
    "decimal": "1234567890123456789.0123456789",
    "big": 2**53 + 1,
    "ubig": 2**64 - 1,
    "bin": "00ff6162",
    "fixed": "0102",
    "dict": "cat",
    "large": "ü",
    "map": {"a": 1},
    "nested": [[1, None], []],
    "struct": {"image": "gs://x/1.png", "n": 1},
    "nothing": None,
}


def pandas_table() -> pa.Table:
    frame = pd.DataFrame(
        {
            # What pandas writes for aware datetimes: ns with a named zone.
            "when": pd.to_datetime(["2024-01-01T12:00:00"]).tz_localize("UTC"),
            "local": pd.to_datetime(["2024-06-01T08:30:00"]).tz_localize("Europe/Berlin"),
            "label": pd.Categorical(["dog"]),
            "score": [0.25],
            "count": [7],
        }
    )
    return pa.Table.from_pandas(frame, preserve_index=False)


PANDAS_ROW = {
    "when": "2024-01-01T12:00:00Z",
    "local": "2024-06-01T08:30:00+02:00",
    "label": "dog",
    "score": 0.25,
    "count": 7,
}


def polars_file() -> bytes:
    utc = dt.timezone.utc
    frame = pl.DataFrame(
        {
            "p_when": pl.Series([dt.datetime(2024, 1, 1, 12, tzinfo=utc)], dtype=pl.Datetime("us", "UTC")),
            "local": pl.Series([dt.datetime(2024, 6, 1, 6, 30, tzinfo=utc)], dtype=pl.Datetime("ms", "UTC")).dt.convert_time_zone(
                "Europe/Berlin"
            ),
            "naive": pl.Series([dt.datetime(2024, 1, 1, 12, 0, 0, 500000)], dtype=pl.Datetime("ns")),
            "date": pl.Series([dt.date(2024, 1, 1)], dtype=pl.Date),
            "time": pl.Series([dt.time(12, 34, 56, 1)], dtype=pl.Time),
            "duration": pl.Series([dt.timedelta(seconds=90)], dtype=pl.Duration("ms")),
            "decimal": pl.Series([decimal.Decimal("1234567890123456789.0123456789")], dtype=pl.Decimal(38, 10)),
            "big": pl.Series([2**53 + 1], dtype=pl.Int64),
            "ubig": pl.Series([2**64 - 1], dtype=pl.UInt64),
            "bin": pl.Series([b"\x00\xffab"], dtype=pl.Binary),
            "cat": pl.Series(["cat"], dtype=pl.Categorical),
            "text": pl.Series(["ü"], dtype=pl.String),
            "nested": pl.Series([[[1, None], []]], dtype=pl.List(pl.List(pl.Int32))),
            "struct": pl.Series([{"image": "gs://x/1.png", "n": 1}]),
            "nothing": pl.Series([None], dtype=pl.Null),
            "flag": pl.Series([True]),
            "score": pl.Series([0.25], dtype=pl.Float32),
        }
    )
    out = io.BytesIO()
    frame.write_parquet(out)
    return out.getvalue()


POLARS_ROW = {
    "p_when": "2024-01-01T12:00:00Z",
    "local": "2024-06-01T08:30:00+02:00",
    "naive": "2024-01-01T12:00:00.500",
    "date": "2024-01-01",
    "time": "12:34:56.000001",
    "duration": "PT90S",
    "decimal": "1234567890123456789.0123456789",
    "big": 2**53 + 1,
    "ubig": 2**64 - 1,
    "bin": "00ff6162",
    "cat": "cat",
    "text": "ü",
    "nested": [[1, None], []],
    "struct": {"image": "gs://x/1.png", "n": 1},
    "nothing": None,
    "flag": True,
    "score": 0.25,
}


def duckdb_file(path: str) -> bytes:
    duckdb.connect().execute(
        f"""COPY (SELECT TIMESTAMPTZ '2024-01-01 12:00:00+00' AS d_ts, TIMESTAMP '2024-01-01 12:00:00.5' AS naive,
            DATE '2024-01-01' AS d, TIME '12:34:56.000001' AS t, INTERVAL 90 SECOND AS dur, INTERVAL '1 month 2 days 90.5 seconds' AS dur_long,
            1234567890123456789.0123456789::DECIMAL(38,10) AS dec, 12.5::DECIMAL(4,1) AS small_dec,
            9007199254740993::BIGINT AS big, 18446744073709551615::UBIGINT AS ubig, '\\x00\\xFFab'::BLOB AS bin,
            'ü' AS s, MAP {{'a': 1}} AS m, [[1, NULL], []] AS nested, {{'image': 'gs://x/1.png', 'n': 1}} AS st,
            NULL AS nothing, '4ac7a9e9-607c-4c8a-84f3-843f0191e3fd'::UUID AS u, true AS b, 0.25::DOUBLE AS f,
            1::TINYINT AS tiny, [1.5::DECIMAL(4,1)] AS dec_list) TO '{path}' (FORMAT parquet)"""
    )
    with open(path, "rb") as f:
        return f.read()


DUCKDB_ROW = {
    "d_ts": "2024-01-01T12:00:00Z",
    "naive": "2024-01-01T12:00:00.500",
    "d": "2024-01-01",
    "t": "12:34:56.000001",
    "dur": "PT90S",
    "dur_long": "P1M2DT90.5S",
    "dec": "1234567890123456789.0123456789",
    "small_dec": "12.5",
    "big": 2**53 + 1,
    "ubig": 2**64 - 1,
    "bin": "00ff6162",
    "s": "ü",
    "m": {"a": 1},
    "nested": [[1, None], []],
    "st": {"image": "gs://x/1.png", "n": 1},
    "nothing": None,
    "u": "4ac7a9e9-607c-4c8a-84f3-843f0191e3fd",
    "b": True,
    "f": 0.25,
    "tiny": 1,
    "dec_list": ["1.5"],
}


ANY_DATA_CONFIG = (
    '<View><Text name="t" value="Check the values"/>'
    '<Choices name="c" toName="t"><Choice value="ok"/></Choices></View>'
)


def test_parquet_from_polars_and_duckdb_keeps_every_value(client, fake_gcs, make_project, tmp_path):  # noqa: F811
    bucket = f"e2e-parquet-{uuid.uuid4().hex[:12]}"
    fake_gcs.create_bucket(bucket)
    fake_gcs.upload(bucket, "tasks/polars.parquet", polars_file(), "application/octet-stream")
    fake_gcs.upload(bucket, "tasks/duckdb.parquet", duckdb_file(str(tmp_path / "d.parquet")), "application/octet-stream")
    # A config that reads no data key: these rows are about values, not labeling.
    pid = make_project(ANY_DATA_CONFIG).id
    storage = client.import_storage.gcs.create(
        project=pid, bucket=bucket, prefix="tasks", regex_filter=r".*\.parquet", use_blob_urls=False
    )
    done = sync_and_wait(client, storage.id)
    assert done.status == "completed", (done.status, done.traceback)
    datas = [task.data for task in all_tasks(client, pid)]
    by_source = {("polars" if "p_when" in d else "duckdb"): d for d in datas}
    assert len(datas) == 2, datas
    assert by_source["polars"] == POLARS_ROW
    assert by_source["duckdb"] == DUCKDB_ROW


def test_parquet_from_real_writers_keeps_every_value(client, fake_gcs, make_project):  # noqa: F811
    bucket = f"e2e-parquet-{uuid.uuid4().hex[:12]}"
    fake_gcs.create_bucket(bucket)
    fake_gcs.upload(bucket, "tasks/pyarrow.parquet", parquet(pyarrow_table()), "application/octet-stream")
    fake_gcs.upload(bucket, "tasks/pandas.parquet", parquet(pandas_table()), "application/octet-stream")
    # A config that reads no data key: these rows are about values, not labeling.
    pid = make_project(ANY_DATA_CONFIG).id
    storage = client.import_storage.gcs.create(
        project=pid, bucket=bucket, prefix="tasks", regex_filter=r".*\.parquet", use_blob_urls=False
    )
    done = sync_and_wait(client, storage.id)
    assert done.status == "completed", (done.status, done.traceback)
    datas = [task.data for task in all_tasks(client, pid)]
    by_source = {("pyarrow" if "ts_utc" in d else "pandas"): d for d in datas}
    assert len(datas) == 2, datas
    assert by_source["pyarrow"] == PYARROW_ROW
    assert by_source["pandas"] == PANDAS_ROW
