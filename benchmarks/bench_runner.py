"""How close is the report runner to the floor of one kernel start per notebook?

    .venv/bin/python benchmarks/bench_runner.py [--jobs 2] [--dataset sample]

Runs, in one process and one after the other:
  1. the floor: as many empty notebooks (a parameters cell and nothing else)
     as the suite has, through the same runner with the same --jobs;
  2. the whole suite on the dataset.
Prints both wall times and their ratio (target: suite < 2x floor on 2 cores),
plus each notebook's own duration. Not a test: timings depend on the machine.
"""

from __future__ import annotations

import argparse
import os
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


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=os.cpu_count())
    parser.add_argument("--dataset", default="sample")
    args = parser.parse_args()
    if args.dataset == "sample":
        datasets.ensure_sample()  # generated once, outside both timings
    suite = report.discover_notebooks(ROOT / "notebooks")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        empty = tmp / "empty"
        empty.mkdir()
        for name in suite:
            nb = nbformat.v4.new_notebook()
            nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
            nb.cells = [nbformat.v4.new_code_cell('dataset = "sample"', metadata={"tags": ["parameters"]})]
            nbformat.write(nb, empty / f"{name}.ipynb")
        floor, _ = timed_run(empty, tmp / "floor", jobs=args.jobs, dataset=args.dataset)
        wall, result = timed_run(ROOT / "notebooks", tmp / "suite", jobs=args.jobs, dataset=args.dataset)
    print(f"notebooks: {len(suite)}   jobs: {args.jobs}   cores: {os.cpu_count()}   dataset: {args.dataset}")
    print(f"{'floor (empty notebooks)':<28}{floor:8.1f} s")
    print(f"{'suite':<28}{wall:8.1f} s")
    print(f"{'ratio suite / floor':<28}{wall / floor:8.2f}   (target < 2.0)")
    for nb in sorted(result.notebooks, key=lambda n: -n.seconds):
        print(f"  {nb.notebook:<32}{nb.seconds:7.1f} s  {nb.status}")
    if result.failed:
        raise SystemExit(f"failed: {', '.join(result.failed)}")


if __name__ == "__main__":
    main()
