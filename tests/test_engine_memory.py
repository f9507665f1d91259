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
