"""Where event-level aggregation runs: Ibis expressions on an embedded DuckDB, or on Apache Spark.

Every aggregation over event-level tables (transactions, e-mail events, product
events) is written as an Ibis expression and executed here, so the same
expression runs on another Ibis backend without being rewritten. Only
per-customer or per-period results come back to pandas.

Which backend runs an expression:

* an expression over tables bound to a backend (``read_parquet``, a Spark
  table) runs there;
* an expression over in-memory tables only (pandas frames turned into Ibis
  memtables by ``as_table``) runs on the *selected* engine: DuckDB unless
  ``use("spark")`` was called, or the environment variable ``CLM_ENGINE`` is
  ``spark`` (the report runner sets it for the notebook kernels).

``CLM_SPARK_MASTER`` (default ``local[*]``; a cluster URL such as
``spark://host:7077`` or ``yarn`` works too) and ``CLM_SPARK_DRIVER_MEMORY``
configure the Spark session the ``spark`` engine starts. Spark is an optional
extra (``pip install -e .[spark]``) and needs Java 17 or newer.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
from pathlib import Path

import ibis
import pandas as pd

from .data import ClmError, is_arrow_text

__all__ = ["ENGINES", "EngineError", "as_table", "shared", "execute", "use", "using", "current", "backend", "default_backend",
           "spark_session", "read_parquet", "read_tables", "EVENT_TABLES", "environment"]

#: The engines ``use`` accepts.
ENGINES = ("duckdb", "spark")
#: The event-level tables: the large ones, aggregated by the engine.
EVENT_TABLES = ("transactions", "email_events", "product_events", "subscriptions")
#: The Spark master used when none is given: every core of this machine.
DEFAULT_SPARK_MASTER = "local[*]"


class EngineError(ClmError, RuntimeError):
    """The selected engine cannot be started (unknown name, pyspark or Java missing)."""


_selected: dict = {"name": None, "backend": None}


#: Environment variables that size the embedded DuckDB (set by the report runner for its kernels, or by hand).
DUCKDB_THREADS_ENV, DUCKDB_MEMORY_ENV = "CLM_DUCKDB_THREADS", "CLM_DUCKDB_MEMORY_LIMIT"


@functools.cache
def default_backend():
    """The process-wide embedded DuckDB connection (in memory, no server); files are read through it.

    ``$CLM_DUCKDB_THREADS`` and ``$CLM_DUCKDB_MEMORY_LIMIT`` (e.g. ``"4GB"``)
    override DuckDB's defaults (all cores; 80% of the machine's memory, per
    connection). The report runner sets them for its kernels so that
    ``--jobs`` notebooks side by side share the cores and the memory instead
    of each claiming all of them. The allocator's background thread is on, so
    memory a query freed goes back to the system within seconds (DuckDB's
    default keeps it in the process).
    """
    config = {key: os.environ[env] for key, env in (("threads", DUCKDB_THREADS_ENV), ("memory_limit", DUCKDB_MEMORY_ENV))
              if os.environ.get(env)}
    # DuckDB's allocator keeps what a query freed until the process ends unless its background thread returns it to the
    # system: after a per-e-mail group-by over 12M events 0.4 GB stayed resident in the kernel, released within 2 s with it
    config["allocator_background_threads"] = True
    return ibis.duckdb.connect(**config)


#: The share of the memory available to a run that its kernels' DuckDB connections may hold together. DuckDB's own
#: default is 80% for one process; a report kernel also holds its pandas frames (at 1M customers up to ~0.9 GB), so
#: the engines get less. Above its limit DuckDB spills to disk; the queries of the reports do not need more: at 1M
#: customers, activation's query ran in the same time with 400 MB as with 9.6 GB, and peaked 0.5 GB lower.
DUCKDB_MEMORY_SHARE = 0.4


def duckdb_environment(jobs: int) -> dict[str, str]:
    """What ``jobs`` kernels side by side should give DuckDB each: an equal share of the cores, and of
    ``DUCKDB_MEMORY_SHARE`` of the memory available (``memory_available``: a container's limit, not the host's RAM).

    Settings already in the environment are kept (a user's choice wins).
    """
    jobs = max(1, int(jobs))
    out = {}
    if not os.environ.get(DUCKDB_THREADS_ENV):
        out[DUCKDB_THREADS_ENV] = str(max(1, (os.cpu_count() or 1) // jobs))
    if not os.environ.get(DUCKDB_MEMORY_ENV):
        total = memory_available()
        if total:
            out[DUCKDB_MEMORY_ENV] = f"{max(256, int(total * DUCKDB_MEMORY_SHARE / jobs / 2**20))}MB"
    return out


def memory_available(proc_cgroup: str = "/proc/self/cgroup", cgroup_root: str = "/sys/fs/cgroup") -> int | None:
    """Bytes of memory this process may use: the machine's, or less when a memory cgroup caps it (a container's
    or a systemd unit's limit; cgroup v2 ``memory.max`` or v1 ``memory.limit_in_bytes``, of the process's cgroup and
    its ancestors). None when neither is known. Sizing by the host's RAM inside a 4 GB container would let each
    kernel's DuckDB plan for memory the container does not have.
    """
    limits = []
    try:
        limits.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        pass
    try:
        lines = Path(proc_cgroup).read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        hierarchy, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if hierarchy == "0" and not controllers:
            base, name = Path(cgroup_root), "memory.max"  # cgroup v2 ("max": no limit)
        elif "memory" in controllers.split(","):
            base, name = Path(cgroup_root) / "memory", "memory.limit_in_bytes"  # cgroup v1 (a huge number: no limit)
        else:
            continue
        parts = [p for p in path.split("/") if p and p != ".."]
        for depth in range(len(parts), -1, -1):  # the process's cgroup, then its ancestors
            try:
                text = (base.joinpath(*parts[:depth]) / name).read_text().strip()
            except OSError:
                continue
            if text.isdigit() and int(text) > 0:
                limits.append(int(text))
    return min(limits) if limits else None


def _check_name(name: str) -> str:
    name = str(name).strip().lower()
    if name not in ENGINES:
        raise EngineError(f"engine must be one of {list(ENGINES)}, got {name!r}")
    return name


def use(name: str = "duckdb", **options):
    """Select the engine that runs expressions over in-memory tables, and return its Ibis backend.

    ``use("duckdb")`` (default) is the embedded DuckDB. ``use("spark",
    master="local[*]", session=None, **spark_options)`` runs them on Spark:
    on ``session`` when given (an existing ``SparkSession``), else on one
    started by ``spark_session(master, **spark_options)``.
    """
    name = _check_name(name)
    if name == "duckdb":
        if options:
            raise EngineError(f"the duckdb engine takes no options, got {sorted(options)}")
        con = default_backend()
    else:
        session = options.pop("session", None)
        if session is None:
            session = spark_session(**options)
        elif options:
            raise EngineError(f"give either a Spark session or options to start one, not both (got {sorted(options)})")
        con = ibis.pyspark.connect(session)
    _selected.update(name=name, backend=con)
    return con


@contextlib.contextmanager
def using(name: str, **options):
    """``with engine.using("spark", session=s): ...`` selects an engine for the block, then restores the previous one."""
    before = dict(_selected)
    try:
        yield use(name, **options)
    finally:
        _selected.clear()
        _selected.update(before)


def current() -> str:
    """The selected engine's name: set by ``use``, else ``$CLM_ENGINE``, else ``"duckdb"``."""
    return _selected["name"] or _check_name(os.environ.get("CLM_ENGINE") or "duckdb")


