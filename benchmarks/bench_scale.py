"""The whole report suite at a million customers, on DuckDB; the event-level aggregations on local Spark beside it.

    .venv/bin/python benchmarks/bench_scale.py [--customers 1000000] [--data DIR] [--jobs 2]
                                               [--skip-suite] [--skip-spark] [--spark-master local[*]]

1. Generates the synthetic company (``clm sample``: about 10 transactions per
   customer) as Parquet into ``--data`` (default: a temporary folder), unless
   that folder already holds one; the generator's own time and peak memory are
   printed apart from the suite's.
2. Runs every report notebook on it with the runner (``clm run``'s
   ``report.run``, DuckDB engine), ``--jobs`` at a time. Prints the suite's
   wall time and the peak memory (summed PSS) of the whole process tree (the runner, its
   workers, their kernels), and per notebook its duration (from run.json), the
   peak RSS of its kernel and of its worker's process tree.
   Targets: suite < 5 min and < 4 GB peak on 2 cores.
3. Runs the event-level aggregations on DuckDB and on local Spark over the
   same Parquet files, times each, checks that both engines agree, and prints
   the sizes of the per-customer summary and of its compressed form (distinct
   (frequency, recency, T) rows with a weight) that the CLV models fit on.

Not a test: timings depend on the machine. Memory is read from /proc (Linux).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MB = 1024 * 1024


# ----------------------------------------------------------------------------- memory, from /proc


def _children(pid: int) -> list[int]:
    try:
        out = []
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(p) for p in f.read().split()]
        return out
    except OSError:
        return []


def _tree(pid: int) -> list[int]:
    todo, seen = [pid], []
    while todo:
        p = todo.pop()
        seen.append(p)
        todo += _children(p)
    return seen


def _status_kb(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _pss_kb(pid: int) -> int:
    """Proportional set size: resident pages, those shared with other processes divided among them.

    Summing it over a process tree counts the pages that forked kernels share
    with the kernel server once (summed RSS would count them per kernel).
    """
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return _status_kb(pid, "VmRSS")


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


class TreePeak:
    """Samples the summed PSS of a process and all its descendants every ``every`` seconds; ``peak`` in bytes."""

    def __init__(self, pid: int | None = None, every: float = 0.2):
        self.pid, self.every = pid or os.getpid(), every
        self.peak = 0
        self.kernel_peak = 0  # the largest VmHWM (own peak RSS) of an ipykernel process in the tree
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self):
        from clm_helpers import kernels

        # a forked kernel is the kernel server's child, not the worker's: the worker's kernels are listed by pid
        pids = _tree(self.pid) + [p for k in kernels.launched for p in _tree(k)]
        self.peak = max(self.peak, 1024 * sum(_pss_kb(p) for p in pids))
        for p in pids[1:]:
            if "ipykernel" in _cmdline(p) or p in kernels.launched:
                self.kernel_peak = max(self.kernel_peak, 1024 * _status_kb(p, "VmHWM"))

    def _run(self):
        while not self._stop.wait(self.every):
            self._sample()

    def __enter__(self):
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


# ----------------------------------------------------------------------------- 1. data


def generate(n_customers: int, folder: Path) -> dict:
    """``clm sample`` in a child process, so its peak memory is measured apart (RUSAGE_CHILDREN: the only child yet)."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "clm_helpers.cli", "sample", "--customers", str(n_customers), "--out", str(folder)],
                   check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    return {"seconds": seconds, "peak_bytes": peak}


def describe_data(folder: Path) -> dict:
    import pyarrow.parquet as pq

    rows = {p.stem: pq.ParquetFile(p).metadata.num_rows for p in sorted(folder.glob("*.parquet"))}
    size = sum(p.stat().st_size for p in folder.glob("*.parquet"))
    return {"rows": rows, "parquet_bytes": size}


# ----------------------------------------------------------------------------- 2. the suite on DuckDB


