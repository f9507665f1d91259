"""The report runner: every notebook, executed by Papermill, rendered to HTML, one folder per run.

A run writes into ``reports/.tmp-<run id>/`` and is moved to
``reports/<run id>/`` only when every notebook has been tried; ``reports/latest``
is pointed at it only when every notebook succeeded. An interrupted or failed
run therefore never replaces the last complete one. A notebook that fails is recorded as failed (its HTML
shows the error) and the others still run; the run's result says which failed.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from .data import ClmError

__all__ = ["ParameterError", "NotebookResult", "RunResult", "discover_notebooks", "notebook_parameters", "run", "package_versions"]


class ParameterError(ClmError, ValueError):
    """A run names a parameter or notebook that does not exist."""


@dataclass
class NotebookResult:
    """How one notebook went: status ("ok" or "failed"), seconds, and the error if any."""

    notebook: str
    status: str
    seconds: float
    html: str
    error: str | None = None


@dataclass
class RunResult:
    """One run: its folder, parameters and per-notebook results."""

    run_id: str
    folder: Path
    parameters: dict
    notebooks: list[NotebookResult] = field(default_factory=list)

    @property
    def failed(self) -> list[str]:
        return [n.notebook for n in self.notebooks if n.status != "ok"]

    @property
    def ok(self) -> bool:
        return not self.failed


def discover_notebooks(folder: str | os.PathLike) -> dict[str, Path]:
    """The report notebooks in ``folder`` by name (file stem), in file-name order."""
    paths = sorted(Path(folder).glob("*.ipynb"))
    return {p.stem: p for p in paths}


def notebook_parameters(path: Path) -> dict[str, dict]:
    """The parameters a notebook declares in its cell tagged ``parameters`` (name -> papermill's description)."""
    import papermill

    return papermill.inspect_notebook(str(path))


def _coerce(value, declared: dict):
    """A command-line string converted to the type of the notebook's default; strings stay exactly as given.

    The type comes from the parameter's annotation where there is one, else
    from its default value (``n = 3`` makes ``--param n=5`` an integer).
    """
    if not isinstance(value, str):
        return value
    kind = declared.get("inferred_type_name", "None")
    if kind == "None":
        try:
            kind = type(ast.literal_eval(declared.get("default", ""))).__name__
        except (ValueError, SyntaxError):
            kind = "str"
    name = declared.get("name", "?")
    try:
        if kind == "bool":
            return {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}[value.strip().lower()]
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
    except (KeyError, ValueError):
        raise ParameterError(f"parameter {name} takes a {kind} (its default is {declared.get('default')}), got {value!r}") from None
    return value


def _plan(notebooks: dict[str, Path], only, parameters: dict) -> dict[str, dict]:
    """Per selected notebook, the parameters it receives; unknown names fail before anything runs."""
    if only:
        unknown = [n for n in only if n not in notebooks]
        if unknown:
            raise ParameterError(f"no notebook named {unknown}; notebooks are {list(notebooks)}")
        notebooks = {n: notebooks[n] for n in only}
    plan = {}
    for name, path in notebooks.items():
        declared = notebook_parameters(path)
        undeclared = sorted(set(parameters) - set(declared))
        if undeclared:
            raise ParameterError(
                f"notebook {name} does not declare parameter(s) {undeclared}; it declares {sorted(declared)}"
            )
        plan[name] = {k: _coerce(v, declared[k]) for k, v in parameters.items()}
    return plan


def _to_html(executed: Path, *, show_code: bool) -> Path:
    import nbformat
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(
        template_name="lab",
        exclude_input=not show_code,
        exclude_input_prompt=True,
        exclude_output_prompt=True,
        embed_images=True,
    )
    body, _ = exporter.from_notebook_node(nbformat.read(executed, as_version=4))
    html = executed.with_suffix(".html")
    html.write_text(body, encoding="utf-8")
    return html


def _execute(name: str, path: Path, parameters: dict, folder: Path, *, show_code: bool) -> NotebookResult:
    import papermill

    out = folder / f"{name}.ipynb"
    started = time.monotonic()
    error = None
    try:
        papermill.execute_notebook(
            str(path), str(out), parameters=parameters, kernel_name="python3",
            progress_bar=False, cwd=str(folder),
        )
    except Exception as exc:  # papermill records the failing cell in `out`; keep going with the others
        error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"
    html = _to_html(out, show_code=show_code) if out.exists() else None
    return NotebookResult(
        notebook=name,
        status="ok" if error is None else "failed",
        seconds=round(time.monotonic() - started, 2),
        html=html.name if html else "",
        error=error,
    )


def run(notebooks_dir: str | os.PathLike = "notebooks", out_root: str | os.PathLike = "reports", *,
        parameters: dict | None = None, only: list[str] | None = None, show_code: bool = False,
        progress=print) -> RunResult:
    """Execute the notebooks into a new run folder under ``out_root`` and point ``latest`` at it."""
    parameters = dict(parameters or {})
    notebooks = discover_notebooks(notebooks_dir)
    if not notebooks:
        raise ParameterError(f"no notebooks (*.ipynb) in {notebooks_dir}")
    plan = _plan(notebooks, only, parameters)
    out_root = Path(out_root)
    out_root.mkdir(parents=True, exist_ok=True)
    run_id = stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    for n in range(1, 1000):  # two runs in the same second: 20261123T053000Z, 20261123T053000Z-1, ...
        if not (out_root / run_id).exists() and not (out_root / f".tmp-{run_id}").exists():
            break
        run_id = f"{stamp}-{n}"
    tmp = out_root / f".tmp-{run_id}"
    tmp.mkdir()
    result = RunResult(run_id=run_id, folder=out_root / run_id, parameters=parameters)
    try:
        for name, params in plan.items():
            progress(f"running {name} ...")
            nb = _execute(name, notebooks[name], params, tmp, show_code=show_code)
            result.notebooks.append(nb)
            progress(f"  {nb.status} in {nb.seconds:.1f}s" + (f": {nb.error}" if nb.error else ""))
        (tmp / "run.json").write_text(json.dumps(
            {"run_id": run_id, "parameters": parameters, "notebooks": [asdict(n) for n in result.notebooks]},
            indent=2, default=str) + "\n")
        os.replace(tmp, result.folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if result.ok:  # `latest` only ever points to a run where every notebook succeeded
        _point_latest(out_root, run_id)
    return result


def _point_latest(out_root: Path, run_id: str) -> None:
    """Atomically make ``out_root/latest`` a symlink to the run folder."""
    link = out_root / "latest"
    tmp_link = out_root / f".latest-{run_id}"
    if tmp_link.is_symlink():
        tmp_link.unlink()
    tmp_link.symlink_to(run_id, target_is_directory=True)
    if link.exists() and not link.is_symlink():
        shutil.rmtree(link)
    os.replace(tmp_link, link)


def package_versions(names=("clm", "pandas", "numpy", "scipy", "lifetimes", "ibis-framework", "duckdb", "papermill", "matplotlib")) -> "pd.DataFrame":
    """Installed versions of the packages a report's numbers depend on (for the closing cell of every notebook)."""
    import platform
    from importlib import metadata

    import pandas as pd

    rows = [{"package": "python", "version": platform.python_version()}]
    for name in names:
        try:
            rows.append({"package": name, "version": metadata.version(name)})
        except metadata.PackageNotFoundError:
            rows.append({"package": name, "version": "not installed"})
    return pd.DataFrame(rows).set_index("package")
