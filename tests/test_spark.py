"""Every event-level aggregation gives the same result on Spark as on DuckDB.

One local Spark session (``spark`` in conftest.py) serves every test. The data
is a small synthetic company (2,000 customers, generated from a fixed seed and
written to Parquet by the suite's own writer), so each case runs in a second or
two. Counts must be equal exactly, money and rates to 1e-9; attrs (the notes and
counts a function reports beside its table) must be equal too.
"""

from __future__ import annotations

import dataclasses

import ibis
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from clm_helpers import acquisition, clv, data, datasets, engagement, engine, lifecycle, onboarding, retention, segmentation, survey
from clm_helpers.data import SchemaError

END = "2024-12-31"
CAL = "2024-03-31"
ATOL = 1e-9


@pytest.fixture(scope="module")
def sample_dir(tmp_path_factory):
    return datasets.generate_sample(2_000, seed=11, out=tmp_path_factory.mktemp("spark") / "small")


@pytest.fixture(scope="module")
def ds(sample_dir):
    return datasets.load(sample_dir)


def _activation(ds):
    return onboarding.activation(ds.customers, ds.product_events, observation_end=END)


def _cac(ds):
    return acquisition.cac(ds.customers, ds.marketing_spend, observation_end=END)


# name -> the call, on a Dataset; each runs its Ibis expressions on the selected engine
CASES = {
    "segmentation.rfm_values": lambda ds: segmentation.rfm_values(ds.transactions, observation_end=END),
    "segmentation.rfm_values last 365 days, distinct days, mean": lambda ds: segmentation.rfm_values(
        ds.transactions, observation_end=END, window_days=365, frequency="days", monetary="mean"),
    "clv.rfm_summary": lambda ds: clv.rfm_summary(ds.transactions, observation_end=END),
    "clv.rfm_summary calibration/holdout": lambda ds: clv.rfm_summary(ds.transactions, observation_end=END, calibration_end=CAL),
    "clv.rfm_summary weeks": lambda ds: clv.rfm_summary(ds.transactions, observation_end=END, calibration_end=CAL, time_unit="W"),
    "clv.subscription_cohort_counts": lambda ds: clv.subscription_cohort_counts(ds.subscriptions, observation_end=END),
    "clv.subscription_cohort_counts quarterly, no exclusions": lambda ds: clv.subscription_cohort_counts(
        ds.subscriptions, observation_end=END, period="Q", cohort="Q", exclude_plans=()),
    "clv.repeat_transaction_tracking": lambda ds: clv.repeat_transaction_tracking(
        ds.transactions, clv.rfm_summary(ds.transactions, observation_end=END, calibration_end=CAL, time_unit="W"), {}),
    "engagement.email_metrics by campaign": lambda ds: engagement.email_metrics(ds.email_events),
    "engagement.email_metrics by month, every row": lambda ds: engagement.email_metrics(
        ds.email_events, by="month", unique=False, observation_start="2023-01-01", observation_end=END),
    "engagement.email_metrics overall, no implied opens": lambda ds: engagement.email_metrics(ds.email_events, by=None, implied_opens=False),
    "engagement.email_fatigue": lambda ds: engagement.email_fatigue(ds.email_events, observation_start="2023-01-01", observation_end=END),
    "engagement.active_customers daily": lambda ds: engagement.active_customers(ds.product_events, freq="D", observation_end=END),
    "engagement.active_customers weekly": lambda ds: engagement.active_customers(ds.product_events, freq="W", observation_end=END),
    "engagement.active_customers monthly, some events": lambda ds: engagement.active_customers(
        ds.product_events, freq="M", observation_end=END, events=["click", "search"]),
    "engagement.stickiness calendar": lambda ds: engagement.stickiness(ds.product_events, observation_end=END),
    "engagement.stickiness rolling": lambda ds: engagement.stickiness(ds.product_events, method="rolling", observation_end=END),
    "engagement.feature_adoption": lambda ds: engagement.feature_adoption(ds.product_events, observation_end=END, customers=ds.customers),
    "retention.cohort_matrix customers": lambda ds: retention.cohort_matrix(ds.transactions, observation_end=END, normalize=False),
    "retention.cohort_matrix rolling, quarterly": lambda ds: retention.cohort_matrix(
        ds.transactions, period="Q", method="rolling", observation_end=END),
    "retention.cohort_matrix revenue": lambda ds: retention.cohort_matrix(ds.transactions, value="revenue", observation_end=END),
    "retention.customer_churn_status": lambda ds: retention.customer_churn_status(ds.transactions, observation_end=END),
    "retention.inactivity_churn": lambda ds: retention.inactivity_churn(ds.transactions, observation_end=END, window_days=90),
    "retention.inactivity_churn from a start, weekly": lambda ds: retention.inactivity_churn(
        ds.transactions, observation_start="2024-05-15", observation_end=END, window_days=30, period="W"),
    "retention.customer_lifetimes": lambda ds: retention.customer_lifetimes(ds.transactions, observation_end=END, customers=ds.customers),
    "lifecycle.stage_counts": lambda ds: lifecycle.stage_counts(ds.transactions, observation_end=END),
    "lifecycle.stage_counts product events, weekly": lambda ds: lifecycle.stage_counts(ds.product_events, observation_end=END, period="W"),
    "lifecycle.customer_stages": lambda ds: lifecycle.customer_stages(ds.transactions, observation_end=END, at="2024-06"),
    "lifecycle.metrics_mountain": lambda ds: lifecycle.metrics_mountain(
        ds.customers, ds.transactions, observation_end=END, surveys=ds.surveys,
        activated=_activation(ds).set_index("customer_id")["activated"]),
    "onboarding.activation": _activation,
    "onboarding.time_to_first_value": lambda ds: onboarding.time_to_first_value(
        ds.customers, transactions=ds.transactions, product_events=ds.product_events, observation_end=END),
    "onboarding.funnel ordered": lambda ds: onboarding.funnel(ds.customers, ds.product_events, observation_end=END),
    "onboarding.funnel any order": lambda ds: onboarding.funnel(ds.customers, ds.product_events, ordered=False, observation_end=END),
    "onboarding.retention_by_activation": lambda ds: onboarding.retention_by_activation(_activation(ds), ds.transactions, months=6),
    "acquisition.new_customers by first purchase": lambda ds: acquisition.new_customers(
        ds.customers, acquired="first_purchase", transactions=ds.transactions, observation_end=END),
    "acquisition.historical_value": lambda ds: acquisition.historical_value(
        ds.customers, ds.transactions, gross_margin_pct=40, months=6, observation_end=END),
    "acquisition.cac_payback": lambda ds: acquisition.cac_payback(
        _cac(ds), ds.customers, ds.transactions, gross_margin_pct=40, observation_end=END),
    "survey.behaviour_by_nps_group": lambda ds: survey.behaviour_by_nps_group(ds.surveys, ds.transactions, observation_end=END),
    "data.monthly_counts": lambda ds: data.monthly_counts(ds.transactions, "transactions"),
    "data.per_customer_counts": lambda ds: data.per_customer_counts(ds.email_events),
}