_MEM_DIR: Path | None = None  # where each worker writes its notebook's memory figures (set before the workers fork)


def _measured_execute(name, path, parameters, folder, **kwargs):
    """The runner's ``_execute``, with a sampler on the worker's process tree (the worker and the notebook's kernel)."""
    from clm_helpers import report

    with TreePeak(os.getpid(), every=0.1) as peak:
        result = report._original_execute(name, path, parameters, folder, **kwargs)
    (_MEM_DIR / f"{name}.json").write_text(json.dumps({"tree_peak": peak.peak, "kernel_peak": peak.kernel_peak}))
    return result


def run_suite(data: Path, jobs: int) -> dict:
    import multiprocessing

    from clm_helpers import report

    global _MEM_DIR
    # the workers are forked from this process and find the runner's _execute by name: point that name at the
    # measuring wrapper (with another start method they would import the original, and per-notebook memory is missing)
    per_notebook_memory = multiprocessing.get_start_method() == "fork"
    with tempfile.TemporaryDirectory(prefix="clm-bench-suite-") as tmp:
        tmp = Path(tmp)
        _MEM_DIR = tmp / "memory"
        _MEM_DIR.mkdir()
        if per_notebook_memory:
            report._original_execute = report._execute
            _measured_execute.__module__, _measured_execute.__qualname__ = report.__name__, "_execute"
            report._execute = _measured_execute
        try:
            started = time.perf_counter()
            with TreePeak() as peak:
                result = report.run(ROOT / "notebooks", tmp / "reports", parameters={"dataset": str(data)}, jobs=jobs)
            wall = time.perf_counter() - started
        finally:
            if per_notebook_memory:
                report._execute = report._original_execute
        record = json.loads((result.folder / "run.json").read_text())
        notebooks = []
        for nb in record["notebooks"]:
            mem_file = _MEM_DIR / f"{nb['notebook']}.json"
            mem = json.loads(mem_file.read_text()) if mem_file.exists() else {}
            notebooks.append({"notebook": nb["notebook"], "status": nb["status"], "seconds": nb["seconds"],
                              "kernel_peak": mem.get("kernel_peak"), "tree_peak": mem.get("tree_peak"), "error": nb.get("error")})
    return {"wall": wall, "peak_bytes": peak.peak, "jobs": jobs, "notebooks": notebooks}


# ----------------------------------------------------------------------------- 3. event-level aggregations, DuckDB and Spark


def _cases(end: str, cal: str):
    """name -> (tables it reads, call). Tables are Ibis tables bound to the engine (read from the Parquet files)."""
    from clm_helpers import clv

    return {
        "clv.rfm_summary (calibration/holdout)": (("transactions",), lambda t: clv.rfm_summary(
            t["transactions"], observation_end=end, calibration_end=cal, time_unit="W")),
        "clv.subscription_cohort_counts": (("subscriptions",), lambda t: clv.subscription_cohort_counts(t["subscriptions"], observation_end=end)),
        "clv.repeat_transaction_tracking": (("transactions",), lambda t: clv.repeat_transaction_tracking(
            t["transactions"], t["_summary"], {})),
    }


def _pandas_cases(end: str):
    """name -> (tables, call) for the functions that take pandas frames: the frames are shipped to the engine as in-memory tables."""
    from clm_helpers import engagement, lifecycle, retention

    return {
        "retention.cohort_matrix": (("transactions",), lambda t: retention.cohort_matrix(t["transactions"], observation_end=end, normalize=False)),
        "retention.customer_churn_status": (("transactions",), lambda t: retention.customer_churn_status(t["transactions"], observation_end=end)),
        "lifecycle.stage_counts": (("transactions",), lambda t: lifecycle.stage_counts(t["transactions"], observation_end=end)),
        "engagement.email_metrics": (("email_events",), lambda t: engagement.email_metrics(t["email_events"])),
        "engagement.active_customers (M)": (("product_events",), lambda t: engagement.active_customers(
            t["product_events"], freq="M", observation_end=end)),
    }


