"""The report runner: every notebook, executed by Papermill, rendered to HTML, one folder per run.

A run is written into ``<out>/.tmp-<run id>/`` and moved to ``<out>/<run id>/``
only when every notebook has been tried; ``<out>/latest`` is pointed at it only
when every notebook succeeded. An interrupted or failed run therefore never
replaces the last complete one. A notebook that fails is recorded as failed
(its HTML shows the error, the index shows the message and the failing cell)
and the others still run.

Headline figures: a notebook publishes a figure with ``report.publish(id,
value)``, which displays it under the MIME type ``application/vnd.clm.metric+json``.
The runner reads those outputs from the executed notebook (no HTML scraping),
writes them to ``run.json`` and the run's index page, and removes them from the
HTML. The known headline ids and their definitions are in ``HEADLINES``.
"""

from __future__ import annotations

import ast
import functools
import html
import json
import math
import os
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from .data import ClmError

__all__ = [
    "ParameterError",
    "ConfigError",
    "RunConfig",
    "load_config",
    "HEADLINES",
    "METRIC_MIMETYPE",
    "NotebookResult",
    "RunResult",
    "discover_notebooks",
    "notebook_parameters",
    "publish",
    "significant",
    "figures",
    "run",
    "package_versions",
]

METRIC_MIMETYPE = "application/vnd.clm.metric+json"

#: The headline figures a run index shows as tiles: id -> (label, unit, definition).
HEADLINES: dict[str, tuple[str, str, str]] = {
    "active_customers": ("Active customers", "customers", "Customers with at least one purchase in the last complete period (calendar month by default) before the observation end."),
    "new_customers": ("New customers", "customers", "Customers whose first purchase fell in the last complete period (calendar month by default)."),
    "churn_rate": ("Churn", "%", "Period churn: customers who bought in the previous period but not in the last one, as % of the previous period's buyers (non-contractual)."),
    "cac": ("CAC (blended)", "currency", "All acquisition spend in the window divided by all customers acquired in it, organic included."),
    "clv": ("CLV", "currency", "Mean expected customer lifetime value (discounted margin over the horizon) from the recommended probabilistic model."),
    "clv_cac": ("CLV:CAC", "ratio", "Mean CLV of customers acquired through paid channels divided by paid CAC; 3:1 is the common benchmark."),
    "activation_rate": ("Activation rate", "%", "Customers who met every activation condition within the window after sign-up, % of those whose window has elapsed."),
    "trial_conversion": ("Trial-to-paid conversion", "%", "Trials whose customer started a paid plan by 7 days after the trial ended, % of decided trials."),
    "nps": ("NPS", "points", "% promoters (9-10) minus % detractors (0-6) among NPS answers in the window, -100 to 100."),
    "csat": ("CSAT", "%", "Share of CSAT answers that are 4 or 5 on the 1-5 scale (top-two-box)."),
    "ces": ("CES", "score 1-7", "Mean Customer Effort Score answer on the 1-7 agreement scale ('made it easy'); higher is easier."),
}


class ParameterError(ClmError, ValueError):
    """A run names a parameter or notebook that does not exist, or a value of the wrong type."""


# ----------------------------------------------------------------------------- inside notebooks


def publish(metric_id: str, value, *, label: str | None = None, unit: str | None = None) -> None:
    """Publish a headline figure from a notebook, for the run index and ``run.json``.

    Call it once per figure in the notebook that owns the figure
    (``report.publish("nps", result.value)``). A missing value (None or NaN)
    is published as missing, never as a number.
    """
    from IPython.display import display

    known = HEADLINES.get(metric_id, (metric_id, "", ""))
    number = None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)
    if number is not None and math.isinf(number):
        raise ValueError(f"headline {metric_id} is infinite; publish None with a reason instead")
    payload = {"id": metric_id, "value": number, "label": label or known[0], "unit": unit or known[1]}
    shown = "missing" if number is None else f"{number:,.4g}"
    display({METRIC_MIMETYPE: payload, "text/plain": f"headline {payload['label']}: {shown}"}, raw=True)


# ----------------------------------------------------------------------------- planning


@dataclass
class NotebookResult:
    """How one notebook went, its seconds, the error and the cell that failed or was running, if any.

    status: "ok"; "failed" (a cell raised, the kernel or worker died);
    "timeout" (stopped at the per-notebook time limit); "killed" (stopped
    because the run was interrupted); "not run" (the run stopped first).
    """

    notebook: str
    status: str
    seconds: float
    html: str
    parameters: dict = field(default_factory=dict)
    error: str | None = None
    failed_cell: str | None = None
    metrics: dict = field(default_factory=dict)


@dataclass
class RunResult:
    """One run: its folder, parameters and per-notebook results."""

    run_id: str
    folder: Path
    parameters: dict
    title: str = "clm report"
    started: str = ""
    finished: str = ""
    notebooks: list[NotebookResult] = field(default_factory=list)
    engine: dict = field(default_factory=lambda: {"engine": "duckdb"})
    interrupted: str | None = None  # why the run stopped before every notebook had finished

    @property
    def failed(self) -> list[str]:
        return [n.notebook for n in self.notebooks if n.status != "ok"]

    @property
    def ok(self) -> bool:
        return not self.failed and not self.interrupted

    @property
    def status(self) -> str:
        """ "ok" (every notebook succeeded), "failed" (some did not) or "killed" (the run was stopped)."""
        return "killed" if self.interrupted else "ok" if self.ok else "failed"

    @property
    def metrics(self) -> dict:
        """Every published headline figure: id -> {value, label, unit, notebook}."""
        out = {}
        for nb in self.notebooks:
            for mid, m in nb.metrics.items():
                out[mid] = {**m, "notebook": nb.notebook}
        return out


def discover_notebooks(folder: str | os.PathLike) -> dict[str, Path]:
    """The report notebooks in ``folder`` by name (file stem), in file-name order."""
    return {p.stem: p for p in sorted(Path(folder).glob("*.ipynb"))}


def notebook_parameters(path: Path) -> dict[str, dict]:
    """The parameters a notebook declares in its cell tagged ``parameters`` (name -> papermill's description)."""
    import papermill

    return papermill.inspect_notebook(str(path))


