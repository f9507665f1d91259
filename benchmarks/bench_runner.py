"""How close is the report runner to the floor of one kernel start per notebook?

    .venv/bin/python benchmarks/bench_runner.py [--jobs 2] [--dataset sample] [--repeat 5]

Runs, in one process and one after the other:
  1. the floor, as the issue defines it: as many empty notebooks (a parameters
     cell and nothing else) as the suite has, through plain Papermill (a stock
     kernel each: ``papermill.execute_notebook``), ``--jobs`` at a time;
  2. the same empty notebooks through the runner (``report.run``: kernels
     forked from its kernel server, HTML pages, run.json): the runner's own cost;
  3. the whole suite on the dataset through the runner.
Prints the wall times and the ratio suite / floor (target: < 2 on 2 cores),
plus each notebook's own duration (of the last round). With ``--repeat N`` the
three run N times, interleaved, and the medians are compared. Not a test:
timings depend on the machine; run it on a quiet one.

The runner's rounds write into one reports folder each (empty notebooks,
suite), as a scheduled run writes into its reports folder week after week,
after one first run that is timed and printed but not in the medians: a run
into a folder with history starts the longest notebooks first (by the last
run's durations) and also draws the trend of the runs index, neither of which
a first run does.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import tempfile
import time
from pathlib import Path

import nbformat

from clm_helpers import datasets, report

ROOT = Path(__file__).resolve().parent.parent


def timed_run(notebooks_dir, out, *, jobs, dataset):
    started = time.perf_counter()
    result = report.run(notebooks_dir, out, parameters={"dataset": dataset}, jobs=jobs)
    return time.perf_counter() - started, result


def _papermill_one(args):
    import papermill

    source, target = args
    papermill.execute_notebook(source, target, kernel_name="python3", progress_bar=False, cwd=str(Path(target).parent))


def timed_papermill(paths, out, *, jobs):
    """Plain Papermill, ``jobs`` notebooks at a time, each in its own process (Papermill changes the process's directory)."""
    out.mkdir()
    started = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(jobs, maxtasksperchild=1) as pool:
        pool.map(_papermill_one, [(str(p), str(out / p.name)) for p in paths], chunksize=1)
    return time.perf_counter() - started


def timed_floor(paths, tmp, i, *, jobs, attempts=3):
    """``timed_papermill``, again from the start when a stock kernel died at start-up.

    Stock kernels listen on TCP ports that jupyter_client picks before the
    kernel binds them; with several kernels starting at once a port can be
    taken in between ("Address already in use", "Kernel died before replying
    to kernel_info"). Such a round is discarded, not timed with a retry in it.
    """
    for attempt in range(attempts):
        try:
            return timed_papermill(paths, tmp / f"floor-{i}-{attempt}", jobs=jobs)
        except RuntimeError as exc:
            if "Kernel died" not in str(exc) or attempt == attempts - 1:
                raise
            print(f"round {i + 1}: a stock kernel died at start-up ({exc}); floor round run again", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=os.cpu_count())
    parser.add_argument("--dataset", default="sample")
    parser.add_argument("--repeat", type=int, default=1,
                        help="rounds of floor, empty runner and suite, interleaved; medians are reported (the floor alone "
                             "varies by 40%% between runs on a shared machine)")
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.dataset == "sample":
        datasets.ensure_sample()  # generated once, outside the timings
    suite = report.discover_notebooks(ROOT / "notebooks")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        empty = tmp / "empty"
        empty.mkdir()
        for name in suite:
            nb = nbformat.v4.new_notebook()
            nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
            nb.cells = [nbformat.v4.new_code_cell(f'dataset = "{args.dataset}"', metadata={"tags": ["parameters"]})]
            nbformat.write(nb, empty / f"{name}.ipynb")
        # the first runs into each reports folder (no history yet): timed, printed, not in the medians
        first_empty = timed_run(empty, tmp / "runner-empty", jobs=args.jobs, dataset=args.dataset)[0]
        first_suite = timed_run(ROOT / "notebooks", tmp / "suite", jobs=args.jobs, dataset=args.dataset)[0]
        print(f"first runs into empty reports folders: empty notebooks {first_empty:.1f} s, suite {first_suite:.1f} s", flush=True)
        floors, empties, walls = [], [], []
        for i in range(args.repeat):  # interleaved, so that a slow spell of the machine hits all three alike
            floors.append(timed_floor(sorted(empty.glob("*.ipynb")), tmp, i, jobs=args.jobs))
            empties.append(timed_run(empty, tmp / "runner-empty", jobs=args.jobs, dataset=args.dataset)[0])
            wall, result = timed_run(ROOT / "notebooks", tmp / "suite", jobs=args.jobs, dataset=args.dataset)
            walls.append(wall)
            if args.repeat > 1:
                print(f"round {i + 1}: floor {floors[-1]:.1f} s, empty through the runner {empties[-1]:.1f} s, "
                      f"suite {wall:.1f} s, ratio {wall / floors[-1]:.2f}", flush=True)
    floor, runner_empty, wall = (statistics.median(v) for v in (floors, empties, walls))
    what = "" if args.repeat == 1 else f" (median of {args.repeat})"
    print(f"notebooks: {len(suite)}   jobs: {args.jobs}   cores: {os.cpu_count()}   dataset: {args.dataset}")
    print(f"{'floor: empty notebooks, Papermill':<40}{floor:8.1f} s{what}")
    print(f"{'empty notebooks through the runner':<40}{runner_empty:8.1f} s{what}")
    print(f"{'suite through the runner':<40}{wall:8.1f} s{what}")
    print(f"{'ratio suite / floor':<40}{wall / floor:8.2f}   (target < 2.0; medians)")
    for nb in sorted(result.notebooks, key=lambda n: -n.seconds):
        print(f"  {nb.notebook:<32}{nb.seconds:7.1f} s  {nb.status}")
    if result.failed:
        raise SystemExit(f"failed: {', '.join(result.failed)}")


if __name__ == "__main__":
    main()