def _same(a, b) -> bool:
    import numpy as np
    import pandas as pd

    try:
        if isinstance(a, pd.DataFrame):
            pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-12, atol=1e-9)
        else:
            return bool(np.all(a == b))
        return True
    except AssertionError:
        return False


def run_engines(data: Path, *, spark_master: str, driver_memory: str, with_pandas_cases: bool) -> dict:
    import pandas as pd

    from clm_helpers import clv, datasets, engine

    end, cal = "2024-12-31", "2024-03-31"
    out = {"cases": {}, "summary": {}}
    results = {}
    # DuckDB: Parquet read by DuckDB, the rows never in pandas
    with engine.using("duckdb"):
        tables = {n: engine.read_parquet(data / f"{n}.parquet") for n in ("transactions", "subscriptions")}
        started = time.perf_counter()
        summary = clv.rfm_summary(tables["transactions"], observation_end=end, calibration_end=cal, time_unit="W")
        tables["_summary"] = summary
        out["summary"]["rfm_summary_duckdb_seconds"] = time.perf_counter() - started
        for name, (_, call) in _cases(end, cal).items():
            started = time.perf_counter()
            results[name] = call(tables)
            out["cases"][name] = {"duckdb": time.perf_counter() - started}
    # the summary the models fit on, and its compressed form
    full = clv.rfm_summary(tables["transactions"], observation_end=end)
    compressed = clv.compress_summary(full)
    per_customer = full[["frequency", "recency", "T", "monetary_value"]]
    out["summary"].update(
        customers=len(full),
        per_customer_bytes=int(per_customer.memory_usage(deep=True, index=True).sum()),
        distinct_frt_rows=len(compressed),
        compressed_bytes=int(compressed.memory_usage(deep=True, index=True).sum()),
    )
    pandas_tables = {}
    if with_pandas_cases:
        ds = datasets.load(data)
        pandas_tables = {"transactions": ds.transactions, "email_events": ds.email_events, "product_events": ds.product_events}
        del ds
        for name, (_, call) in _pandas_cases(end).items():
            started = time.perf_counter()
            results[name] = call(pandas_tables)
            out["cases"][name] = {"duckdb": time.perf_counter() - started}
    # Spark: the same Parquet files read by Spark
    started = time.perf_counter()
    with TreePeak() as peak:
        session = engine.spark_session(spark_master, app_name="clm-bench", driver_memory=driver_memory,
                                       shuffle_partitions=max(4, 2 * (os.cpu_count() or 1)))
        session.sparkContext.setLogLevel("ERROR")
        out["spark_start_seconds"] = time.perf_counter() - started
        with engine.using("spark", session=session):
            tables = {n: engine.read_parquet(data / f"{n}.parquet") for n in ("transactions", "subscriptions")}
            tables["_summary"] = summary
            for name, (_, call) in _cases(end, cal).items():
                started = time.perf_counter()
                got = call(tables)
                out["cases"][name].update(spark=time.perf_counter() - started, same=_same(results[name], got))
            for name, (_, call) in (_pandas_cases(end).items() if with_pandas_cases else []):
                started = time.perf_counter()
                got = call(pandas_tables)
                out["cases"][name].update(spark=time.perf_counter() - started, same=_same(results[name], got))
        session.stop()
    out["spark_tree_peak_bytes"] = peak.peak
    out["spark_master"] = spark_master
    return out


# ----------------------------------------------------------------------------- main