def _coerce(value, declared: dict):
    """A command-line string converted to the type of the notebook's default; strings stay exactly as given.

    The type comes from the parameter's annotation where there is one, else
    from its default value (``n = 3`` makes ``--param n=5`` an integer). A
    parameter whose default is None takes the text as is ("null" or "none"
    give None); one whose default is a list or dict takes a YAML/JSON value
    (``--param models=[bgnbd,pareto_nbd]``).
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
        if kind == "NoneType":
            return None if value.strip().lower() in ("null", "none", "") else value
        if kind in ("list", "dict", "tuple"):
            import yaml

            parsed = yaml.safe_load(value)
            if not isinstance(parsed, (list, dict)):
                raise ValueError(value)
            return parsed
    except Exception as exc:  # int(), float(), a dict lookup and YAML each raise their own error
        raise ParameterError(f"parameter {name} takes a {kind} (its default is {declared.get('default')}), got {value!r}") from exc
    return value


def plan_run(notebooks: dict[str, Path], *, only=None, shared: dict | None = None, per_notebook: dict | None = None) -> dict[str, dict]:
    """Per selected notebook, the parameters it will receive. Every error is raised here, before anything runs.

    ``shared`` parameters go to every selected notebook that declares them
    (``dataset`` must be declared by all); a shared parameter that no selected
    notebook declares is an error. ``per_notebook`` maps a notebook name to
    its own parameters, each of which it must declare.
    """
    shared = dict(shared or {})
    per_notebook = dict(per_notebook or {})
    selected = list(only) if only else list(notebooks)
    unknown = [n for n in selected + list(per_notebook) if n not in notebooks]
    if unknown:
        raise ParameterError(f"no notebook named {sorted(set(unknown))}; notebooks are {list(notebooks)}")
    declared = {name: notebook_parameters(notebooks[name]) for name in selected}
    for key in shared:
        if not any(key in d for d in declared.values()):
            valid = sorted({k for d in declared.values() for k in d})
            raise ParameterError(
                f"no selected notebook declares parameter {key!r}; they declare {valid}"
                if len(selected) > 1 else
                f"notebook {selected[0]} does not declare parameter(s) [{key!r}]; it declares {valid}"
            )
    missing_dataset = [n for n, d in declared.items() if "dataset" in shared and "dataset" not in d]
    if missing_dataset:
        raise ParameterError(f"notebook(s) {missing_dataset} do not declare the shared parameter 'dataset'")
    plan = {}
    for name in selected:
        own = per_notebook.get(name, {})
        undeclared = sorted(set(own) - set(declared[name]))
        if undeclared:
            raise ParameterError(f"notebook {name} does not declare parameter(s) {undeclared}; it declares {sorted(declared[name])}")
        params = {k: v for k, v in shared.items() if k in declared[name]}
        params.update(own)
        plan[name] = {k: _coerce(v, {**declared[name][k], "name": k}) for k, v in params.items()}
    return plan


# ----------------------------------------------------------------------------- configuration


class ConfigError(ClmError, ValueError):
    """A run configuration file names an unknown key or a value of the wrong type."""


#: Keys of a run configuration file: key -> (type(s), meaning).
CONFIG_KEYS: dict[str, tuple[tuple[type, ...], str]] = {
    "title": ((str,), "title of the run's index page"),
    "dataset": ((str,), "sample, cdnow, a folder of table files or a DuckDB file"),
    "out": ((str,), "folder receiving one sub-folder per run"),
    "notebooks_dir": ((str,), "folder of report notebooks"),
    "jobs": ((int,), "notebooks run at a time"),
    "keep_runs": ((int,), "keep only the newest N runs"),
    "notebook_timeout": ((int, float), "seconds a notebook may run before it is stopped and reported as timeout"),
    "engine": ((str,), "where event-level aggregations run: duckdb (default) or spark"),
    "spark_master": ((str,), "the Spark master with engine spark: local[*] (default) or a cluster URL"),
    "show_code": ((bool,), "keep code cells in the HTML"),
    "parameters": ((dict,), "parameters for every notebook that declares them (date window, ...)"),
    "notebooks": ((list, dict), "notebooks to run: a list of names, or names mapped to their own parameters"),
}


@dataclass
class RunConfig:
    """A run's settings, from a YAML file and/or the command line."""

    title: str = "clm report"
    dataset: str = "sample"
    out: str = "reports"
    notebooks_dir: str = "notebooks"
    jobs: int | None = None
    keep_runs: int | None = None
    notebook_timeout: float | None = None
    engine: str = "duckdb"
    spark_master: str | None = None
    show_code: bool = False
    parameters: dict = field(default_factory=dict)
    only: list[str] | None = None
    per_notebook: dict = field(default_factory=dict)


def load_config(path: str | os.PathLike) -> RunConfig:
    """Read and check a YAML run configuration; errors name the file, the key and the reason."""
    import yaml

    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a config is a mapping of keys {sorted(CONFIG_KEYS)}, got {type(raw).__name__}")
    for key, value in raw.items():
        if key not in CONFIG_KEYS:
            raise ConfigError(f"{path}: unknown key {key!r}; valid keys are {sorted(CONFIG_KEYS)}")
        types, meaning = CONFIG_KEYS[key]
        if value is not None and (not isinstance(value, types) or (bool in types) != isinstance(value, bool)):
            raise ConfigError(f"{path}: {key} ({meaning}) must be {' or '.join(t.__name__ for t in types)}, got {value!r}")
        if key in ("jobs", "keep_runs", "notebook_timeout") and value is not None and value < 1:
            raise ConfigError(f"{path}: {key} must be at least 1, got {value}")
    config = RunConfig(**{k: v for k, v in raw.items() if k in RunConfig.__dataclass_fields__ and v is not None})
    notebooks = raw.get("notebooks")
    if isinstance(notebooks, list):
        config.only = [str(n) for n in notebooks]
    elif isinstance(notebooks, dict):
        config.only = list(notebooks)
        for name, params in notebooks.items():
            if params is not None and not isinstance(params, dict):
                raise ConfigError(f"{path}: notebooks.{name} must map parameter names to values, got {params!r}")
            config.per_notebook[name] = params or {}
    return config


# ----------------------------------------------------------------------------- executing


def _read_results(executed) -> tuple[dict, str | None]:
    """Published metrics and the source of the first cell that raised, from an executed notebook node."""
    metrics, failed_cell = {}, None
    for cell in executed.cells:
        if cell.cell_type != "code":
            continue
        kept = []
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if METRIC_MIMETYPE in data:
                m = dict(data[METRIC_MIMETYPE])
                metrics[m.pop("id")] = m
                continue
            if out.get("output_type") == "error" and failed_cell is None:
                failed_cell = cell.source
            kept.append(out)
        cell.outputs = kept
    return metrics, failed_cell


#: What report outputs may contain: text structure, tables, links. No scripts, styles, event handlers, forms or frames.
_SAFE_TAGS = frozenset({
    "a", "abbr", "b", "blockquote", "br", "caption", "code", "col", "colgroup", "dd", "del", "details", "div", "dl", "dt",
    "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "li", "ol", "p", "pre", "s", "small", "span", "strong", "sub",
    "summary", "sup", "table", "tbody", "td", "tfoot", "th", "thead", "tr", "u", "ul",
})
_SAFE_ATTRIBUTES = {"*": ["class", "id", "title"], "a": ["href", "title"], "th": ["colspan", "rowspan"], "td": ["colspan", "rowspan"]}
_DROPPED_MIMETYPES = ("application/javascript", "text/javascript", "image/svg+xml", "application/vnd.jupyter.widget-view+json")