def assert_same(a, b, where="result"):
    """Equal values and types: integers exactly, floats to ATOL, and the same attrs."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, pd.DataFrame):
        pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=0, atol=ATOL, obj=where)
        assert_same(a.attrs, b.attrs, f"{where}.attrs")
    elif isinstance(a, pd.Series):
        pd.testing.assert_series_equal(a, b, check_exact=False, rtol=0, atol=ATOL, obj=where)
        assert_same(a.attrs, b.attrs, f"{where}.attrs")
    elif dataclasses.is_dataclass(a):
        for f in dataclasses.fields(a):
            assert_same(getattr(a, f.name), getattr(b, f.name), f"{where}.{f.name}")
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), f"{where}: keys {sorted(a)} != {sorted(b)}"
        for k in a:
            assert_same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{where}: {len(a)} != {len(b)} items"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, float):
        assert (np.isnan(a) and np.isnan(b)) or abs(a - b) <= ATOL, f"{where}: {a!r} != {b!r}"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


@pytest.fixture
def on_spark(spark, monkeypatch):
    """A context that selects Spark and counts the queries it runs; DuckDB must not run any meanwhile."""

    class Spy:
        queries = 0

        def __enter__(self):
            self._ctx = engine.using("spark", session=spark)
            con = self._ctx.__enter__()
            run = con.execute

            def counted(expr, *args, **kwargs):
                Spy.queries += 1
                return run(expr, *args, **kwargs)

            monkeypatch.setattr(con, "execute", counted)
            monkeypatch.setattr(engine.default_backend(), "execute", _no_duckdb)
            return self

        def __exit__(self, *exc):
            monkeypatch.undo()
            return self._ctx.__exit__(*exc)

    return Spy()


def _no_duckdb(*args, **kwargs):
    raise AssertionError("a query ran on DuckDB while the spark engine was selected")


@pytest.mark.parametrize("name", list(CASES))
def test_spark_gives_the_same_result_as_duckdb(name, ds, on_spark):
    call = CASES[name]
    assert engine.current() == "duckdb"
    expected = call(ds)
    with on_spark:
        got = call(ds)
    assert on_spark.queries > 0, f"{name} ran no query on Spark"
    assert_same(expected, got, name)


def test_the_cases_cover_every_function_that_executes_an_ibis_expression():
    """A new event-level function must be added to CASES (or this list), so it is compared on Spark too."""
    import inspect
    import re

    from clm_helpers import engagement as e, lifecycle as l, onboarding as o, retention as r

    called = {name.split()[0] for name in CASES}
    private = {"engagement._check_sends", "engagement._run_send_check", "engagement._rolling_actives", "engagement._email_window", "engagement._active_counts",
               "lifecycle._activity",
               "retention._streaks", "retention._purchases", "onboarding._known_events", "acquisition._acquisition_days", "acquisition._margin_by_month",
               "acquisition._buyers", "onboarding._mem", "onboarding._numbered", "acquisition._mem"}
    found = set()
    for module in (acquisition, clv, data, e, l, o, r, segmentation, survey):
        short = module.__name__.rsplit(".", 1)[1]
        for fname, fn in inspect.getmembers(module, inspect.isfunction):
            if fn.__module__ == module.__name__ and re.search(r"\b(execute|as_table|_mem)\(", inspect.getsource(fn)):
                found.add(f"{short}.{fname}")
    assert found - private - called == set()


def test_a_repeat_spend_cancelled_by_refunds_is_not_counted_as_clipped():
    """0.6 - 0.1 - 0.5 sums to -1e-16 or to 0 depending on the engine's order; neither is a negative monetary value."""
    tx = pd.DataFrame({"customer_id": ["a"] * 4, "amount": [0.7, 0.6, -0.1, -0.5],
                       "timestamp": pd.to_datetime(["2024-01-01", "2024-01-05", "2024-01-09", "2024-01-09"])})
    summary = clv.rfm_summary(tx, observation_end="2024-01-31")
    assert summary.loc["a", "monetary_value"] == 0.0
    assert summary.attrs["clipped_monetary_value"] == 0