def _mb(x) -> str:
    return "       -" if x is None else f"{x / MB:8,.0f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--data", type=Path, help="folder for the generated Parquet files (reused when it holds a sample)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count())
    parser.add_argument("--skip-suite", action="store_true")
    parser.add_argument("--skip-spark", action="store_true")
    parser.add_argument("--pandas-cases", action="store_true",
                        help="also time functions that take pandas frames (on Spark their frames are shipped to the JVM first)")
    parser.add_argument("--spark-master", default=os.environ.get("CLM_SPARK_MASTER", "local[*]"))
    parser.add_argument("--spark-driver-memory", default="4g")
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    args = parser.parse_args()

    tmp = None
    if args.data is None:
        tmp = tempfile.TemporaryDirectory(prefix="clm-bench-data-")
        args.data = Path(tmp.name) / "company"
    report = {"customers": args.customers, "cores": os.cpu_count()}
    if (args.data / "ground_truth.json").exists():
        print(f"reusing {args.data}")
    else:
        print(f"generating {args.customers:,} customers into {args.data} ...", flush=True)
        report["generator"] = generate(args.customers, args.data)
        g = report["generator"]
        print(f"generator: {g['seconds']:.0f} s, peak {g['peak_bytes'] / MB:,.0f} MB (not part of the suite)")
    report["data"] = describe_data(args.data)
    print("rows: " + ", ".join(f"{k} {v:,}" for k, v in report["data"]["rows"].items())
          + f"; Parquet {report['data']['parquet_bytes'] / MB:,.0f} MB")

    if not args.skip_suite:
        print(f"running the report suite on DuckDB, {args.jobs} notebooks at a time ...", flush=True)
        s = report["suite"] = run_suite(args.data, args.jobs)
        print(f"\nsuite on DuckDB: {s['wall']:.1f} s wall (target < 300 s), peak {s['peak_bytes'] / MB:,.0f} MB for the whole "
              f"process tree (target < 4,096 MB), {os.cpu_count()} cores, jobs {s['jobs']}")
        print(f"  {'notebook':<28}{'status':>8}{'seconds':>9}{'kernel MB':>11}{'worker+kernel MB':>18}")
        for nb in sorted(s["notebooks"], key=lambda n: -n["seconds"]):
            print(f"  {nb['notebook']:<28}{nb['status']:>8}{nb['seconds']:9.1f}{_mb(nb['kernel_peak']):>11}{_mb(nb['tree_peak']):>18}")
            if nb["status"] != "ok":
                print(f"      {nb['error']}")

    if not args.skip_spark:
        print(f"\nevent-level aggregations: DuckDB and Spark ({args.spark_master}) over the same Parquet files ...", flush=True)
        e = report["engines"] = run_engines(args.data, spark_master=args.spark_master, driver_memory=args.spark_driver_memory,
                                            with_pandas_cases=args.pandas_cases)
        print(f"  Spark session start {e['spark_start_seconds']:.1f} s; Spark phase peak (Python + JVM) {e['spark_tree_peak_bytes'] / MB:,.0f} MB")
        print(f"  {'aggregation':<40}{'DuckDB s':>10}{'Spark s':>10}  same result")
        for name, c in e["cases"].items():
            print(f"  {name:<40}{c['duckdb']:10.1f}{c.get('spark', float('nan')):10.1f}  {c.get('same')}")
        sm = e["summary"]
        print(f"  per-customer summary: {sm['customers']:,} rows, {sm['per_customer_bytes'] / MB:,.1f} MB "
              f"({sm['per_customer_bytes'] / sm['customers']:.0f} bytes a customer); compressed: {sm['distinct_frt_rows']:,} distinct "
              f"(frequency, recency, T) rows, {sm['compressed_bytes'] / MB:,.2f} MB "
              f"({sm['compressed_bytes'] / max(sm['distinct_frt_rows'], 1):.0f} bytes a row)")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
    if tmp is not None:
        tmp.cleanup()
    failed = [nb["notebook"] for nb in report.get("suite", {}).get("notebooks", []) if nb["status"] != "ok"]
    mismatched = [k for k, c in report.get("engines", {}).get("cases", {}).items() if c.get("same") is False]
    if failed or mismatched:
        raise SystemExit(f"failed notebooks: {failed}; engines disagree on: {mismatched}")


if __name__ == "__main__":
    main()
