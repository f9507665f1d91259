"""Where event-level aggregation runs: Ibis expressions on an embedded DuckDB.

Every aggregation over event-level tables (transactions, e-mail events, product
events) is written as an Ibis expression and executed here, so the same
expression can later run on another Ibis backend (Spark, a warehouse) without
being rewritten. Only per-customer or per-period results come back to pandas.
"""

from __future__ import annotations

import functools

import ibis
import pandas as pd


@functools.cache
def default_backend():
    """The process-wide embedded DuckDB connection (in memory, no server)."""
    return ibis.duckdb.connect()


def as_table(obj) -> ibis.Table:
    """An Ibis table for a pandas DataFrame (registered in memory) or an Ibis table as is."""
    if isinstance(obj, ibis.Table):
        return obj
    if isinstance(obj, pd.DataFrame):
        return ibis.memtable(obj)
    raise TypeError(f"expected a pandas DataFrame or an Ibis table, got {type(obj).__name__}")


def execute(expr) -> pd.DataFrame:
    """Run an Ibis expression on the backend its tables are bound to (DuckDB for in-memory tables)."""
    try:
        backend = expr._find_backend(use_default=False)
    except Exception:  # memtables only: no bound backend
        backend = None
    return (backend or default_backend()).execute(expr)
