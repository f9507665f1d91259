"""Loading sources: CSV, Parquet and DuckDB folders/files, the bundled CDNOW log, and the synthetic sample."""

import json

import duckdb
import pandas as pd
import pyarrow.parquet as pq
import pytest

from clm_helpers import datasets
from clm_helpers.data import SchemaError, write_table


@pytest.fixture
def frames():
    customers = pd.DataFrame(
        {"customer_id": ["001", "002", "003"], "signup_date": ["2024-01-01", "2024-01-03", "2024-02-01"], "country": ["DE", "US", None]}
    )
    transactions = pd.DataFrame(
        {
            "customer_id": ["001", "001", "002", "003"],
            "timestamp": ["2024-01-01 09:00:00", "2024-01-20 18:30:00", "2024-01-04 12:00:00", "2024-02-03 08:15:00"],
            "amount": ["19.90", "-5.00", "42.00", "7.50"],
            "transaction_id": ["T1", "T2", "T3", "T4"],
        }
    )
    return {"customers": customers, "transactions": transactions}


def check_loaded(ds):
    assert ds.customers["customer_id"].tolist() == ["001", "002", "003"]
    assert ds.transactions["amount"].tolist() == [19.9, -5.0, 42.0, 7.5]
    assert ds.transactions["timestamp"].iloc[1] == pd.Timestamp("2024-01-20 18:30")
    assert ds.marketing_spend is None and ds.surveys is None
    assert "transactions: 1 refunds (negative amounts) kept; they are not purchases" in ds.notes
    assert ds.end == pd.Timestamp("2024-02-03")


def test_load_csv_folder(tmp_path, frames):
    for name, df in frames.items():
        df.to_csv(tmp_path / f"{name}.csv", index=False)
    check_loaded(datasets.load(tmp_path))


def test_load_parquet_folder(tmp_path, frames):
    for name, df in frames.items():
        df = df.copy()
        df["amount" if name == "transactions" else "country"] = df["amount" if name == "transactions" else "country"]
        write_table(df, tmp_path / f"{name}.parquet")
    check_loaded(datasets.load(str(tmp_path)))


def test_load_duckdb_file(tmp_path, frames):
    path = tmp_path / "crm.duckdb"
    con = duckdb.connect(str(path))
    for name, df in frames.items():
        con.register("frame", df)
        con.execute(f"CREATE TABLE {name} AS SELECT * FROM frame")
        con.unregister("frame")
    con.close()
    check_loaded(datasets.load(path))


def test_mapping_applies_to_files(tmp_path, frames):
    frames["transactions"].rename(columns={"amount": "order_value", "customer_id": "client"}).to_csv(tmp_path / "transactions.csv", index=False)
    frames["customers"].to_csv(tmp_path / "customers.csv", index=False)
    ds = datasets.load(tmp_path, mapping={"transactions": {"order_value": "amount", "client": "customer_id"}})
    check_loaded(ds)


def test_bad_value_in_a_file_names_table_column_and_rows(tmp_path, frames):
    frames["transactions"].assign(amount=["1", "x", "2", "y"]).to_csv(tmp_path / "transactions.csv", index=False)
    with pytest.raises(SchemaError, match=r"transactions.amount: 2 of 4 rows are not numbers \(e.g. row 2 \(transaction_id 'T2'\): 'x'; row 4 \(transaction_id 'T4'\): 'y'\)"):
        datasets.load(tmp_path)


def test_customers_are_derived_from_transactions_when_absent(tmp_path, frames):
    frames["transactions"].to_csv(tmp_path / "transactions.csv", index=False)
    ds = datasets.load(tmp_path)
    assert ds.customers.set_index("customer_id")["signup_date"].to_dict() == {
        "001": pd.Timestamp("2024-01-01"), "002": pd.Timestamp("2024-01-04"), "003": pd.Timestamp("2024-02-03")}
    assert any(n.startswith("customers: derived from transactions (3 customers") for n in ds.notes)


def test_folder_without_tables_is_refused(tmp_path):
    (tmp_path / "orders.csv").write_text("a,b\n1,2\n")
    with pytest.raises(SchemaError, match=r"no table found; expected files or tables named after the tables"):
        datasets.load(tmp_path)