def backend():
    """The selected engine's Ibis backend (started on first use from ``$CLM_ENGINE`` when ``use`` was not called)."""
    if _selected["backend"] is None:
        name = current()
        use(name, **({"master": os.environ.get("CLM_SPARK_MASTER") or DEFAULT_SPARK_MASTER} if name == "spark" else {}))
    return _selected["backend"]


def environment(name: str = "duckdb", *, spark_master: str | None = None) -> dict[str, str]:
    """The environment variables that select ``name`` in another process (a notebook kernel): ``{"CLM_ENGINE": ...}``.

    The report runner adds them to the kernels' environment for ``engine:
    spark`` / ``--engine spark``; ``spark_master`` (default ``local[*]``) is
    passed as ``CLM_SPARK_MASTER``. Checks the name, and for Spark that
    pyspark can be imported, so a run fails before any notebook starts.
    """
    name = _check_name(name)
    if name == "duckdb":
        if spark_master:
            raise EngineError(f"spark_master applies to the spark engine only, got engine 'duckdb' and spark_master {spark_master!r}")
        return {"CLM_ENGINE": "duckdb"}
    try:
        import pyspark  # noqa: F401
    except ImportError as exc:
        raise EngineError("the spark engine needs pyspark: pip install 'clm[spark]' (or pip install -e '.[spark]' in the source tree)") from exc
    _java_or_fail()
    return {"CLM_ENGINE": "spark", "CLM_SPARK_MASTER": spark_master or DEFAULT_SPARK_MASTER}