def _clean_html(text: str) -> str:
    """HTML reduced to ``_SAFE_TAGS`` (others removed, their text kept and escaped); style and script bodies dropped."""
    import re

    import bleach

    text = re.sub(r"<(style|script)\b.*?</\1\s*>", "", text, flags=re.IGNORECASE | re.DOTALL)
    return bleach.clean(text, tags=_SAFE_TAGS, attributes=_SAFE_ATTRIBUTES, protocols=["http", "https", "mailto"], strip=True)


def _sanitize_outputs(executed) -> None:
    """Make every output of an executed notebook safe to open in a browser, in place.

    Markdown outputs (``display(Markdown(...))``, which carry data values) are
    rendered to HTML here and cleaned; HTML outputs (tables) are cleaned;
    scripts, SVG and widget outputs are dropped. Markdown *cells* are the
    notebook's own text and are rendered as written.
    """
    from nbconvert.filters.markdown_mistune import markdown2html_mistune

    for cell in executed.cells:
        for out in cell.get("outputs", []):
            data = out.get("data")
            if not data:
                continue
            for mime in _DROPPED_MIMETYPES:
                data.pop(mime, None)
            if "text/markdown" in data:
                data["text/html"] = _clean_html(markdown2html_mistune(data.pop("text/markdown")))
            elif "text/html" in data:
                data["text/html"] = _clean_html(data["text/html"] if isinstance(data["text/html"], str) else "".join(data["text/html"]))


def _running_cell(executed, *, last_started: bool = False) -> str | None:
    """The source of the cell papermill marked as running when the notebook stopped.

    With ``last_started``, else the last cell that started (when the kernel
    dies, papermill marks the cell it was running as completed).
    """
    meta = [c.get("metadata", {}).get("papermill", {}) for c in executed.cells]
    running = [c for c, m in zip(executed.cells, meta) if m.get("status") == "running"]
    if running:
        return running[0].source
    started = [c for c, m in zip(executed.cells, meta) if m.get("start_time")]
    return started[-1].source if last_started and started else None


def _to_html(executed, path: Path, *, show_code: bool, title: str) -> None:
    _sanitize_outputs(executed)
    executed.metadata["title"] = title
    body, _ = _html_exporter(show_code).from_notebook_node(executed)
    path.write_text(body, encoding="utf-8")


@functools.cache
def _html_exporter(show_code: bool):
    """One nbconvert exporter per process and setting: an exporter compiles its Jinja templates (9 of them) on first
    use and keeps them, about 0.19 s of the 0.35 s a report page took when each page had a new exporter. The runner
    builds it before forking its workers (``_warm_up_rendering``), so they inherit the compiled templates."""
    from nbconvert import HTMLExporter

    return HTMLExporter(
        template_name="lab",
        exclude_input=not show_code,
        exclude_input_prompt=True,
        exclude_output_prompt=True,
        embed_images=True,
        # User-supplied text (survey comments, campaign names) reaches outputs, so every HTML and Markdown
        # output is cleaned by _sanitize_outputs below. nbconvert's own sanitizer is off: its allowlist has no
        # p, h1-h6, th or thead, so every report showed its headings and tables as literal tags.
        sanitize_html=False,
    )


def _warm_up_rendering(show_code: bool = False) -> None:
    """Import Papermill and nbconvert and render one empty page here, once, rather than in every worker (each is a
    fork of this process): the run's exporter and its compiled templates are then inherited."""
    import nbformat
    import papermill  # noqa: F401

    with tempfile.TemporaryDirectory(prefix="clm-warm-") as tmp:
        _to_html(nbformat.v4.new_notebook(), Path(tmp) / "warm.html", show_code=show_code, title="")


_ENGINE = "clm"


def _papermill_engine() -> str:
    """Register and name the Papermill engine the runner uses: nbclient's, with cheap progress saves.

    Papermill writes the output notebook when each cell starts and ends, so
    that a run stopped mid-way shows how far it got (the runner reads it to
    name the cell a timed-out or dead kernel was running). Each write goes
    through ``nbformat.writes``: a deep copy, validation against the schema
    and indented JSON from Python's pure-Python encoder, about 15 ms for a
    notebook with a few figures, twice per cell: ~1.2 s of the worker's CPU
    for the retention notebook, competing with the kernels for the cores.
    These progress saves are written here as compact JSON (C encoder, no
    validation, replaced atomically so a killed worker never leaves half a
    file); the final notebook is still written by Papermill through nbformat.
    And only when a code cell starts (plus Papermill's own saves at the start
    and end of the notebook and every 30 s within a long cell): Papermill
    also saves when each cell ends and when each Markdown cell starts, and
    each of those is followed within milliseconds by the next code cell's
    save, which holds the same outputs (two thirds of the saves; 1.1 s of
    CPU over the suite on the sample). A notebook stopped mid-way still shows
    every finished cell's output and the code cell it was running.
    """
    from papermill.engines import NBClientEngine, papermill_engines

    class CheckpointEngine(NBClientEngine):
        @classmethod
        def execute_managed_notebook(cls, nb_man, kernel_name, **kwargs):
            saving = {"on": True}

            def save(**_):
                if saving["on"] and nb_man.output_path:
                    _write_checkpoint(nb_man.nb, nb_man.output_path)
                nb_man.last_save_time = nb_man.now()

            def saving_if(method, when):
                def wrapped(cell, *args, **kw):
                    saving["on"] = when(cell)
                    try:
                        return method(cell, *args, **kw)
                    finally:
                        saving["on"] = True

                return wrapped

            nb_man.save = save
            nb_man.cell_start = saving_if(nb_man.cell_start, lambda cell: cell.get("cell_type") == "code")
            nb_man.cell_complete = saving_if(nb_man.cell_complete, lambda cell: False)
            return super().execute_managed_notebook(nb_man, kernel_name, **kwargs)

    papermill_engines.register(_ENGINE, CheckpointEngine)  # replaces this process's earlier registration, if any
    return _ENGINE


