"""The Arrow path of ``datasets.load`` (typed Parquet columns validated without pandas object columns) against
the reference path (DuckDB reads the file, ``from_frames`` validates it with pandas): same tables, same dtypes,
same notes, same errors. Also the report run's copy (written from Arrow, read table by table on first use)."""

import dataclasses

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clm_helpers import data, datasets
from clm_helpers.data import SchemaError


def reference_load(folder, mapping=None):
    """What ``load`` did before the Arrow path: every Parquet file read by DuckDB, then ``from_frames``."""
    from clm_helpers.engine import default_backend

    con = default_backend()
    frames = {p.stem: con.read_parquet(p).to_pandas() for p in sorted(folder.glob("*.parquet"))}
    return datasets.from_frames(folder.name, mapping=mapping, **frames)


def outcome(fn):
    try:
        return fn()
    except SchemaError as exc:
        return f"SchemaError: {exc}"


def assert_same(folder, mapping=None):
    expected = outcome(lambda: reference_load(folder, mapping))
    got = outcome(lambda: datasets.load(folder, mapping=mapping))
    if isinstance(expected, str) or isinstance(got, str):
        assert got == expected
        return got
    assert got.notes == expected.notes
    assert list(got.tables()) == list(expected.tables())
    for name, df in expected.tables().items():
        pd.testing.assert_frame_equal(getattr(got, name), df, obj=name)
        for column in df.columns:
            assert getattr(got, name)[column].to_numpy().flags.writeable, (name, column)
    return got


def write(folder, **tables):
    folder.mkdir(exist_ok=True)
    for name, table in tables.items():
        pq.write_table(table if isinstance(table, pa.Table) else pa.table(table), folder / f"{name}.parquet")
    return folder