def as_table(obj, columns=None) -> ibis.Table:
    """An Ibis table for a pandas DataFrame (registered in memory) or an Ibis table as is.

    ``columns`` (optional) keeps only those columns: of a DataFrame, only they
    are converted for the engine (a frame's other columns, such as long text
    identifiers, are never copied). On the DuckDB engine a DataFrame is turned
    into Arrow once, column by column (``_arrow_memtable``), with the schema
    and data ``ibis.memtable`` would give it; Ibis' own path converts every
    text column twice (once to infer its type, once to register it).
    """
    if isinstance(obj, ibis.Table):
        return obj if columns is None else obj.select(*columns)
    if isinstance(obj, pd.DataFrame):
        if columns is not None:
            columns = list(columns)
            missing = [c for c in columns if c not in obj.columns]
            if missing:
                raise KeyError(f"columns {missing} not in the frame ({list(obj.columns)})")
        entry = _shared.get(id(obj))
        if entry is not None and entry[0] is obj:  # a frame shared by an enclosing ``shared`` block: convert it once
            name, want = current(), list(obj.columns) if columns is None else columns
            for cols, engine_name, table in entry[1]:
                if engine_name == name and set(want) <= set(cols):
                    return table if list(cols) == want else table.select(*want)
            table = _memtable(obj, columns)
            entry[1].append((tuple(want), name, table))
            return table
        return _memtable(obj, columns)
    raise TypeError(f"expected a pandas DataFrame or an Ibis table, got {type(obj).__name__}")


#: The frames of the enclosing ``shared`` blocks: id -> (the frame, [(columns, engine, Ibis table), ...]).
_shared: dict[int, tuple[pd.DataFrame, list]] = {}


@contextlib.contextmanager
def shared(*frames):
    """Within the block, ``as_table`` converts each of ``frames`` once (per set of columns) and reuses the Ibis table.

    For a function that runs several queries over the same input frames (or
    calls other metric functions on them): the frames are turned into Arrow
    and registered with the engine once instead of once per query. A table is
    reused only for the very frame object it was made from (the block holds a
    reference to each frame, so no other frame can take its id), for the same
    engine, and only until the block ends: use it for inputs that nothing
    modifies while the block runs (no metric function modifies its inputs).
    Frames whose column names are not unique text are not shared.
    """
    added = [f for f in frames if isinstance(f, pd.DataFrame) and id(f) not in _shared
             and f.columns.is_unique and all(isinstance(c, str) for c in f.columns)]
    for f in added:
        _shared[id(f)] = (f, [])
    try:
        yield
    finally:
        for f in added:
            _shared.pop(id(f), None)


def _memtable(obj: pd.DataFrame, columns) -> ibis.Table:
    """A new Ibis memtable of ``obj`` (``columns`` only, when given)."""
    if current() == "duckdb":
        table = _arrow_memtable(obj, columns)
        if table is not None:
            return table
    df = obj if columns is None else obj[columns]
    text = [c for c in df.columns if is_arrow_text(df[c].dtype)]
    if text and current() != "duckdb":  # PySpark's Arrow path takes one Arrow array per column, not chunked Arrow strings
        df = df.astype({c: object for c in text})
    if df.attrs:  # Ibis' pandas path hands attrs to Arrow, which cannot serialise every value
        df = df.copy(deep=False)
        df.attrs = {}
    return ibis.memtable(df)


def _arrow_memtable(df: pd.DataFrame, columns=None) -> ibis.Table | None:
    """``ibis.memtable(df[columns])`` with each column converted to Arrow once; None when Ibis' own path must decide.

    The schema is the one ``ibis.memtable`` infers (text columns: the type of
    ``pa.array(column, from_pandas=True)``, the very call Ibis makes to infer
    it; other columns: from the pandas dtype) and the data registered is what
    Ibis would register for that schema (``pa.Table.from_pandas(df,
    schema=...)``): the text columns' arrays are the ones built to infer the
    type, kept instead of thrown away. Frames this does not cover exactly
    (column names that are not unique text, object columns Arrow cannot type
    on its own, decimals) return None and go through ``ibis.memtable``.
    """
    import pyarrow as pa
    from ibis.formats.pandas import PandasType
    from ibis.formats.pyarrow import PyArrowType

    names = list(df.columns) if columns is None else list(columns)
    if not names or len(set(names)) != len(names) or not all(isinstance(n, str) for n in names) \
            or (columns is None and df.columns.inferred_type != "string"):
        return None
    types, arrays = {}, {}
    for name in names:
        col = df[name]
        if not isinstance(col, pd.Series):  # duplicate labels in the frame
            return None
        if is_arrow_text(col.dtype):
            arr = col.array.__arrow_array__()  # the column's own Arrow strings: nothing is copied
            dtype = PandasType.to_ibis(col.dtype)
        elif col.dtype == object:
            try:
                arr = pa.array(col, from_pandas=True)  # what Ibis runs to infer the type
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                return None
            dtype = PyArrowType.to_ibis(arr.type)
            if dtype.is_decimal() or PyArrowType.from_ibis(dtype) != arr.type:
                return None
        else:
            dtype = PandasType.to_ibis(col.dtype)
            if dtype.is_decimal():
                return None
            try:  # what pa.Table.from_pandas(df, schema=...) runs for each column when Ibis registers the frame
                arr = pa.array(col, type=PyArrowType.from_ibis(dtype), from_pandas=True, safe=True)
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
                return None  # Ibis' path raises its own error when the expression runs
        types[name], arrays[name] = dtype, arr
    schema = ibis.schema(types)
    table = pa.table(arrays)
    return ibis.memtable(table, schema=schema)


