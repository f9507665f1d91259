"""A frame handed to a metric function must not stay registered with DuckDB after the query (Ibis keeps it until exit)."""

import pandas as pd

from clm_helpers import engine


def _registered():
    return [name for name in engine.backend().list_tables() if "memtable" in name]


def test_in_memory_tables_are_released_after_each_query_and_can_be_queried_again():
    before = set(_registered())
    df = pd.DataFrame({"customer_id": ["a", "b", "a"], "amount": [1.0, 2.0, 3.0]})
    table = engine.as_table(df)
    first = engine.execute(table.group_by("customer_id").agg(total=table.amount.sum()).order_by("customer_id"))
    assert set(_registered()) == before  # nothing left behind
    again = engine.execute(table.group_by("customer_id").agg(total=table.amount.sum()).order_by("customer_id"))
    pd.testing.assert_frame_equal(first, again)
    assert first["total"].tolist() == [4.0, 2.0]
    assert set(_registered()) == before


def test_a_table_bound_to_the_backend_is_left_alone(tmp_path):
    path = tmp_path / "t.parquet"
    pd.DataFrame({"x": [1, 2, 3]}).to_parquet(path)
    table = engine.read_parquet(path, table_name="bound_t")
    assert int(engine.execute(table.x.sum())) == 6
    assert "bound_t" in engine.backend().list_tables()
    assert int(engine.execute(table.x.sum())) == 6


def test_kernels_side_by_side_share_duckdb_threads_and_memory(monkeypatch):
    import os

    monkeypatch.delenv(engine.DUCKDB_THREADS_ENV, raising=False)
    monkeypatch.delenv(engine.DUCKDB_MEMORY_ENV, raising=False)
    one, two = engine.duckdb_environment(1), engine.duckdb_environment(2)
    assert one[engine.DUCKDB_THREADS_ENV] == str(os.cpu_count())
    assert two[engine.DUCKDB_THREADS_ENV] == str(max(1, os.cpu_count() // 2))
    assert int(two[engine.DUCKDB_MEMORY_ENV].removesuffix("MB")) * 2 <= int(one[engine.DUCKDB_MEMORY_ENV].removesuffix("MB")) + 1
    monkeypatch.setenv(engine.DUCKDB_THREADS_ENV, "3")  # a user's setting is kept
    assert engine.DUCKDB_THREADS_ENV not in engine.duckdb_environment(2)


def test_the_connection_takes_its_size_from_the_environment():
    import os
    import subprocess
    import sys

    code = ("from clm_helpers import engine; con = engine.default_backend().con; "
            "print(con.sql(\"select current_setting('threads'), current_setting('memory_limit')\").fetchone())")
    env = {**os.environ, engine.DUCKDB_THREADS_ENV: "1", engine.DUCKDB_MEMORY_ENV: "512MB"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.startswith("(1, '") and "MiB" in out  # DuckDB reports 512MB as 488.2 MiB