def _write_checkpoint(nb, path) -> None:
    """The notebook as it stands, as compact JSON, replacing ``path`` in one step."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(json.dumps(nb, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)


def _render(name: str, folder: Path, *, show_code: bool, title: str, running: bool, last_started: bool = False):
    """The executed (or partial) ``folder/<name>.ipynb`` as HTML: (html file name, published metrics, cell that failed).

    The cell that failed is the one with an error output; with ``running``,
    else the cell papermill marked as running (``_running_cell``).
    """
    import nbformat

    executed = nbformat.read(folder / f"{name}.ipynb", as_version=4)
    metrics, failed_cell = _read_results(executed)
    if running and failed_cell is None:
        failed_cell = _running_cell(executed, last_started=last_started)
    _to_html(executed, folder / f"{name}.html", show_code=show_code, title=f"{title}: {name}")
    return f"{name}.html", metrics, failed_cell


def _execute(name: str, path: Path, parameters: dict, folder: Path, *, show_code: bool, title: str) -> NotebookResult:
    import papermill

    from . import kernels

    out = folder / f"{name}.ipynb"
    started = time.monotonic()
    error = None
    try:
        papermill.execute_notebook(
            str(path), str(out), parameters=parameters, kernel_name="python3",
            progress_bar=False, log_output=False, cwd=str(folder),
            kernel_manager_class=kernels.PreloadedKernelManager,  # forks from the run's kernel server, if any
            engine_name=_papermill_engine(),
        )
    except Exception as exc:  # papermill records the failing cell in `out`; the run goes on with the others
        lines = [line for line in str(exc).strip().splitlines() if line.strip()]
        error = f"{type(exc).__name__}: {lines[-1] if lines else ''}"  # e.g. DeadKernelError: Kernel died
        if getattr(exc, "ename", None):
            error = f"{exc.ename}: {exc.evalue}"
    html_name, metrics, failed_cell = "", {}, None
    if out.exists():
        # no cell raised but the run failed (the kernel died): the cell that was running
        html_name, metrics, failed_cell = _render(name, folder, show_code=show_code, title=title,
                                                  running=bool(error), last_started=True)
    return NotebookResult(
        notebook=name, status="ok" if error is None else "failed",
        seconds=round(time.monotonic() - started, 2), html=html_name,
        parameters=parameters, error=error, failed_cell=failed_cell, metrics=metrics,
    )


#: Exit status of a process killed by a signal -> what to say about it.
_SIGNALS = {9: "SIGKILL (killed, e.g. by the out-of-memory killer)", 15: "SIGTERM", 6: "SIGABRT", 11: "SIGSEGV (crashed)"}


def _worker(name: str, path: Path, parameters: dict, folder: Path, show_code: bool, title: str, env: dict) -> None:
    """One notebook in its own process group (with its kernel), its result written to ``.results/<name>.json``."""
    os.setpgrp()  # the runner can stop this notebook and its kernel together
    os.environ.update(env)  # the kernel inherits it: the engine and DuckDB's share (CLM_ENGINE, CLM_DUCKDB_THREADS, ...)
    try:
        result = _execute(name, path, parameters, folder, show_code=show_code, title=title)
    except BaseException as exc:  # rendering or reading failed: still a result, never a lost notebook
        result = NotebookResult(notebook=name, status="failed", seconds=0.0, html="", parameters=parameters,
                                error=f"{type(exc).__name__}: {exc}")
    _save_result(folder, result)


def _save_result(folder: Path, result: NotebookResult) -> None:
    results = folder / ".results"
    results.mkdir(exist_ok=True)
    tmp = results / f".{result.notebook}.json"
    tmp.write_text(json.dumps(asdict(result), default=str))
    os.replace(tmp, results / f"{result.notebook}.json")


def _load_result(folder: Path, name: str) -> NotebookResult | None:
    try:
        return NotebookResult(**json.loads((folder / ".results" / f"{name}.json").read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _stopped(name: str, folder: Path, parameters: dict, *, status: str, error: str, seconds: float, show_code: bool,
             title: str) -> NotebookResult:
    """The result of a notebook the runner had to stop (time limit, run killed) or whose worker died: its partial output kept."""
    html_name, metrics, failed_cell = "", {}, None
    if (folder / f"{name}.ipynb").exists():
        try:
            html_name, metrics, failed_cell = _render(name, folder, show_code=show_code, title=title, running=True)
        except Exception:  # a notebook cut off mid-write: report without its partial page
            pass
    result = NotebookResult(notebook=name, status=status, seconds=round(seconds, 2), html=html_name, parameters=parameters,
                            error=error, failed_cell=failed_cell, metrics=metrics)
    _save_result(folder, result)
    return result


class RunInterrupted(BaseException):
    """The run received SIGTERM or SIGINT: running notebooks are stopped and the run is recorded as killed."""


def _kill_group(process) -> None:
    import signal

    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    process.join(timeout=10)


def _execute_all(plan: dict, notebooks: dict, folder: Path, *, jobs: int, show_code: bool, title: str, progress,
                 timeout: float | None = None, env: dict | None = None) -> tuple[list, str | None]:
    """Run the planned notebooks, ``jobs`` at a time, each in its own worker process; stop one past ``timeout`` seconds.

    Processes, not threads: Papermill changes the working directory of the
    whole process while a notebook runs, so two notebooks in one process race.
    Each worker leads its own process group, so a notebook past its time
    limit is stopped together with its kernel. A worker that dies (its kernel
    killed it, the out-of-memory killer) is reported with its exit signal.
    When the run itself is interrupted (``RunInterrupted``), the running
    notebooks are stopped and recorded as killed and the waiting ones as not
    run. Returns the results in plan order and the interruption (None if none).
    """
    import multiprocessing
    from multiprocessing.connection import wait

    context = multiprocessing.get_context("fork")
    waiting = _longest_first(plan, folder.parent)
    running: dict[str, tuple] = {}  # name -> (process, started)
    results: dict[str, NotebookResult] = {}

    def finish(name, result):
        results[name] = result
        progress.update(name, result.status)

    try:
        while waiting or running:
            while waiting and len(running) < jobs:
                name = waiting.pop(0)
                process = context.Process(target=_worker, args=(name, notebooks[name], plan[name], folder, show_code, title, env or {}),
                                          name=f"clm-{name}", daemon=False)
                process.start()
                running[name] = (process, time.monotonic())
                progress.update(name, "running")
            now = time.monotonic()
            deadlines = [started + timeout - now for _, started in running.values()] if timeout else []
            wait([p.sentinel for p, _ in running.values()], timeout=max(0.05, min(deadlines + [1.0])))
            for name, (process, started) in list(running.items()):
                elapsed = time.monotonic() - started
                if not process.is_alive():
                    process.join()
                    del running[name]
                    result = _load_result(folder, name)
                    if result is None:
                        code = -(process.exitcode or 0)
                        why = _SIGNALS.get(code, f"signal {code}") if code > 0 else f"exit status {process.exitcode}"
                        result = _stopped(name, folder, plan[name], status="failed", seconds=elapsed, show_code=show_code,
                                          title=title, error=f"WorkerDied: the notebook's worker process ended with {why} before reporting")
                    finish(name, result)
                elif timeout and elapsed > timeout:
                    _kill_group(process)
                    del running[name]
                    finish(name, _stopped(name, folder, plan[name], status="timeout", seconds=elapsed, show_code=show_code, title=title,
                                          error=f"TimeLimit: stopped after {elapsed:.0f} s, past the per-notebook time limit of "
                                                f"{timeout:g} s (config key notebook_timeout)"))
    except (RunInterrupted, KeyboardInterrupt):  # the run is being stopped: say so for every notebook, keep what finished
        interrupted = "the run was interrupted (SIGTERM or SIGINT)"
        for name, (process, started) in list(running.items()):
            _kill_group(process)
            del running[name]
            finish(name, _load_result(folder, name) or _stopped(
                name, folder, plan[name], status="killed", seconds=time.monotonic() - started, show_code=show_code, title=title,
                error=f"Killed: stopped because {interrupted}"))
        for name in waiting:
            finish(name, NotebookResult(notebook=name, status="not run", seconds=0.0, html="", parameters=plan[name],
                                        error=f"NotRun: not started because {interrupted}"))
        return [results[name] for name in plan], interrupted
    finally:
        for process, _ in running.values():
            _kill_group(process)
    return [results[name] for name in plan], None


class _Progress:
    """One status line on a terminal (running / done / failed, elapsed); silent otherwise (cron)."""

    def __init__(self, names, stream=None):
        self.stream = stream or sys.stderr
        self.on = self.stream.isatty()
        self.state = {n: "waiting" for n in names}
        self.start = time.monotonic()
        self.lock = threading.Lock()

    def update(self, name, state):
        with self.lock:
            self.state[name] = state
            if not self.on:
                return
            running = [n for n, s in self.state.items() if s == "running"]
            done = sum(s == "ok" for s in self.state.values())
            failed = [n for n, s in self.state.items() if s == "failed"]
            line = f"[{time.monotonic() - self.start:6.1f}s] {done}/{len(self.state)} done"
            if failed:
                line += f", failed: {', '.join(failed)}"
            if running:
                line += f"; running: {', '.join(running)}"
            self.stream.write("\r\033[K" + line[:200])
            self.stream.flush()

    def close(self):
        if self.on:
            self.stream.write("\n")
            self.stream.flush()


def run(notebooks_dir: str | os.PathLike = "notebooks", out_root: str | os.PathLike = "reports", *,
        parameters: dict | None = None, per_notebook: dict | None = None, only: list[str] | None = None,
        jobs: int | None = None, show_code: bool = False, title: str = "clm report", keep_runs: int | None = None,
        run_id: str | None = None, notebook_timeout: float | None = None, engine: str = "duckdb",
        spark_master: str | None = None, preload_kernels: bool = True, kernel_server=None) -> RunResult:
    """Execute notebooks into a new run folder under ``out_root``; point ``latest`` at it if all succeeded.

    ``jobs`` notebooks run at a time, each in a fresh kernel (default: the
    number of cores). ``engine`` ("duckdb" or "spark", with ``spark_master``)
    is where the notebooks' event-level aggregations run, checked (pyspark,
    Java) before anything runs. ``notebook_timeout`` (seconds) stops a notebook that
    runs longer, with its kernel, and reports it as "timeout". ``keep_runs``
    deletes the oldest run folders beyond that number (never the one
    ``latest`` points to). With ``preload_kernels`` (default; off with
    ``CLM_PRELOAD_KERNELS=0``) each notebook's fresh kernel is forked from a
    server that imported the libraries once (``clm_helpers.kernels``);
    ``kernel_server`` is a server the caller started earlier
    (``kernels.server()``, as ``clm run`` does before its own imports): the
    run uses it instead of starting one, and the caller ends it.

    The run is written to ``out_root/.tmp-<run id>`` and moved to
    ``out_root/<run id>`` when it ends. SIGTERM or SIGINT stop the running
    notebooks and the run is recorded as "killed" with what had finished; a
    run whose process was killed outright (SIGKILL) is recorded the same way
    by the next run in the same folder. ``latest`` only moves to a run in
    which every notebook succeeded.
    """
    from . import kernels

    run_with = functools.partial(_run, notebooks_dir=notebooks_dir, out_root=out_root, parameters=parameters,
                                 per_notebook=per_notebook, only=only, jobs=jobs, show_code=show_code, title=title,
                                 keep_runs=keep_runs, run_id=run_id, notebook_timeout=notebook_timeout, engine=engine,
                                 spark_master=spark_master)
    if kernel_server is not None:
        return run_with(kernel_server)
    # the kernel server's imports (its own process, ~3 s) overlap everything up to the first notebook: the checks,
    # the dataset's validation and the warm-up of rendering here
    with kernels.server(enabled=preload_kernels) as server:
        return run_with(server)


def _run(server, notebooks_dir, out_root, *, parameters, per_notebook, only, jobs, show_code, title, keep_runs, run_id,
         notebook_timeout, engine, spark_master) -> RunResult:
    parameters = dict(parameters or {})
    notebooks_dir, out_root = Path(notebooks_dir).resolve(), Path(out_root).resolve()
    notebooks = discover_notebooks(notebooks_dir)
    if not notebooks:
        raise ParameterError(f"no notebooks (*.ipynb) in {notebooks_dir}")
    plan = plan_run(notebooks, only=only, shared=parameters, per_notebook=per_notebook)
    from . import engine as engines

    env = engines.environment(engine, spark_master=spark_master)
    jobs = max(1, jobs or os.cpu_count() or 1)
    if env.get("CLM_ENGINE") == "duckdb":
        env.update(engines.duckdb_environment(jobs))  # the notebooks side by side share the cores and memory
    out_root.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(out_root)
    run_id = run_id or _new_run_id(out_root)
    tmp = out_root / f".tmp-{run_id}"
    tmp.mkdir()
    (tmp / ".pid").write_text(str(os.getpid()))
    result = RunResult(run_id=run_id, folder=out_root / run_id, parameters=parameters, title=title, started=_now(),
                       engine={k.removeprefix("CLM_").lower(): v for k, v in env.items()})
    (tmp / ".plan.json").write_text(json.dumps({"run_id": run_id, "title": title, "started": result.started, "parameters": parameters,
                                                "per_notebook": per_notebook or {}, "plan": plan, "show_code": show_code}, default=str))
    progress = _Progress(plan)
    with _interruptible():
        cache_env = _dataset_cache(parameters.get("dataset"), tmp / ".dataset")
        _warm_up_rendering(show_code)
        env = {**env, **server.environment(), **cache_env}  # the kernel server, the kernels' private folder, the cached data
        result.notebooks, result.interrupted = _execute_all(plan, notebooks, tmp, jobs=jobs,
                                                            show_code=show_code, title=title, progress=progress,
                                                            timeout=notebook_timeout, env=env)
    progress.close()
    result.finished = _now()
    _finish_run(result, tmp, per_notebook=per_notebook)
    if result.ok:  # `latest` only ever points to a run where every notebook succeeded
        _point_latest(out_root, run_id)
    if keep_runs:
        _prune(out_root, keep_runs)
    write_runs_index(out_root)
    return result


def _dataset_cache(source, folder: Path) -> dict:
    """Load and validate the run's dataset once for all its notebooks (``datasets.write_run_cache``); {} if it cannot be.

    A source that fails validation is not cached: each notebook then reports
    the validation error itself, as it would without the cache.
    """
    if not source:
        return {}
    from . import datasets

    try:
        datasets.write_run_cache(source, folder)
    except (ClmError, OSError):
        shutil.rmtree(folder, ignore_errors=True)
        return {}
    return {datasets.RUN_CACHE_ENV: str(folder)}


class _interruptible:
    """Within the block, SIGTERM raises RunInterrupted (SIGINT already raises KeyboardInterrupt); the old handler is restored after."""

    def __enter__(self):
        import signal

        self.previous = None
        if threading.current_thread() is threading.main_thread():
            def stop(signum, frame):
                raise RunInterrupted(signum)

            self.previous = signal.signal(signal.SIGTERM, stop)
        return self

    def __exit__(self, *exc):
        import signal

        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
        return False


def _finish_run(result: RunResult, tmp: Path, *, per_notebook) -> None:
    """Write run.json and the index into the temporary folder, then move it into place in one step."""
    _write_run(result, tmp, per_notebook=per_notebook)
    for leftover in (".pid", ".plan.json"):
        (tmp / leftover).unlink(missing_ok=True)
    # .dataset: the run's validated copy of the data, never published; .tmp: DuckDB's spill files (kernels run in the folder)
    for scratch in (".results", ".dataset", ".tmp"):
        shutil.rmtree(tmp / scratch, ignore_errors=True)
    for partial in tmp.glob(".*.partial"):  # a progress save cut short by a killed worker
        partial.unlink(missing_ok=True)
    os.replace(tmp, result.folder)


def _remove_abandoned(out_root: Path) -> None:
    """Record the ``.tmp-*`` folders of runs whose process was killed outright as killed runs (or delete them if unreadable)."""
    for tmp in out_root.glob(".tmp-*"):
        try:
            pid = int((tmp / ".pid").read_text())
            os.kill(pid, 0)  # still running: leave it alone
            continue
        except ProcessLookupError:
            pass
        except (OSError, ValueError):
            continue
        try:
            _recover(tmp, out_root)
        except Exception:  # not even the plan is readable: nothing to report, only to clean
            shutil.rmtree(tmp, ignore_errors=True)


def _recover(tmp: Path, out_root: Path) -> None:
    plan = json.loads((tmp / ".plan.json").read_text())
    reason = "the runner process was killed before the run finished (found by the next run)"
    result = RunResult(run_id=plan["run_id"], folder=out_root / plan["run_id"], parameters=plan["parameters"], title=plan["title"],
                       started=plan["started"], finished="", interrupted=reason)
    for name, params in plan["plan"].items():
        done = _load_result(tmp, name)
        if done is None:
            started = (tmp / f"{name}.ipynb").exists()
            done = _stopped(name, tmp, params, status="killed" if started else "not run", seconds=0.0, show_code=plan["show_code"],
                            title=plan["title"], error=f"{'Killed' if started else 'NotRun'}: {reason}")
        result.notebooks.append(done)
    _finish_run(result, tmp, per_notebook=plan["per_notebook"])


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _new_run_id(out_root: Path) -> str:
    """UTC start time, sortable; two runs in the same second get -1, -2, ..."""
    stamp = run_id = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    n = 0
    while (out_root / run_id).exists() or (out_root / f".tmp-{run_id}").exists():
        n += 1
        run_id = f"{stamp}-{n}"
    return run_id


def _write_run(result: RunResult, folder: Path, *, per_notebook) -> None:
    record = {
        "run_id": result.run_id,
        "title": result.title,
        "started": result.started,
        "finished": result.finished,
        "status": result.status,
        "interrupted": result.interrupted,
        "parameters": result.parameters,
        "engine": result.engine,
        "notebook_parameters": per_notebook or {},
        "packages": package_versions(_PACKAGES + (("pyspark",) if result.engine.get("engine") == "spark" else ())).to_dict()["version"],
        "notebooks": [{k: v for k, v in asdict(n).items() if k != "metrics"} for n in result.notebooks],
        "metrics": result.metrics,
    }
    (folder / "run.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    (folder / "index.html").write_text(render_run_index(record), encoding="utf-8")
    (folder / "glossary.html").write_text(render_glossary(result.title), encoding="utf-8")


def _longest_first(plan: dict, out_root: Path) -> list[str]:
    """The order to start notebooks in: longest first by the last complete run's durations (unknown ones first), else plan order.

    With ``jobs`` slots, starting the long notebooks first keeps one long
    notebook from starting last and running alone at the end.
    """
    try:
        last = json.loads((out_root / "latest" / "run.json").read_text())
        seconds = {n["notebook"]: float(n["seconds"]) for n in last["notebooks"]}
    except (OSError, ValueError, KeyError, TypeError):
        return list(plan)
    return sorted(plan, key=lambda name: -seconds.get(name, math.inf))  # stable: ties keep plan order


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


def list_runs(out_root: str | os.PathLike) -> list[dict]:
    """The ``run.json`` of every finished run under ``out_root``, oldest first."""
    runs = []
    for path in sorted(Path(out_root).glob("*/run.json")):
        if path.parent.is_symlink() or path.parent.name.startswith("."):
            continue
        try:
            runs.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return runs


def _prune(out_root: Path, keep: int) -> None:
    latest = os.readlink(out_root / "latest") if (out_root / "latest").is_symlink() else None
    finished = [r["run_id"] for r in list_runs(out_root)]
    for run_id in finished[:-keep] if keep < len(finished) else []:
        if run_id != latest:
            shutil.rmtree(out_root / run_id, ignore_errors=True)


# ----------------------------------------------------------------------------- HTML pages

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:1100px;margin:2rem auto;padding:0 1rem;color:#1d2230;line-height:1.45}
h1{margin-bottom:.2rem}.meta{color:#5b6275;margin-top:0}
.tiles{display:grid;grid-template-columns:repeat(auto-fill,minmax(170px,1fr));gap:.8rem;margin:1.2rem 0}
.tile{border:1px solid #d9dce3;border-radius:8px;padding:.7rem .9rem;break-inside:avoid}
.tile .label{font-size:.85rem;color:#5b6275}.tile .value{font-size:1.6rem;font-weight:600}
.tile details{font-size:.8rem;color:#3d4356}.tile summary{cursor:pointer;color:#2f5bb7}
table{border-collapse:collapse;width:100%;margin:1rem 0}th,td{text-align:left;padding:.4rem .6rem;border-bottom:1px solid #e3e5ea;vertical-align:top}
.ok{color:#1b7f3b;font-weight:600}.failed,.timeout,.killed,.not{color:#b3261e;font-weight:600}
pre{white-space:pre-wrap;word-break:break-word;background:#f6f7f9;padding:.5rem;border-radius:4px;font-size:.8rem}
img{max-width:100%}
.trends{display:flex;flex-wrap:wrap;gap:.6rem}.trend{border:1px solid #e3e5ea;border-radius:6px;max-width:100%;height:auto}
.trend text{font-size:11px;fill:#5b6275}.trend .t{font-size:12px;font-weight:600;fill:#1d2230}.trend .ax{stroke:#c4c8d2}
.trend polyline{fill:none;stroke:#2f5bb7;stroke-width:1.5}.trend circle{fill:#2f5bb7}
@media print{a{color:inherit;text-decoration:none}.tile details{display:block}}
"""