def execute(expr) -> pd.DataFrame:
    """Run an Ibis expression on the backend its tables are bound to (the selected engine for in-memory tables)."""
    try:
        bound = expr._find_backend(use_default=False)
    except Exception:  # memtables only: no bound backend
        bound = None
    target = bound or backend()
    registered = _new_memtables(target, expr)
    try:
        with _no_arrow_filter_pushdown(target, expr):
            return target.execute(expr)
    finally:
        _release(target, registered)


#: DuckDB optimizers that hand filters to the scan of an in-memory (Arrow) table, which pyarrow then copies filtered.
_ARROW_SCAN_COPIERS = ("filter_pushdown", "join_filter_pushdown")


@contextlib.contextmanager
def _no_arrow_filter_pushdown(target, expr):
    """On DuckDB, run a query over in-memory tables only without pushing its filters into the Arrow scans.

    DuckDB hands a filter on a registered Arrow table (a time window, an
    event type) to pyarrow's dataset scanner, which filters the whole table
    ahead of the query: a filtered copy of every column read, held at once
    (0.63 GB for a date window over 12 million e-mail events; the query's
    peak memory doubled, and it ran slower on one thread). Without the
    pushdown DuckDB filters each 2,048-row vector it reads from the Arrow
    buffers in place, with the same result. Queries that read files
    (``read_parquet``) keep the pushdown: there it skips row groups.
    The connection's own ``disabled_optimizers`` setting is restored after.

    DuckDB has no switch for the scan step alone, so its ``filter_pushdown``
    optimizer (a setting DuckDB documents as for debugging) is off for the
    whole query, and so is ``join_filter_pushdown``: a hash join hands the
    range of its build side's keys to the probe side's scan while it runs,
    and on an Arrow table that is the same copy (joining 10M purchases and
    key events to 1M customers in ``onboarding.time_to_first_value``: 0.7 GB
    of pyarrow buffers, 2.0 s; without it none, 0.9 s; the whole function at
    1M customers peaked 1.4-1.55 GB over its input, now 0.6 GB, and ran in
    4-5 s instead of 5-6 s). Keeping ``filter_pushdown`` for every query with
    a join that pairs rows was measured on the whole 1M suite and was worse
    (peak 5.2 GB instead of 4.7 GB, 332 s instead of 319 s):
    ``email_metrics(by="month")`` joins two aggregates of the same e-mail
    table, and each of the two scans then copied it.
    """
    import ibis.expr.operations as ops

    con = getattr(target, "con", None)
    op = expr.op()
    if getattr(target, "name", None) != "duckdb" or con is None or op.find(ops.DatabaseTable) \
            or not op.find(ops.InMemoryTable):
        yield
        return
    before = con.execute("SELECT current_setting('disabled_optimizers')").fetchone()[0] or ""
    names = [n.strip() for n in before.split(",") if n.strip()]
    if set(_ARROW_SCAN_COPIERS) <= set(names):
        yield
        return
    con.execute("SET disabled_optimizers = ?", [",".join([*names, *_ARROW_SCAN_COPIERS])])
    try:
        yield
    finally:
        con.execute("SET disabled_optimizers = ?", [before])


def _new_memtables(target, expr) -> list:
    """The in-memory tables of ``expr`` that running it on DuckDB registers (those not registered already)."""
    known = getattr(target, "_memtables", None)
    if getattr(target, "name", None) != "duckdb" or known is None:
        return []
    import ibis.expr.operations as ops

    return [m for m in expr.op().find(ops.InMemoryTable) if m not in known]


