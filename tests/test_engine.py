"""engine.as_table: the Arrow fast path registers exactly what ``ibis.memtable`` would, and falls back where it cannot."""

from __future__ import annotations

import datetime as dt

import ibis
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from ibis.formats.pandas import PandasDataFrameProxy

from clm_helpers import data as clm_data
from clm_helpers import datasets, engine


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    return datasets.load(datasets.generate_sample(500, seed=5, out=tmp_path_factory.mktemp("engine") / "small"))


def _ibis_way(df):
    """The schema and the Arrow table Ibis' own pandas path gives a frame."""
    table = ibis.memtable(df)
    return table.schema(), PandasDataFrameProxy(df).to_pyarrow(table.schema())


def _fast_way(df, columns=None):
    table = engine._arrow_memtable(df, columns)
    assert table is not None
    return table.schema(), table.op().data.to_pyarrow(table.schema())


def _assert_same_registration(df, columns=None):
    """The same Ibis schema and the same values; text columns of dtype ``data.TEXT`` are registered as the very
    Arrow strings the frame holds (``large_string``, no copy) where Ibis would copy them into ``string``."""
    schema, data = _ibis_way(df if columns is None else df[columns])
    got_schema, got = _fast_way(df, columns)
    assert got_schema == schema
    text = [c for c in got.column_names if df[c].dtype == clm_data.TEXT]
    for name in text:
        assert got.schema.field(name).type == pa.large_string()
        assert _buffers(got.column(name)) == _buffers(df[name].array.__arrow_array__()), f"{name} was copied"
    assert got.cast(data.schema).schema.remove_metadata().equals(data.schema.remove_metadata())
    assert got.cast(data.schema).equals(data)


def _buffers(chunked):
    return [b.address for chunk in chunked.chunks for b in chunk.buffers() if b is not None]


@pytest.mark.parametrize("name", ["transactions", "customers", "email_events", "product_events", "subscriptions",
                                  "marketing_spend", "surveys"])
def test_the_datasets_tables_register_as_ibis_would(ds, name):
    _assert_same_registration(getattr(ds, name))


def test_selected_columns_register_as_the_selection_would(ds):
    _assert_same_registration(ds.transactions, ["customer_id", "timestamp", "amount"])
    _assert_same_registration(ds.email_events, ["event", "customer_id"])


EDGE = {
    "python ints in an object column": pd.DataFrame({"a": pd.Series([1, 2, None], dtype=object)}),
    "only missing values": pd.DataFrame({"a": pd.Series([None, None], dtype=object)}),
    "no rows": pd.DataFrame({"a": pd.Series([], dtype=object), "t": pd.Series([], dtype="datetime64[us]")}),
    "NaN and None in text": pd.DataFrame({"a": ["x", np.nan, None]}),
    "bool, int, categorical, string dtype": pd.DataFrame({"b": [True, False], "i": [1, 2], "c": pd.Categorical(["a", "b"]),
                                                          "s": pd.array(["a", None], dtype="string")}),
    "time zone": pd.DataFrame({"t": pd.to_datetime(["2024-01-01", None]).tz_localize("UTC")}),
    "nanoseconds on whole microseconds": pd.DataFrame({"t": pd.to_datetime(["2024-01-01 00:00:00.000001", None]).astype("datetime64[ns]")}),
    "dates as objects": pd.DataFrame({"d": [dt.date(2024, 1, 1), None]}),
    "nullable Int64": pd.DataFrame({"i": pd.array([1, None], dtype="Int64")}),
    "float32": pd.DataFrame({"f": pd.array([1.5, None], dtype="float32")}),
}


@pytest.mark.parametrize("name", list(EDGE))
def test_unusual_columns_register_as_ibis_would(name):
    _assert_same_registration(EDGE[name])