def _fmt(value, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit == "%":
        return f"{value:,.1f}%"
    if unit == "ratio":
        return f"{value:,.2f}:1"
    if unit in ("customers",):
        return f"{value:,.0f}"
    if unit == "currency":
        return f"{value:,.2f}"
    return f"{value:,.1f}"


def _page(title: str, body: str) -> str:
    e = html.escape
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{e(title)}</title><style>{_CSS}</style></head><body>{body}</body></html>\n")


def _tiles(metrics: dict) -> str:
    e = html.escape
    tiles = []
    ids = [m for m in HEADLINES if m in metrics] + [m for m in metrics if m not in HEADLINES]
    for mid in ids:
        m = metrics[mid]
        label, unit, definition = HEADLINES.get(mid, (m.get("label", mid), m.get("unit", ""), ""))
        definition = _catalog_definition(mid) or definition
        tiles.append(
            f"<div class=\"tile\"><div class=\"label\">{e(label)}</div>"
            f"<div class=\"value\">{e(_fmt(m.get('value'), unit))}</div>"
            f"<details><summary>definition</summary>{e(definition or 'see the notebook')} "
            f"<br><a href=\"glossary.html#{e(mid)}\">glossary</a> · from <a href=\"{e(m.get('notebook', ''))}.html\">{e(m.get('notebook', ''))}</a>.</details></div>"
        )
    return f"<div class=\"tiles\">{''.join(tiles)}</div>" if tiles else "<p>No headline figures were published.</p>"


def _catalog_definition(metric_id: str) -> str | None:
    from .catalog import load_catalog

    table = load_catalog()
    return table.at[metric_id, "definition"] if metric_id in table.index else None


def render_glossary(title: str) -> str:
    """The metric catalog as a page, grouped by lifecycle stage, one anchor per metric."""
    from .catalog import glossary_html

    return _page(f"{title}: metric definitions", f"<h1>Metric definitions</h1><p class=\"meta\"><a href=\"index.html\">back to the run</a></p>{glossary_html()}")


def render_run_index(record: dict) -> str:
    """The run's index page: title, dataset and parameters, headline tiles, one row per notebook."""
    e = html.escape
    shown = {**record["parameters"], **{k: v for k, v in record.get("engine", {}).items()}}
    params = "".join(f"<tr><th>{e(str(k))}</th><td>{e(json.dumps(v, default=str))}</td></tr>" for k, v in shown.items())
    rows = []
    for nb in record["notebooks"]:
        name = e(nb["notebook"])
        link = f"<a href=\"{e(nb['html'])}\">{name}</a>" if nb["html"] else name
        detail = ""
        if nb["status"] != "ok":
            detail = f"<pre>{e(nb.get('error') or '')}</pre>"
            if nb.get("failed_cell"):
                detail += f"<details><summary>cell that failed</summary><pre>{e(nb['failed_cell'])}</pre></details>"
        rows.append(f"<tr><td>{link}</td><td class=\"{e(nb['status'])}\">{e(nb['status'])}</td>"
                    f"<td>{nb['seconds']:.1f}s</td><td>{detail}</td></tr>")
    body = (
        f"<h1>{e(record['title'])}</h1>"
        f"<p class=\"meta\">Run {e(record['run_id'])} · started {e(record['started'])} · finished {e(record['finished'])} · "
        f"<span class=\"{e(record['status'])}\">{e(record['status'])}</span> · <a href=\"run.json\">run.json</a> · <a href=\"glossary.html\">metric definitions</a> · <a href=\"../index.html\">all runs</a></p>"
        f"<h2>Headline figures</h2>{_tiles(record['metrics'])}"
        f"<h2>Notebooks</h2><table><tr><th>notebook</th><th>status</th><th>duration</th><th></th></tr>{''.join(rows)}</table>"
        f"<h2>Parameters</h2><table>{params}</table>"
    )
    return _page(record["title"], body)


def _trend_svg(runs: list[dict]) -> str | None:
    """Small multiples of each headline figure across runs, as inline SVG (None if no figure has two values).

    One panel per headline figure with a value in at least two runs, in
    ``HEADLINES`` order; runs oldest to newest from left to right, a point
    per run with a value (a run without one breaks the line), the lowest and
    highest value on the y axis, the first and last run's date below (and
    time, when they are of the same day). Each point has a tooltip (run id
    and value). Written by hand rather than with
    matplotlib: the runner then never imports pyplot, and the page stays
    small and sharp at any zoom and in print (a PNG of 11 panels cost 1.1 s
    at the end of every run).
    """
    e = html.escape

    def value(run, mid):
        v = run.get("metrics", {}).get(mid, {}).get("value")
        try:
            v = float(v)
        except (TypeError, ValueError):
            return None
        return v if math.isfinite(v) else None

    ids = [m for m in HEADLINES if sum(value(r, m) is not None for r in runs) >= 2]
    if not ids:
        return None
    width, height, left, right, top, bottom = 340, 150, 64, 12, 26, 30
    plot_w, plot_h = width - left - right, height - top - bottom
    n = len(runs)

    def x_at(i):
        return left + (plot_w * i / (n - 1) if n > 1 else plot_w / 2)

    first, last = runs[0]["run_id"][:8], runs[-1]["run_id"][:8]
    if first == last:  # runs of one day: their times tell them apart
        first, last = (f"{r['run_id'][:8]} {r['run_id'][9:11]}:{r['run_id'][11:13]}" for r in (runs[0], runs[-1]))
    panels = []
    for mid in ids:
        label, unit, _ = HEADLINES[mid]
        values = [value(r, mid) for r in runs]
        known = [v for v in values if v is not None]
        lo, hi = min(known), max(known)
        span = hi - lo

        def y_at(v):
            return top + plot_h / 2 if span == 0 else top + plot_h * (hi - v) / span

        lines, segment, points = [], [], []
        for i, v in enumerate(values):
            if v is None:
                if len(segment) > 1:
                    lines.append(segment)
                segment = []
                continue
            x, y = f"{x_at(i):.1f}", f"{y_at(v):.1f}"
            segment.append(f"{x},{y}")
            points.append(f"<circle cx=\"{x}\" cy=\"{y}\" r=\"3\"><title>{e(runs[i]['run_id'])}: {e(_fmt(v, unit))}</title></circle>")
        if len(segment) > 1:
            lines.append(segment)
        ticks = [(hi, top), (lo, top + plot_h)] if span else [(hi, top + plot_h / 2)]
        panels.append(
            f"<svg class=\"trend\" viewBox=\"0 0 {width} {height}\" width=\"{width}\" height=\"{height}\" role=\"img\" "
            f"aria-label=\"{e(label)} across {n} runs: from {e(_fmt(known[0], unit))} to {e(_fmt(known[-1], unit))}\">"
            f"<text x=\"{left}\" y=\"15\" class=\"t\">{e(label)}</text>"
            f"<line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{top + plot_h}\" class=\"ax\"/>"
            f"<line x1=\"{left}\" y1=\"{top + plot_h}\" x2=\"{left + plot_w}\" y2=\"{top + plot_h}\" class=\"ax\"/>"
            + "".join(f"<text x=\"{left - 4}\" y=\"{y + 4:.1f}\" text-anchor=\"end\">{e(_fmt(v, unit))}</text>" for v, y in ticks)
            + f"<text x=\"{left}\" y=\"{height - 8}\">{e(first)}</text>"
            + (f"<text x=\"{left + plot_w}\" y=\"{height - 8}\" text-anchor=\"end\">{e(last)}</text>" if n > 1 else "")
            + "".join(f"<polyline points=\"{' '.join(seg)}\"/>" for seg in lines)
            + "".join(points) + "</svg>"
        )
    return f"<div class=\"trends\">{''.join(panels)}</div>"


def write_runs_index(out_root: str | os.PathLike) -> Path:
    """``<out>/index.html``: every run with its status and headline figures, and their trend across runs."""
    e = html.escape
    out_root = Path(out_root)
    runs = list_runs(out_root)
    latest = os.readlink(out_root / "latest") if (out_root / "latest").is_symlink() else None
    ids = [m for m in HEADLINES if any(m in r.get("metrics", {}) for r in runs)]
    head = "".join(f"<th>{e(HEADLINES[m][0])}</th>" for m in ids)
    rows = []
    for r in reversed(runs):
        cells = "".join(f"<td>{e(_fmt(r['metrics'][m].get('value'), HEADLINES[m][1]) if m in r.get('metrics', {}) else '')}</td>" for m in ids)
        mark = " (latest)" if r["run_id"] == latest else ""
        rows.append(f"<tr><td><a href=\"{e(r['run_id'])}/index.html\">{e(r['run_id'])}</a>{mark}</td>"
                    f"<td>{e(r.get('title', ''))}</td><td class=\"{e(r.get('status', ''))}\">{e(r.get('status', ''))}</td>{cells}</tr>")
    svg = _trend_svg(runs)
    trend = f"<h2>Trends</h2>{svg}" if svg else ""
    body = (f"<h1>clm reports</h1><p class=\"meta\">{len(runs)} run(s); "
            + (f"<a href=\"latest/index.html\">latest complete run</a>" if latest else "no complete run yet")
            + f"</p>{trend}<h2>Runs</h2><table><tr><th>run</th><th>title</th><th>status</th>{head}</tr>{''.join(rows)}</table>")
    path = out_root / "index.html"
    tmp = out_root / ".index.html.tmp"
    tmp.write_text(_page("clm reports", body), encoding="utf-8")
    os.replace(tmp, path)
    return path


def significant(obj, digits: int = 4):
    """Floats rounded to ``digits`` significant digits (a DataFrame, Series or number; other and whole-number columns as they are).

    For the key-figure cells that nbval checks: a model's optimum agrees
    across library versions to about 1e-7, so figures printed to seven or
    eight digits change with a new SciPy while the result does not. Four
    significant digits keep every change that matters and none of that noise.
    """
    import numpy as np
    import pandas as pd

    def rounded(values):
        x = np.asarray(values, dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            magnitude = np.floor(np.log10(np.abs(x)))
        factor = 10.0 ** (digits - 1 - np.where(np.isfinite(magnitude), magnitude, 0))
        return np.where(np.isfinite(x), np.round(x * factor) / factor, x)

    if isinstance(obj, pd.DataFrame):
        out = obj.copy()
        for column in out.columns:
            values = out[column]
            if pd.api.types.is_float_dtype(values) and not (values.dropna() % 1 == 0).all():  # counts stored as floats stay whole
                out[column] = rounded(values)
        return out
    if isinstance(obj, pd.Series):
        return pd.Series(rounded(obj), index=obj.index, name=obj.name) if pd.api.types.is_float_dtype(obj) else obj
    return float(rounded(obj))


def figures(obj, digits: int = 4, **to_string) -> str:
    """A table (or series) as text with floats to ``digits`` significant digits (``significant``): 2,707,000 / 0.1116 / 5.9."""
    def fmt(v: float) -> str:
        return f"{v:,.0f}" if abs(v) >= 10 ** (digits - 1) else f"{v:.{digits}g}"

    return significant(obj, digits).to_string(float_format=fmt, **to_string)


_PACKAGES = ("clm", "pandas", "numpy", "scipy", "lifetimes", "ibis-framework", "duckdb", "papermill", "matplotlib")


def package_versions(names=_PACKAGES):
    """Installed versions of the packages a report's numbers depend on (for the closing cell of every notebook)."""
    import pandas as pd

    rows = [{"package": name, "version": version} for name, version in _installed_versions(tuple(names))]
    return pd.DataFrame(rows).set_index("package")


@functools.cache
def _installed_versions(names: tuple) -> tuple:
    """(package, version) for Python and each of ``names``, once per process: finding a package's metadata scans
    the whole path (about 35 ms for the nine). The runner's kernel server reads them once for all its kernels."""
    import platform
    from importlib import metadata

    found = [("python", platform.python_version())]
    for name in names:
        try:
            found.append((name, metadata.version(name)))
        except metadata.PackageNotFoundError:
            found.append((name, "not installed"))
    return tuple(found)