def _release(target, memtables) -> None:
    """Unregister ``memtables`` from DuckDB once the query has run.

    Ibis (12) registers each in-memory table's Arrow data with the DuckDB
    connection the first time a query reads it and drops it only when the
    process exits: every DataFrame a notebook passes to a metric function
    stayed in the kernel, converted, until the end (at 1,000,000 customers
    the engagement notebook grew by 1-2 GB per call, to 11 GB). Released
    here, the data goes when the Ibis table is no longer referenced; a table
    that is queried again is registered again (zero-copy for Arrow data).
    """
    for memtable in memtables:
        with contextlib.suppress(Exception):
            target.con.unregister(memtable.name)
        target._memtables.discard(memtable)


def read_parquet(path, *, table_name: str | None = None) -> ibis.Table:
    """An Ibis table over a Parquet file or folder, bound to the selected engine (the rows stay in the engine)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such Parquet file or folder")
    return backend().read_parquet(str(path), table_name=table_name)


def read_tables(folder, *, tables=EVENT_TABLES) -> dict[str, ibis.Table]:
    """Ibis tables over ``folder/<table>.parquet`` for each of ``tables`` found there, bound to the selected engine.

    For the functions that take Ibis tables (``clv.rfm_summary``,
    ``clv.subscription_cohort_counts``, ``clv.repeat_transaction_tracking``):
    the rows stay in the engine, only the per-customer result comes back. The
    tables are read as they are: the contract's values are validated by
    ``datasets.load`` (in pandas), not here; each function checks the
    columns it needs.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a folder of Parquet files")
    found = {name: read_parquet(folder / f"{name}.parquet") for name in tables if (folder / f"{name}.parquet").exists()}
    if not found:
        raise FileNotFoundError(f"{folder}: none of {list(tables)} as <table>.parquet")
    return found


# ----------------------------------------------------------------------------- Spark


def _java_or_fail() -> None:
    """Spark runs in a JVM: fail with what to install when there is no ``java``."""
    home = os.environ.get("JAVA_HOME")
    if (home and (Path(home) / "bin" / "java").exists()) or shutil.which("java"):
        return
    raise EngineError("the spark engine needs Java 17 or newer and none was found (no java on PATH, JAVA_HOME unset); "
                      "install it (Debian/Ubuntu: apt-get install openjdk-17-jre-headless) or set JAVA_HOME")


def spark_session(master: str | None = None, *, app_name: str = "clm", shuffle_partitions: int | None = None,
                  driver_memory: str | None = None, conf: dict | None = None):
    """A Spark session for the suite: ``master`` (default ``$CLM_SPARK_MASTER``, else ``local[*]``), UI off, time zone UTC.

    A local master listens on 127.0.0.1 only; Spark logs errors only.

    ``shuffle_partitions`` defaults to 4 for a local master (Spark's 200 is
    meant for clusters; a few thousand customers in 200 tasks is slow) and to
    Spark's own default on a cluster. ``driver_memory`` (default
    ``$CLM_SPARK_DRIVER_MEMORY``, else Spark's 1g) only applies when this call
    starts the JVM. ``conf`` adds any other Spark setting. Returns the existing
    session when one is running (Spark has one per process).
    """
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise EngineError("the spark engine needs pyspark: pip install 'clm[spark]' (or pip install -e '.[spark]' in the source tree)") from exc
    _java_or_fail()
    master = master or os.environ.get("CLM_SPARK_MASTER") or DEFAULT_SPARK_MASTER
    settings = {
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.session.timeZone": "UTC",
        "spark.driver.extraJavaOptions": "-Duser.timezone=UTC",
        "spark.executor.extraJavaOptions": "-Duser.timezone=UTC",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.log.level": "ERROR",  # Spark's warnings would land in the notebooks' outputs
    }
    if master.startswith("local"):
        if shuffle_partitions is None:
            shuffle_partitions = 4
        # a local Spark serves this process only: listen on the loopback interface, not on the machine's address
        settings.update({"spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1"})
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # read by the JVM this call starts, before any setting
    if shuffle_partitions is not None:
        settings["spark.sql.shuffle.partitions"] = str(int(shuffle_partitions))
    driver_memory = driver_memory or os.environ.get("CLM_SPARK_DRIVER_MEMORY")
    if driver_memory:
        settings["spark.driver.memory"] = str(driver_memory)
    settings.update({k: str(v) for k, v in (conf or {}).items()})
    builder = SparkSession.builder.master(master).appName(app_name)
    for key, value in settings.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.conf.set("spark.sql.session.timeZone", "UTC")  # also on a session that was already running
    return session