def ts(values, unit="us", tz=None):
    micros = [None if v is None else int(np.datetime64(pd.Timestamp(v).as_unit("us").asm8, "us").astype("int64")) for v in values]
    scale = {"s": 10**-6, "ms": 10**-3, "us": 1, "ns": 1000}[unit]
    return pa.array([None if v is None else int(v * scale) if scale >= 1 else v // round(1 / scale) for v in micros],
                    type=pa.timestamp(unit, tz=tz))


CUSTOMERS = {"customer_id": pa.array(["C1", "C2", "C3"]), "signup_date": ts(["2024-01-01", "2024-01-02 13:00", "1960-03-04 05:06"]),
             "country": pa.array(["DE", None, "FR"]), "plan": pa.array([None, None, None], type=pa.string())}
TX = {"customer_id": pa.array([" C1", "C1 ", "C2", "C9", "C3"]),
      "timestamp": ts(["2024-01-05 10:00", "2023-12-31 23:00", "2024-01-07", "2024-03-01", "2099-01-01"]),
      "amount": pa.array([10.0, -4.0, 0.0, 2.5, 1.0]), "transaction_id": pa.array(["T1", "T2", "T3", "T4", "T5"]),
      "channel": pa.array(["web", None, "app", "web", "web"]).dictionary_encode(), "coupon": pa.array([1, 2, 3, 4, 5])}


def variant(base, **changes):
    return {**base, **changes}


@pytest.mark.parametrize("changes", [
    pytest.param({}, id="plain"),
    pytest.param({"timestamp": ts(TX["timestamp"].to_pylist(), unit="ns")}, id="nanoseconds"),
    pytest.param({"timestamp": pa.array([1_704_448_800_000_000_001, 1, 2, 3, 4], type=pa.timestamp("ns"))}, id="nanoseconds-not-whole-us"),
    pytest.param({"timestamp": ts(TX["timestamp"].to_pylist(), unit="ms")}, id="milliseconds"),
    pytest.param({"timestamp": ts(TX["timestamp"].to_pylist(), unit="s")}, id="seconds"),
    pytest.param({"timestamp": ts(TX["timestamp"].to_pylist(), tz="Europe/Berlin")}, id="zoned"),
    pytest.param({"timestamp": ts(["2500-01-01"] * 5)}, id="year-2500"),
    pytest.param({"timestamp": ts(["1600-01-01"] * 5)}, id="year-1600"),
    pytest.param({"timestamp": pa.array(["2024-01-05"] * 5)}, id="text-timestamps"),
    pytest.param({"timestamp": ts([None, "2024-01-05", "2024-01-05", "2024-01-05", "2024-01-05"])}, id="missing-timestamp"),
    pytest.param({"amount": pa.array([10, -4, 0, 2, 1])}, id="integer-amount"),
    pytest.param({"amount": pa.array([10, -4, 0, 2, 1], type=pa.float32())}, id="float32-amount"),
    pytest.param({"amount": pa.array([10.0, None, 0.0, 2.5, 1.0])}, id="missing-amount"),
    pytest.param({"amount": pa.array([10.0, np.nan, 0.0, 2.5, 1.0])}, id="nan-amount"),
    pytest.param({"amount": pa.array([10.0, np.inf, 0.0, 2.5, 1.0])}, id="infinite-amount"),
    pytest.param({"amount": pa.array(["10", "-4", "0", "2.5", "x"])}, id="text-amount"),
    pytest.param({"amount": pa.array([True, False, True, True, True])}, id="boolean-amount"),
    pytest.param({"transaction_id": pa.array([5, 4, 3, 2, 1])}, id="integer-transaction-id"),
    pytest.param({"transaction_id": pa.array([1.0, 2.0, 3.0, 4.0, 5.0])}, id="float-transaction-id"),
    pytest.param({"transaction_id": pa.array(["T1", "T2", "T1", "T4", "T5"])}, id="duplicate-transaction-id"),
    pytest.param({"transaction_id": pa.array(["T3", "T1", "T2", "T5", "T4"])}, id="unordered-transaction-id"),
    pytest.param({"customer_id": pa.array(["C1", "", "C2", "C9", "C3"])}, id="empty-customer-id"),
    pytest.param({"customer_id": pa.array(["C1", None, "C2", "C9", "C3"])}, id="missing-customer-id"),
    pytest.param({"customer_id": pa.array(["C1", "C1", "C2", "C9", "C3"]).dictionary_encode()}, id="dictionary-customer-id"),
    pytest.param({"customer_id": pa.array(["C1", "C1", "C2", "C9", "C3"], type=pa.large_string())}, id="large-string-customer-id"),
    pytest.param({"channel": pa.array([1, 2, 3, 4, 5])}, id="integer-channel"),
])
def test_transactions_like_the_reference(tmp_path, monkeypatch, changes, request):
    taken = []
    real = data._validate_arrow
    monkeypatch.setattr(data, "_validate_arrow", lambda table, *a, **k: (real(table, *a, **k), taken.append(table))[0])
    write(tmp_path / "src", customers=CUSTOMERS, transactions=variant(TX, **changes))
    assert_same(tmp_path / "src")
    # typed columns the Arrow path takes (the others go the reference way)
    arrow = request.node.callspec.id in {"plain", "nanoseconds", "milliseconds", "seconds", "zoned", "integer-amount", "float32-amount",
                                         "integer-transaction-id", "unordered-transaction-id", "dictionary-customer-id",
                                         "large-string-customer-id"}
    assert ("transactions" in taken) == arrow


def test_the_arrow_path_is_taken_for_typed_columns(tmp_path, monkeypatch):
    taken = []
    real = data._validate_arrow
    monkeypatch.setattr(data, "_validate_arrow", lambda table, *a, **k: (real(table, *a, **k), taken.append(table))[0])
    folder = datasets.generate_sample(300, seed=3, out=tmp_path / "small")
    assert_same(folder)
    assert taken == list(datasets.TABLES)


def test_a_folder_of_parquet_files_is_read_without_duckdb_and_a_csv_file_connects_once(tmp_path, monkeypatch):
    """pyarrow reads and validates Parquet tables on its own; DuckDB (through Ibis: 0.6 s to import and connect, at the
    start of every report run) is connected only when a file needs it, and then once for the whole folder."""
    from clm_helpers import engine

    folder = datasets.generate_sample(300, seed=3, out=tmp_path / "small")
    expected = reference_load(folder)
    as_read = reference_load(folder).tables()  # the tables as DuckDB reads them, for the CSV files below
    connected = []
    real = engine.default_backend
    monkeypatch.setattr(engine, "default_backend", lambda: connected.append(1) or real())
    got = datasets.load(folder)
    assert connected == []
    assert got.notes == expected.notes
    for name, df in expected.tables().items():
        pd.testing.assert_frame_equal(getattr(got, name), df, obj=name)
    for table in ("email_events", "surveys"):  # two CSV tables: DuckDB reads both through one connection
        as_read[table].to_csv(folder / f"{table}.csv", index=False)
        (folder / f"{table}.parquet").unlink()
    assert len(datasets.load(folder).email_events) == len(expected.email_events)
    assert connected == [1]


def test_other_tables_like_the_reference(tmp_path):
    product = {"customer_id": pa.array(["C1"] * 6 + ["C2"]), "timestamp": ts(["2024-01-05"] * 7),
               "event": pa.array(["view"] * 7), "session_id": pa.array(["S1", "S1", None, None, "S2", "S2", "S1"]),
               "duration_s": pa.array([0.0, -0.0, np.nan, None, 3.0, 3.0, 0.0])}
    surveys = {"response_id": pa.array(["R1", "R2", "R3", "R4"]), "customer_id": pa.array(["C1", "C2", "C3", "C1"]),
               "timestamp": ts(["2024-01-05", "2023-01-01", "2024-01-05", "2024-01-06"]),
               "survey": pa.array([" NPS", "csat", "Ces ", "nps"]), "score": pa.array([10.0, None, 7.0, 0.0]),
               "comment": pa.array(["fine", None, "", "  "])}
    email = {"campaign_id": pa.array(["K1"] * 4), "customer_id": pa.array(["C1", "C2", "C9", "C9"]),
             "event": pa.array(["sent", "Open", " click ", "sent"]), "timestamp": ts(["2024-01-05"] * 4)}
    spend = {"date": ts(["2024-01-01", "2024-01-01", "2024-01-02"]), "channel": pa.array(["search", "search", "social"]),
             "spend": pa.array([100, 100, 0]), "leads": pa.array([3, 3, None], type=pa.int64())}
    subscriptions = {"customer_id": pa.array(["C1", "C2"]), "start_date": ts(["2024-01-01 12:00", "2024-02-01"]),
                     "end_date": ts([None, "2024-03-01"]), "mrr": pa.array([9.0, None])}
    folder = write(tmp_path / "src", customers=CUSTOMERS, product_events=product, surveys=surveys, email_events=email,
                   marketing_spend=spend, subscriptions=subscriptions)
    ds = assert_same(folder)
    assert "product_events: 3 rows repeat another row exactly; kept (check the export was not loaded twice)" in ds.notes


@pytest.mark.parametrize("table,changes", [
    ("surveys", {"score": pa.array([11.0, None, 7.0, 0.0])}),
    ("surveys", {"score": pa.array([9.5, None, 7.0, 0.0])}),
    ("surveys", {"survey": pa.array(["nps", "csat", "ces", "ces2"])}),
    ("surveys", {"response_id": pa.array(["R1", "R2", "R1", "R4"])}),
    ("email_events", {"event": pa.array(["sent", "opened", "click", "sent"])}),
    ("marketing_spend", {"spend": pa.array([100.0, -1.0, 0.0])}),
    ("marketing_spend", {"leads": pa.array([1.5, 3.0, None])}),
    ("marketing_spend", {"channel": pa.array(["search", " ", "social"])}),
    ("subscriptions", {"end_date": ts(["2023-01-01", None])}),
    ("customers", {"customer_id": pa.array(["C1", "C2", "C1"])}),
])
def test_errors_are_the_reference_errors(tmp_path, table, changes):
    base = {
        "surveys": {"response_id": pa.array(["R1", "R2", "R3", "R4"]), "customer_id": pa.array(["C1", "C2", "C3", "C1"]),
                    "timestamp": ts(["2024-01-05"] * 4), "survey": pa.array(["nps", "csat", "ces", "nps"]),
                    "score": pa.array([10.0, None, 7.0, 0.0])},
        "email_events": {"campaign_id": pa.array(["K1"] * 4), "customer_id": pa.array(["C1"] * 4),
                         "event": pa.array(["sent"] * 4), "timestamp": ts(["2024-01-05"] * 4)},
        "marketing_spend": {"date": ts(["2024-01-01", "2024-01-02", "2024-01-03"]), "channel": pa.array(["search", "social", "tv"]),
                            "spend": pa.array([1.0, 2.0, 3.0]), "leads": pa.array([1.0, 2.0, None])},
        "subscriptions": {"customer_id": pa.array(["C1", "C2"]), "start_date": ts(["2024-01-01", "2024-02-01"]),
                          "end_date": ts([None, "2024-03-01"])},
        "customers": CUSTOMERS,
    }[table]
    write(tmp_path / "src", **{table: variant(base, **changes)})
    assert assert_same(tmp_path / "src").startswith("SchemaError: ")


def test_customers_are_derived_and_mappings_apply_like_the_reference(tmp_path):
    folder = write(tmp_path / "src", transactions=variant(TX, client=TX["customer_id"]).copy())
    assert_same(folder)
    renamed = {("client" if k == "customer_id" else k): v for k, v in TX.items()}
    folder = write(tmp_path / "mapped", transactions=renamed)
    assert_same(folder, mapping={"transactions": {"client": "customer_id"}})
    assert_same(folder, mapping={"transactions": {"nope": "customer_id"}}).startswith("SchemaError: ")


def test_empty_tables_like_the_reference(tmp_path):
    empty = {k: v.slice(0, 0) for k, v in TX.items()}
    folder = write(tmp_path / "src", customers={k: v.slice(0, 0) for k, v in CUSTOMERS.items()}, transactions=empty)
    assert_same(folder)


def test_repeated_rows_count_like_pandas():
    rng = np.random.default_rng(1)
    n = 5_000
    values = {"a": rng.integers(0, 5, n).astype("float64"), "b": rng.integers(0, 3, n).astype("datetime64[us]"),
              "c": pa.chunked_array([pa.array(rng.choice(["x", "y", None], n // 2)), pa.array(rng.choice(["x", "z"], n - n // 2))])}
    values["a"][rng.random(n) < 0.2] = np.nan
    values["a"][rng.random(n) < 0.2] = -0.0
    expected = int(pd.DataFrame({k: (v.to_pandas() if isinstance(v, pa.ChunkedArray) else v) for k, v in values.items()}).duplicated().sum())
    assert data._repeated_rows(values, n) == expected > 0
    assert data._repeated_rows({"a": np.arange(n, dtype="float64")}, n) == 0


def test_distinct_identifiers():
    assert data._all_distinct(pa.chunked_array([pa.array(["a", "b"]), pa.array(["c", None])]))
    assert data._all_distinct(pa.chunked_array([pa.array(["c", "b", "a"])]))
    assert data._all_distinct(pa.chunked_array([pa.array(["b", "a", "c"])]))
    assert not data._all_distinct(pa.chunked_array([pa.array(["a", "b"]), pa.array(["a"])]))


# ----------------------------------------------------------------------------- the report run's copy


@pytest.fixture
def run_copy(tmp_path, monkeypatch):
    folder = datasets.generate_sample(300, seed=5, out=tmp_path / "small")
    (folder / "customers.parquet").unlink()  # derived customers, through the copy too
    pd.DataFrame({"customer_id": ["x"], "timestamp": ["2024-01-01"], "amount": ["1"], "event": ["open"], "campaign_id": ["K"]}).to_csv(
        folder / "email_events.csv", index=False)  # a CSV table: the pandas path, through the copy
    (folder / "email_events.parquet").unlink()
    expected = datasets.load(folder)
    datasets.write_run_cache(folder, tmp_path / "copy")
    monkeypatch.setenv(datasets.RUN_CACHE_ENV, str(tmp_path / "copy"))
    return folder, expected


def test_the_run_copy_reads_back_the_loaded_tables(run_copy):
    folder, expected = run_copy
    ds = datasets.load(folder)
    assert type(ds) is not datasets.Dataset and isinstance(ds, datasets.Dataset)
    assert (repr(ds), ds.start, ds.end, ds.notes, ds.truth, ds.name) == (
        repr(expected), expected.start, expected.end, expected.notes, expected.truth, expected.name)
    assert not {t for t in datasets.TABLES if t in vars(ds)}, "start, end and repr read no table into pandas"
    assert list(ds.tables()) == list(expected.tables())
    for name, df in expected.tables().items():
        pd.testing.assert_frame_equal(getattr(ds, name), df, obj=name)
    assert ds.transactions is ds.transactions  # read once


def test_the_run_copy_behaves_as_a_dataset(run_copy):
    folder, expected = run_copy
    ds = datasets.load(folder)
    assert ds.marketing_spend is not None and ds.customers is not None
    ds.transactions = ds.transactions.head(3)
    assert len(ds.transactions) == 3 and ds.end <= expected.end
    copy = dataclasses.replace(ds, name="other")
    assert copy.name == "other" and len(copy.transactions) == 3
    pd.testing.assert_frame_equal(copy.surveys, expected.surveys)


def test_text_is_arrow_backed_on_every_path(run_copy):
    """Ids and text are ``data.TEXT`` (Arrow strings, NaN when missing) whichever path loaded them; a run copy's
    text columns are the memory-mapped file's strings themselves (no Arrow allocation, no Python strings)."""
    folder, expected = run_copy
    frames = {"transactions": expected.transactions.astype({"customer_id": object, "channel": object})}
    for ds in (expected, datasets.from_frames(**frames)):
        for name, df in ds.tables().items():
            for column in df.columns:
                if data.SCHEMAS[name].column(column).kind in ("id", "category", "text"):
                    assert df[column].dtype == data.TEXT, (name, column, df[column].dtype)
    before = pa.total_allocated_bytes()
    ds = datasets.load(folder)
    transactions, surveys = ds.transactions, ds.surveys  # read from the copy
    assert pa.total_allocated_bytes() - before < 1_000, "the copy's strings were copied"
    assert transactions["customer_id"].dtype == data.TEXT and surveys["comment"].isna().any()
    assert surveys["comment"].isna().sum() == expected.surveys["comment"].isna().sum()


def test_the_run_copy_s_first_and_last_day_are_read_without_copying(run_copy):
    """``start``/``end`` of a run copy read the mapped files: Arrow allocates nothing, not even for a moment (checked in a
    new process, where the allocator's peak starts at zero; at a million customers a copy was 0.9 GB per table)."""
    import subprocess
    import sys

    folder, expected = run_copy
    code = ("import sys, pyarrow as pa\nfrom clm_helpers import datasets\nds = datasets.load(sys.argv[1])\n"
            "print(ds.start.isoformat(), ds.end.isoformat(), pa.default_memory_pool().max_memory())")
    out = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, text=True, check=True).stdout.split()
    assert out[:2] == [expected.start.isoformat(), expected.end.isoformat()]
    assert int(out[2]) < 1_000, f"{int(out[2]):,} bytes allocated by Arrow"


def test_the_run_copy_s_numbers_are_the_file_s_pages_copy_on_write(run_copy):
    """Full timestamp and float columns of a run copy are NumPy arrays over the mapped file (no copy), writable, and a
    write changes this frame only: the file, and so every other kernel's table, stays as it was."""
    import mmap

    folder, expected = run_copy
    tx = datasets.load(folder).transactions
    for column in ("timestamp", "amount"):
        values = tx[column].to_numpy()
        base = values
        while isinstance(base, np.ndarray) and base.base is not None:
            base = base.base
        base = base.obj if isinstance(base, memoryview) else base
        assert isinstance(base, mmap.mmap), (column, type(base))  # the mapping itself, not a copy
        assert values.flags.writeable
    pd.testing.assert_frame_equal(tx, expected.transactions)
    tx.loc[0, "amount"] = -1.0
    tx["timestamp"] += pd.Timedelta(days=1)
    again = datasets.load(folder).transactions
    pd.testing.assert_frame_equal(again, expected.transactions)
    assert tx.loc[0, "amount"] == -1.0


def test_the_run_copy_has_loads_notes_and_errors(tmp_path, monkeypatch):
    """The run copy gives the notes in the order load gives them, and a broken table fails with load's message."""
    folder = datasets.generate_sample(300, seed=7, out=tmp_path / "small")
    events = pd.read_parquet(folder / "product_events.parquet")
    pd.concat([events, events.head(5)]).to_parquet(folder / "product_events.parquet", index=False)  # repeated rows: a note
    tx = pd.read_parquet(folder / "transactions.parquet")
    tx.loc[tx.index[:3], "customer_id"] = "nobody"  # unknown customers: a reference note
    tx.to_parquet(folder / "transactions.parquet", index=False)
    expected = datasets.load(folder)
    assert "product_events: 5 rows repeat another row exactly; kept (check the export was not loaded twice)" in expected.notes and any("not in customers" in n for n in expected.notes)
    datasets.write_run_cache(folder, tmp_path / "copy")
    monkeypatch.setenv(datasets.RUN_CACHE_ENV, str(tmp_path / "copy"))
    assert datasets.load(folder).notes == expected.notes
    monkeypatch.delenv(datasets.RUN_CACHE_ENV)
    surveys = pd.read_parquet(folder / "surveys.parquet")
    surveys["score"] = surveys["score"].astype(float) + 100  # off every scale
    surveys.to_parquet(folder / "surveys.parquet", index=False)
    with pytest.raises(SchemaError) as loaded:
        datasets.load(folder)
    with pytest.raises(SchemaError) as copied:
        datasets.write_run_cache(folder, tmp_path / "copy2")
    assert str(copied.value) == str(loaded.value) and "surveys" in str(loaded.value)


def test_the_run_copy_keeps_missing_numbers_and_empty_tables(tmp_path, monkeypatch):
    frames = {
        "transactions": pd.DataFrame({"customer_id": ["a", "b"], "timestamp": ["2024-01-01", "2024-01-02"], "amount": [1.5, 2.0]}),
        "surveys": pd.DataFrame({"customer_id": ["a", "b", "a"], "timestamp": ["2024-01-01", "2024-01-02", "2024-01-03"],
                                 "survey": ["nps", "nps", "csat"], "score": [9, 3, None]}),
        "subscriptions": pd.DataFrame({"customer_id": ["a", "b"], "plan": ["p", "p"], "start_date": ["2024-01-01", "2024-01-01"],
                                       "end_date": [None, "2024-03-01"], "mrr": [10.0, None]}),
    }
    folder = tmp_path / "data"
    folder.mkdir()
    for name, df in frames.items():
        df.to_csv(folder / f"{name}.csv", index=False)
    expected = datasets.load(folder)
    datasets.write_run_cache(folder, tmp_path / "copy")
    monkeypatch.setenv(datasets.RUN_CACHE_ENV, str(tmp_path / "copy"))
    got = datasets.load(folder)
    for name, df in expected.tables().items():
        pd.testing.assert_frame_equal(getattr(got, name), df)
        assert all(getattr(got, name)[c].to_numpy().flags.writeable for c in df.columns if df[c].dtype.kind in "fM")
