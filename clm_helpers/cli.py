"""The ``clm`` command: ``clm run`` executes the report notebooks, ``clm sample`` writes the synthetic company."""

from __future__ import annotations

import argparse
import sys

from .errors import ClmError


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE or NOTEBOOK:KEY=VALUE, got {text!r}")
    return key.strip(), value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="execute the notebooks with Papermill into an HTML report folder",
                         description="Execute the report notebooks with Papermill into <out>/<run id>/ and point <out>/latest at it "
                                     "when every notebook succeeded. Command-line options override the config file.")
    run.add_argument("--config", help="YAML run configuration (see configs/)")
    run.add_argument("--dataset", help="sample, cdnow, a folder of table files or a DuckDB file (default: sample)")
    run.add_argument("--out", help="folder that receives one sub-folder per run (default: reports)")
    run.add_argument("--notebooks", dest="notebooks_dir", help="folder of report notebooks (default: notebooks)")
    run.add_argument("--only", nargs="+", metavar="NOTEBOOK", help="run only these notebooks (names without .ipynb)")
    run.add_argument("--jobs", type=int, help="notebooks run at a time (default: the number of cores)")
    run.add_argument("--param", action="append", type=_key_value, default=[], metavar="KEY=VALUE",
                     help="a parameter for every notebook that declares it, or NOTEBOOK:KEY=VALUE for one notebook; repeatable")
    run.add_argument("--show-code", action="store_true", default=None, help="keep the code cells in the HTML")
    run.add_argument("--title", help="title of the run's index page")
    run.add_argument("--keep-runs", type=int, help="keep only the newest N runs")
    run.add_argument("--engine", choices=["duckdb", "spark"], help="where event-level aggregations run (default: duckdb)")
    run.add_argument("--spark-master", help="Spark master with --engine spark: local[*] (default) or a cluster URL")
    run.add_argument("--notebook-timeout", type=float, metavar="SECONDS",
                     help="stop a notebook (and its kernel) that runs longer than this and report it as timeout")

    sample = sub.add_parser("sample", help="generate the synthetic company as Parquet files")
    sample.add_argument("--customers", type=int, default=None, help="number of customers (default 20,000)")
    sample.add_argument("--seed", type=int, default=None, help="random seed (default 2024)")
    sample.add_argument("--out", required=True, help="folder to write (replaced if it exists)")
    return parser


def _without_iri_grammars() -> None:
    """Keep jsonschema from building its IRI grammars in this process: 2.2 s of CPU at every ``clm run``.

    Papermill reads notebooks with nbformat, which imports jsonschema, whose
    format checkers import ``rfc3987_syntax`` when it is installed (Jupyter's
    ``jsonschema[format-nongpl]`` installs it); that module compiles about 40
    Earley parsers at import (python-jsonschema/jsonschema#1428), which was
    the runner's largest start-up cost. Only the "iri" and "iri-reference"
    formats use it, and no notebook schema does; marking the module absent
    makes jsonschema leave those two checks out, as it does where the package
    is not installed. Done only in the ``clm`` command's own process (and
    the notebook workers it forks), never on import of the library.
    """
    if "jsonschema" not in sys.modules:
        sys.modules.setdefault("rfc3987_syntax", None)  # None in sys.modules: its import raises ImportError


def _run(args) -> int:
    _without_iri_grammars()
    from . import kernels

    # the kernel server's imports (~3 s, its own process) start first and overlap everything below: this process's
    # own imports (pandas, Papermill: ~0.5 s), the config, the checks, the dataset's validation
    with kernels.server() as server:
        from . import report

        config = report.load_config(args.config) if args.config else report.RunConfig()
        for key in ("dataset", "out", "notebooks_dir", "jobs", "show_code", "title", "keep_runs", "notebook_timeout", "engine", "spark_master"):
            if getattr(args, key) is not None:
                setattr(config, key, getattr(args, key))
        if args.only:
            config.only = args.only
        for key, value in args.param:
            notebook, sep, name = key.partition(":")
            if sep:
                config.per_notebook.setdefault(notebook, {})[name] = value
            else:
                config.parameters[key] = value
        result = report.run(
            config.notebooks_dir, config.out, parameters={"dataset": config.dataset, **config.parameters},
            per_notebook=config.per_notebook, only=config.only, jobs=config.jobs, show_code=config.show_code,
            title=config.title, keep_runs=config.keep_runs, notebook_timeout=config.notebook_timeout,
            engine=config.engine, spark_master=config.spark_master, kernel_server=server,
        )
    print(f"run {result.run_id}: {len(result.notebooks) - len(result.failed)} of {len(result.notebooks)} notebooks ok -> {result.folder}")
    for nb in result.notebooks:
        if nb.status != "ok":
            print(f"{nb.status}: {nb.notebook}: {nb.error}", file=sys.stderr)
    if result.interrupted:
        print(f"killed: {result.interrupted}", file=sys.stderr)
        return 130
    return 0 if result.ok else 1


def main(argv: list[str] | None = None) -> int:
    """The command; ``argv`` None: this process is the command (the ``clm`` script, ``python -m clm_helpers.cli``)."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "sample":
            from . import datasets

            out = datasets.generate_sample(
                args.customers or datasets.SAMPLE_CUSTOMERS,
                seed=datasets.SAMPLE_SEED if args.seed is None else args.seed,
                out=args.out,
            )
            print(f"wrote {out}")
            return 0
        return _run(args)
    except ClmError as exc:
        print(f"clm: error: {exc}", file=sys.stderr)
        return 2
    finally:
        if argv is None:
            _leave_objects_to_the_exit()


def _leave_objects_to_the_exit() -> None:
    """Keep Python's last garbage collection at exit from walking every object the command created.

    When the process is the command it ends right after ``main``; the final
    collection then took 0.35-0.5 s after a run (8% of a one-notebook ``clm
    run``), only to free memory the system takes back anyway. ``gc.freeze``
    moves the live objects out of the collector's reach: modules are still
    torn down and every exit handler still runs. Not done when ``main`` is
    called with arguments (tests, other programs), whose process goes on.
    """
    import gc

    gc.freeze()


if __name__ == "__main__":
    sys.exit(main())