def test_two_files_for_one_table_are_refused(tmp_path, frames):
    frames["transactions"].to_csv(tmp_path / "transactions.csv", index=False)
    write_table(frames["transactions"], tmp_path / "transactions.parquet")
    with pytest.raises(SchemaError, match=r"transactions: more than one file .*transactions.parquet, transactions.csv"):
        datasets.load(tmp_path)


def test_a_file_that_is_not_parquet_is_refused(tmp_path):
    (tmp_path / "transactions.parquet").write_bytes(b"\x00\x01 this is not parquet")
    with pytest.raises(SchemaError, match=r"transactions: cannot read .*transactions.parquet as Parquet"):
        datasets.load(tmp_path)


def test_unknown_source_is_refused():
    with pytest.raises(SchemaError, match=r"source must be 'sample', 'cdnow', a folder or a DuckDB file; 'nowhere' does not exist"):
        datasets.load("nowhere")


def test_cdnow_is_the_full_log_shipped_by_lifetimes():
    ds = datasets.load("cdnow")
    tx = ds.transactions
    assert len(tx) == 69_659
    assert tx["customer_id"].nunique() == 23_570
    assert len(ds.customers) == 23_570
    assert tx["timestamp"].min() == pd.Timestamp("1997-01-01")
    assert tx["timestamp"].max() == pd.Timestamp("1998-06-30")
    assert (tx["amount"] == 0).sum() == 80
    assert tx["customer_id"].iloc[0] == "00001"  # identifiers keep their leading zeros
    # the cohort: everyone's first purchase is in the first quarter of 1997
    assert ds.customers["signup_date"].max() == pd.Timestamp("1997-03-25")


def test_cdnow_sample_is_the_papers_2357_customers():
    ds = datasets.load_cdnow(sample=True)
    assert ds.transactions["customer_id"].nunique() == 2_357
    assert len(ds.transactions) == 6_919


def test_generated_sample_round_trips_through_parquet(tmp_path):
    folder = datasets.generate_sample(1_000, seed=7, out=tmp_path / "small")
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [f"{t}.parquet" for t in datasets.TABLES] + ["ground_truth.json", "README.md"])
    # microsecond timestamps: Spark refuses pandas' default nanoseconds
    assert str(pq.read_schema(folder / "transactions.parquet").field("timestamp").type) == "timestamp[us]"
    ds = datasets.load(folder)
    tables, truth = datasets.generate_sample(1_000, seed=7)
    in_memory = datasets.from_frames("memory", **tables)
    for name in tables:
        pd.testing.assert_frame_equal(getattr(ds, name), getattr(in_memory, name), obj=name)
    assert ds.truth == json.loads(json.dumps(truth, default=str))
    assert not [n for n in ds.notes if "not in customers" in n or "before the customer's signup_date" in n]


def test_ensure_sample_generates_once_into_the_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("CLM_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(datasets, "SAMPLE_CUSTOMERS", 500)
    calls = []
    real = datasets.generate_sample
    monkeypatch.setattr(datasets, "generate_sample", lambda *a, **k: calls.append(k) or real(500, out=k["out"]))
    assert datasets.ensure_sample() == tmp_path / "sample"
    assert datasets.ensure_sample() == tmp_path / "sample"
    assert len(calls) == 1
    assert len(datasets.load("sample").customers) == 500


def test_csv_with_semicolons_and_a_byte_order_mark_is_read(tmp_path):
    (tmp_path / "transactions.csv").write_bytes("\ufeffcustomer_id;timestamp;amount\nC1;2024-01-01;10.5\nC2;2024-01-02;3\n".encode("utf-8"))
    ds = datasets.load(tmp_path)
    assert ds.transactions["customer_id"].tolist() == ["C1", "C2"]
    assert ds.transactions["amount"].tolist() == [10.5, 3.0]


def test_latin1_csv_is_read_and_noted(tmp_path):
    (tmp_path / "customers.csv").write_bytes("customer_id,signup_date,country\nC1,2024-01-01,M\xfcnchen\n".encode("latin-1"))
    ds = datasets.load(tmp_path)
    assert ds.customers["country"].tolist() == ["München"]
    assert ds.notes[0] == "customers: customers.csv is not UTF-8; read as Latin-1"


def test_a_binary_file_named_csv_is_refused(tmp_path):
    (tmp_path / "transactions.csv").write_bytes(bytes(range(256)) * 20)
    with pytest.raises(SchemaError, match=r"transactions: (cannot read .*transactions.csv as CSV|missing required column)"):
        datasets.load(tmp_path)
