"""The ``clm`` command: ``clm run`` executes the report notebooks, ``clm sample`` writes the synthetic company."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .data import ClmError


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="execute the notebooks with Papermill into an HTML report folder")
    run.add_argument("--dataset", default="sample", help="sample, cdnow, a folder of table files or a DuckDB file")
    run.add_argument("--notebooks", default="notebooks", help="folder of report notebooks (default: notebooks)")
    run.add_argument("--out", default="reports", help="folder that receives one sub-folder per run (default: reports)")
    run.add_argument("--only", nargs="+", metavar="NOTEBOOK", help="run only these notebooks (names without .ipynb)")
    run.add_argument("--param", action="append", type=_key_value, default=[], metavar="KEY=VALUE",
                     help="a notebook parameter, repeatable; a name no selected notebook declares is an error")
    run.add_argument("--show-code", action="store_true", help="keep the code cells in the HTML")

    sample = sub.add_parser("sample", help="generate the synthetic company as Parquet files")
    sample.add_argument("--customers", type=int, default=None, help="number of customers (default 20,000)")
    sample.add_argument("--seed", type=int, default=None, help="random seed (default 2024)")
    sample.add_argument("--out", required=True, help="folder to write (replaced if it exists)")
    return parser


def main(argv: list[str] | None = None) -> int:
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
        from . import report

        parameters = {"dataset": args.dataset, **dict(args.param)}
        result = report.run(args.notebooks, args.out, parameters=parameters, only=args.only, show_code=args.show_code)
        print(f"run {result.run_id}: {len(result.notebooks) - len(result.failed)} of {len(result.notebooks)} notebooks ok -> {result.folder}")
        if result.failed:
            print(f"failed: {', '.join(result.failed)}", file=sys.stderr)
            return 1
        return 0
    except ClmError as exc:
        print(f"clm: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