# ----------------------------------------------------------------------------- tables bound to Spark


def test_parquet_files_hold_microsecond_timestamps(sample_dir):
    """Spark refuses pandas' default nanosecond Parquet timestamps; the suite's writer stores microseconds."""
    for path in sorted(sample_dir.glob("*.parquet")):
        schema = pq.read_schema(path)
        units = {f.name: f.type.unit for f in schema if hasattr(f.type, "unit")}
        assert units and set(units.values()) == {"us"}, f"{path.name}: {units}"


@pytest.mark.parametrize("call", [
    lambda t: clv.rfm_summary(t["transactions"], observation_end=END, calibration_end=CAL),
    lambda t: clv.subscription_cohort_counts(t["subscriptions"], observation_end=END),
], ids=["rfm_summary", "subscription_cohort_counts"])
def test_functions_taking_ibis_tables_read_parquet_on_spark(call, ds, sample_dir, on_spark):
    """The rows stay in Spark: tables read from Parquet by Spark give what the validated pandas frames give on DuckDB."""
    expected = call({"transactions": ds.transactions, "subscriptions": ds.subscriptions})
    with on_spark:
        tables = engine.read_tables(sample_dir)
        assert sorted(tables) == sorted(engine.EVENT_TABLES)
        assert {t._find_backend().name for t in tables.values()} == {"pyspark"}
        got = call(tables)
    assert_same(expected, got)