@pytest.mark.parametrize("df", [
    pd.DataFrame({"a": pd.Series([1, "x"], dtype=object)}),  # Arrow cannot type it: Ibis decides (unknown type)
    pd.DataFrame({"t": pd.to_datetime(["2024-01-01 00:00:00.000000001"])}),  # nanoseconds: Ibis raises when it runs
    pd.DataFrame([[1, 2]], columns=["a", "a"]),  # duplicate names: Ibis refuses them
    pd.DataFrame([[1, 2]]),  # names that are not text: Ibis renames them
], ids=["mixed types", "nanoseconds", "duplicate names", "integer names"])
def test_frames_the_fast_path_does_not_cover_go_through_ibis(df):
    assert engine._arrow_memtable(df) is None


def test_as_table_results_equal_ibis_memtable_results(ds):
    tx = ds.transactions
    for table in (engine.as_table(tx), engine.as_table(tx, ["customer_id", "timestamp", "amount"])):
        expr = table.group_by("customer_id").aggregate(n=table.count(), revenue=table.amount.sum(), last=table.timestamp.max())
        got = engine.execute(expr.order_by("customer_id"))
        ref = ibis.memtable(tx)
        want = engine.execute(ref.group_by("customer_id").aggregate(n=ref.count(), revenue=ref.amount.sum(),
                                                                     last=ref.timestamp.max()).order_by("customer_id"))
        pd.testing.assert_frame_equal(got, want, check_exact=False, rtol=1e-12)


def test_as_table_keeps_only_the_columns_asked_for(ds):
    assert engine.as_table(ds.transactions, ["amount", "customer_id"]).columns == ("amount", "customer_id")
    with pytest.raises(KeyError, match="nope"):
        engine.as_table(ds.transactions, ["customer_id", "nope"])


def test_a_frame_with_attrs_that_arrow_cannot_store_still_converts(ds):
    df = ds.customers.copy()
    df.attrs["fn"] = object()  # not JSON: pyarrow's pandas metadata cannot hold it
    table = engine.as_table(df)
    assert int(engine.execute(table.aggregate(n=table.count()))["n"].iloc[0]) == len(df)


def test_the_fast_path_is_used_on_duckdb_only(ds, monkeypatch):
    calls = []
    monkeypatch.setattr(engine, "_arrow_memtable", lambda df, columns=None: calls.append(1))
    monkeypatch.setattr(engine, "current", lambda: "spark")
    engine.as_table(ds.subscriptions)
    assert calls == []


def test_shared_frames_are_converted_once_per_block(ds):
    tx, em = ds.transactions, ds.email_events
    with engine.shared(tx):
        first = engine.as_table(tx, ["customer_id", "timestamp", "amount"])
        assert engine.as_table(tx, ["customer_id", "timestamp", "amount"]) is first
        subset = engine.as_table(tx, ["amount", "customer_id"])  # a selection of the table already made
        assert subset.columns == ("amount", "customer_id") and subset.op().parent is first.op()
        whole = engine.as_table(tx)  # more columns than converted so far: converted (once)
        assert engine.as_table(tx) is whole and whole is not first
        assert engine.as_table(em) is not engine.as_table(em)  # not listed: not shared
        with engine.shared(tx, em):  # nested: the outer block's tables stay; em is shared inside only
            assert engine.as_table(tx) is whole
            assert engine.as_table(em) is engine.as_table(em)
        assert id(em) not in engine._shared and id(tx) in engine._shared
    assert engine._shared == {}  # no frame is held after the block
    assert engine.as_table(tx) is not engine.as_table(tx)


def test_a_shared_table_is_only_reused_for_the_same_frame_and_engine(ds, monkeypatch):
    tx = ds.transactions
    copy = tx.copy()
    with engine.shared(tx, copy):
        assert engine.as_table(tx) is not engine.as_table(copy)  # equal frames, different objects
        duck = engine.as_table(tx)
        monkeypatch.setattr(engine, "current", lambda: "spark")
        monkeypatch.setattr(engine, "_memtable", lambda obj, columns: ("spark table", columns))
        assert engine.as_table(tx) == ("spark table", None)
        monkeypatch.undo()
        assert engine.as_table(tx) is duck


def test_frames_without_unique_text_column_names_are_not_shared():
    df = pd.DataFrame([[1, 2]], columns=["a", "a"])
    with engine.shared(df, pd.DataFrame([[1, 2]])):
        assert engine._shared == {}
