"""Fixtures shared by several test modules."""

import pytest


@pytest.fixture(scope="session")
def spark():
    """One local Spark session for the whole test run: 2 cores, UI off, 2 shuffle partitions, time zone UTC.

    Starting a JVM takes seconds, so every Spark test shares this one. Without
    pyspark or Java it fails with what to install (``make test`` installs
    both); it never skips.
    """
    from clm_helpers import engine

    session = engine.spark_session(
        "local[2]", app_name="clm-tests", shuffle_partitions=2,
        conf={
            # small data, many short queries: adaptive re-planning and the JVM's optimising compiler cost more than
            # they save (the first query takes 6 s instead of 20 s); neither changes a result
            "spark.sql.adaptive.enabled": "false",
            "spark.driver.extraJavaOptions": "-Duser.timezone=UTC -XX:TieredStopAtLevel=1",
        },
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()