def test_errors_are_the_same_on_spark(ds, on_spark):
    """Input checks written as Ibis expressions fail with the same message on both engines."""
    events = ds.email_events
    sends = events[events["event"] == "sent"].iloc[:3]
    orphan = events[events["event"] == "open"].iloc[:1].assign(campaign_id="no-such-campaign")
    bad = pd.concat([events, orphan], ignore_index=True)
    assert len(sends)
    with pytest.raises(engagement.EngagementError) as on_duckdb:
        engagement.email_metrics(bad)
    with on_spark, pytest.raises(engagement.EngagementError) as spark_error:
        engagement.email_metrics(bad)
    assert "no-such-campaign" in str(on_duckdb.value)
    assert str(spark_error.value) == str(on_duckdb.value)


# ----------------------------------------------------------------------------- engine selection


def test_read_tables_says_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="none of"):
        engine.read_tables(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a folder"):
        engine.read_tables(tmp_path / "nowhere")


def test_unknown_engine_is_refused():
    with pytest.raises(engine.EngineError, match=r"engine must be one of \['duckdb', 'spark'\], got 'postgres'"):
        engine.use("postgres")


def test_clm_engine_environment_variable_selects_the_engine(monkeypatch):
    monkeypatch.setattr(engine, "_selected", {"name": None, "backend": None})
    monkeypatch.setenv("CLM_ENGINE", "Spark")
    assert engine.current() == "spark"
    monkeypatch.setenv("CLM_ENGINE", "sqlite")
    with pytest.raises(engine.EngineError, match="got 'sqlite'"):
        engine.current()
    monkeypatch.delenv("CLM_ENGINE")
    assert engine.current() == "duckdb"
    assert engine.backend() is engine.default_backend()


def test_clm_spark_master_environment_variable_reaches_the_session(monkeypatch, spark):
    """The runner sets CLM_ENGINE=spark and CLM_SPARK_MASTER for notebook kernels; backend() starts Spark from them."""
    monkeypatch.setattr(engine, "_selected", {"name": None, "backend": None})
    monkeypatch.setenv("CLM_ENGINE", "spark")
    monkeypatch.setenv("CLM_SPARK_MASTER", "local[2]")
    seen = {}
    real = engine.spark_session

    def spy(master=None, **options):
        seen["master"] = master
        return spark  # the running session: Spark has one per process

    monkeypatch.setattr(engine, "spark_session", spy)
    con = engine.backend()
    assert seen == {"master": "local[2]"} and con.name == "pyspark"
    assert engine.execute(ibis.memtable({"x": [1, 2, 3]}).x.sum().as_table())["Sum(x)"].iloc[0] == 6
    assert real is not spy


def test_environment_for_the_runner():
    assert engine.environment("duckdb") == {"CLM_ENGINE": "duckdb"}
    assert engine.environment("spark") == {"CLM_ENGINE": "spark", "CLM_SPARK_MASTER": "local[*]"}
    assert engine.environment("Spark", spark_master="spark://head:7077")["CLM_SPARK_MASTER"] == "spark://head:7077"
    with pytest.raises(engine.EngineError, match="spark_master applies to the spark engine only"):
        engine.environment("duckdb", spark_master="local[2]")
    with pytest.raises(engine.EngineError, match="got 'dask'"):
        engine.environment("dask")


def test_using_restores_the_engine_selected_before(spark):
    assert engine.current() == "duckdb"
    with engine.using("spark", session=spark) as con:
        assert engine.current() == "spark" and engine.backend() is con
    assert engine.current() == "duckdb"


def test_spark_session_has_the_suites_settings(spark):
    assert spark.conf.get("spark.sql.session.timeZone") == "UTC"
    assert spark.conf.get("spark.sql.shuffle.partitions") == "2"
    assert spark.sparkContext.getConf().get("spark.ui.enabled") == "false"


def test_missing_java_is_said_with_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(engine.EngineError, match="apt-get install openjdk-17-jre-headless"):
        engine._java_or_fail()
