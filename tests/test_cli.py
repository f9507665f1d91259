"""The `clm` command: a run folder per run, failures reported, bad parameters refused before anything runs."""

import json
import re
import os
import sys
import tempfile

import nbformat
import pytest

from clm_helpers import cli
from clm_helpers.report import ParameterError, run

from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures" / "notebooks"


def test_run_writes_notebook_html_and_run_json_and_points_latest(tmp_path):
    code = cli.main(["run", "--notebooks", str(FIXTURES), "--out", str(tmp_path), "--only", "a_ok",
                     "--dataset", "cdnow", "--param", 'label=it\'s "quoted"\\n', "--param", "n=3"])
    assert code == 0
    latest = tmp_path / "latest"
    assert latest.is_symlink()
    run_json = json.loads((latest / "run.json").read_text())
    assert run_json["parameters"] == {"dataset": "cdnow", "label": 'it\'s "quoted"\\n', "n": "3"}
    assert [n["status"] for n in run_json["notebooks"]] == ["ok"]
    executed = nbformat.read(latest / "a_ok.ipynb", as_version=4)
    nbformat.validate(executed)  # progress saves are compact JSON; the published notebook is nbformat's own, checked
    assert (latest / "a_ok.ipynb").read_text().startswith("{\n \"cells\": [")
    # the string arrives exactly as typed; the integer arrives as an integer
    assert executed.cells[-1].outputs[0]["text"] == "dataset='cdnow' label='it\\'s \"quoted\"\\\\n' n=3\n"
    html = (latest / "a_ok.html").read_text()
    assert "dataset=&#39;cdnow&#39;" in html or "dataset='cdnow'" in html
    assert "print(f" not in html  # code hidden by default


def test_failed_notebook_is_reported_others_finish_and_latest_is_kept(tmp_path, capsys):
    assert cli.main(["run", "--notebooks", str(FIXTURES), "--out", str(tmp_path), "--only", "a_ok"]) == 0
    good = os.readlink(tmp_path / "latest")
    code = cli.main(["run", "--notebooks", str(FIXTURES), "--out", str(tmp_path)])
    assert code == 1
    assert "failed: b_fails: RuntimeError: deliberate failure for the runner tests" in capsys.readouterr().err
    assert os.readlink(tmp_path / "latest") == good
    runs = sorted(p for p in tmp_path.iterdir() if p.name[0].isdigit())
    failed_run = json.loads((runs[-1] / "run.json").read_text())
    status = {n["notebook"]: (n["status"], n["error"]) for n in failed_run["notebooks"]}
    assert status["a_ok"] == ("ok", None)
    assert status["b_fails"][0] == "failed" and "deliberate failure" in status["b_fails"][1]
    assert (runs[-1] / "b_fails.html").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_undeclared_parameter_fails_before_anything_runs(tmp_path):
    with pytest.raises(ParameterError, match=r"notebook a_ok does not declare parameter\(s\) \['horizon'\]; it declares \['dataset', 'label', 'n'\]"):
        run(FIXTURES, tmp_path, parameters={"horizon": "12"}, only=["a_ok"])
    assert list(tmp_path.iterdir()) == []


def test_unknown_notebook_fails_before_anything_runs(tmp_path, capsys):
    assert cli.main(["run", "--notebooks", str(FIXTURES), "--out", str(tmp_path), "--only", "nope"]) == 2
    assert "no notebook named ['nope']; notebooks are ['a_ok', 'b_fails', 'c_metrics', 'd_hostile']" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_sample_command_writes_the_dataset(tmp_path):
    assert cli.main(["sample", "--customers", "300", "--seed", "1", "--out", str(tmp_path / "s")]) == 0
    assert (tmp_path / "s" / "ground_truth.json").exists()


def test_published_headlines_reach_run_json_and_index_but_not_the_notebook_html(tmp_path):
    result = run(FIXTURES, tmp_path, parameters={"dataset": "sample"}, only=["a_ok", "c_metrics"], jobs=2, title="Weekly <CLM>")
    assert result.ok
    record = json.loads((tmp_path / "latest" / "run.json").read_text())
    assert record["metrics"]["nps"] == {"value": 12.5, "label": "NPS", "unit": "points", "notebook": "c_metrics"}
    assert record["metrics"]["csat"]["value"] is None  # NaN is published as missing, never as a number
    assert {"run_id", "title", "started", "finished", "status", "parameters", "packages", "notebooks"} <= set(record)
    assert record["packages"]["pandas"]
    assert [n["notebook"] for n in record["notebooks"]] == ["a_ok", "c_metrics"]
    index = (tmp_path / "latest" / "index.html").read_text()
    assert "Weekly &lt;CLM&gt;" in index and "<CLM>" not in index
    assert '<a href="c_metrics.html">c_metrics</a>' in index
    assert "12.5" in index and "Share of answers to &quot;How likely are you to recommend us?&quot;" in index
    assert (tmp_path / "latest" / "glossary.html").read_text().count("<dt id=") >= 10
    assert "vnd.clm.metric" not in (tmp_path / "latest" / "c_metrics.html").read_text()
    assert "published" in (tmp_path / "latest" / "c_metrics.html").read_text()
    runs_index = (tmp_path / "index.html").read_text()
    assert f'href="{result.run_id}/index.html"' in runs_index


def test_failed_notebook_shows_its_error_and_cell_in_the_index(tmp_path):
    result = run(FIXTURES, tmp_path, parameters={"dataset": "sample"}, only=["b_fails"])
    index = (result.folder / "index.html").read_text()
    assert "RuntimeError: deliberate failure for the runner tests" in index
    assert "raise RuntimeError(&quot;deliberate failure" in index


def test_per_notebook_parameter_must_be_declared_by_that_notebook(tmp_path):
    with pytest.raises(ParameterError, match=r"notebook b_fails does not declare parameter\(s\) \['label'\]; it declares \['dataset'\]"):
        run(FIXTURES, tmp_path, parameters={"dataset": "x"}, per_notebook={"b_fails": {"label": "y"}})
    assert cli.main(["run", "--notebooks", str(FIXTURES), "--out", str(tmp_path), "--only", "a_ok", "--param", "a_ok:n=x"]) == 2


def test_keep_runs_prunes_the_oldest(tmp_path):
    for _ in range(3):
        run(FIXTURES, tmp_path, parameters={"dataset": "s"}, only=["a_ok"], keep_runs=2)
    runs = sorted(p.name for p in tmp_path.iterdir() if p.name[0].isdigit())
    assert len(runs) == 2
    assert os.readlink(tmp_path / "latest") == runs[-1]


def test_config_file_drives_a_run(tmp_path):
    config = tmp_path / "weekly.yaml"
    config.write_text(
        f"title: Weekly\nout: {tmp_path / 'out'}\nnotebooks_dir: {FIXTURES}\njobs: 1\n"
        "parameters: {label: from config}\nnotebooks:\n  a_ok: {n: 5}\n"
    )
    assert cli.main(["run", "--config", str(config)]) == 0
    record = json.loads((tmp_path / "out" / "latest" / "run.json").read_text())
    assert record["title"] == "Weekly"
    assert record["notebooks"][0]["parameters"] == {"dataset": "sample", "label": "from config", "n": 5}


@pytest.mark.parametrize(
    "text, message",
    [
        ("titel: x\n", r"unknown key 'titel'; valid keys are \['dataset', 'engine', 'jobs'"),
        ("jobs: two\n", r"jobs \(notebooks run at a time\) must be int, got 'two'"),
        ("jobs: 0\n", r"jobs must be at least 1, got 0"),
        ("show_code: 1\n", r"show_code \(keep code cells in the HTML\) must be bool, got 1"),
        ("- a\n- b\n", r"a config is a mapping of keys"),
        ("notebooks: {a_ok: 3}\n", r"notebooks.a_ok must map parameter names to values, got 3"),
        ("title: [unclosed\n", r"not valid YAML"),
    ],
)
def test_invalid_config_names_the_key_and_reason(tmp_path, text, message):
    from clm_helpers.report import ConfigError, load_config

    config = tmp_path / "bad.yaml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(config)


def test_the_shipped_example_configs_are_valid():
    from clm_helpers.report import load_config

    configs = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))
    assert [c.name for c in configs] == ["monthly.yaml", "weekly.yaml"]
    for c in configs:
        load_config(c)


def notebooks_with(folder: Path, **extra_cells) -> Path:
    """A notebook folder holding a_ok and, per keyword, a copy of a_ok with one more code cell (name=code)."""
    folder.mkdir()
    base = nbformat.read(FIXTURES / "a_ok.ipynb", as_version=4)
    nbformat.write(base, folder / "a_ok.ipynb")
    for name, code in extra_cells.items():
        nb = nbformat.read(FIXTURES / "a_ok.ipynb", as_version=4)
        nb.cells.append(nbformat.v4.new_code_cell(code))
        nbformat.write(nb, folder / f"{name}.ipynb")
    return folder


def run_json(folder: Path) -> dict:
    return json.loads((folder / "run.json").read_text())


def test_killed_run_is_recorded_by_the_next_run_and_latest_is_left_alone(tmp_path):
    import signal
    import subprocess
    import time

    out = tmp_path / "out"
    assert cli.main(["run", "--notebooks", str(FIXTURES), "--out", str(out), "--only", "a_ok"]) == 0
    good = os.readlink(out / "latest")
    slow = notebooks_with(tmp_path / "slow", b_slow="import time; time.sleep(60)")
    private = set(Path(tempfile.gettempdir()).glob("clm-kernels-*"))  # kernel folders (sockets, keys) before this run
    proc = subprocess.Popen([sys.executable, "-m", "clm_helpers.cli", "run", "--notebooks", str(slow), "--out", str(out), "--jobs", "2"],
                            start_new_session=True)
    deadline = time.monotonic() + 60
    while not list(out.glob(".tmp-*/.results/a_ok.json")) and time.monotonic() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the runner and its workers, no chance to clean up
    proc.wait()
    (abandoned,) = set(Path(tempfile.gettempdir()).glob("clm-kernels-*")) - private  # its sockets and kernels' keys
    assert os.readlink(out / "latest") == good
    assert [p.name for p in out.iterdir() if p.name[0].isdigit()] == [good]
    # the next run finds the abandoned folder and records it as a killed run, keeping what had finished
    assert cli.main(["run", "--notebooks", str(FIXTURES), "--out", str(out), "--only", "a_ok"]) == 0
    assert not list(out.glob(".tmp-*"))
    assert not abandoned.exists()
    runs = sorted(p for p in out.iterdir() if p.name[0].isdigit() and not p.is_symlink())
    killed = run_json(runs[1])
    assert killed["status"] == "killed" and "runner process was killed" in killed["interrupted"]
    status = {n["notebook"]: n["status"] for n in killed["notebooks"]}
    assert status == {"a_ok": "ok", "b_slow": "killed"}
    assert "killed" in (runs[1] / "index.html").read_text()
    assert os.readlink(out / "latest") == runs[2].name


def test_sigterm_stops_the_run_and_records_what_finished(tmp_path):
    import signal
    import subprocess
    import time

    out = tmp_path / "out"
    folder = notebooks_with(tmp_path / "nbs", b_slow="import time; time.sleep(60)", c_later="x = 1")
    proc = subprocess.Popen([sys.executable, "-m", "clm_helpers.cli", "run", "--notebooks", str(folder), "--out", str(out), "--jobs", "1"],
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    def sleeping():  # papermill saves the notebook with the running cell marked when the cell starts
        for path in out.glob(".tmp-*/b_slow.ipynb"):
            try:
                cells = nbformat.read(path, as_version=4).cells
            except Exception:  # caught while papermill was writing it
                return False
            return any("time.sleep(60)" in c.source and c.metadata.get("papermill", {}).get("status") == "running" for c in cells)
        return False

    while not sleeping() and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)  # what cron, Airflow and systemd send to stop a task
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "killed: the run was interrupted (SIGTERM or SIGINT)" in err
    (folder_run,) = [p for p in out.iterdir() if p.name[0].isdigit()]
    record = run_json(folder_run)
    assert record["status"] == "killed"
    status = {n["notebook"]: (n["status"], (n["error"] or "").split(":")[0]) for n in record["notebooks"]}
    assert status == {"a_ok": ("ok", ""), "b_slow": ("killed", "Killed"), "c_later": ("not run", "NotRun")}
    slow = next(n for n in record["notebooks"] if n["notebook"] == "b_slow")
    assert "time.sleep(60)" in slow["failed_cell"]  # the cell that was running
    assert (folder_run / "b_slow.html").exists()  # its partial output is kept
    assert not (out / "latest").exists()
    assert not list(out.glob(".tmp-*"))


def test_notebook_past_its_time_limit_is_stopped_and_the_others_finish(tmp_path):
    folder = notebooks_with(tmp_path / "nbs", b_slow="import time; time.sleep(120)")
    config = tmp_path / "run.yaml"
    config.write_text(f"notebooks_dir: {folder}\nout: {tmp_path / 'out'}\nnotebook_timeout: 8\njobs: 2\n")
    assert cli.main(["run", "--config", str(config)]) == 1
    (folder_run,) = [p for p in (tmp_path / "out").iterdir() if p.name[0].isdigit()]
    record = run_json(folder_run)
    assert record["status"] == "failed"
    slow = next(n for n in record["notebooks"] if n["notebook"] == "b_slow")
    assert slow["status"] == "timeout"
    assert "past the per-notebook time limit of 8 s" in slow["error"]
    assert "time.sleep(120)" in slow["failed_cell"]  # read from the last progress save
    assert not list(folder_run.glob(".*")), "scratch files were published"
    assert next(n for n in record["notebooks"] if n["notebook"] == "a_ok")["status"] == "ok"
    assert "timeout" in (folder_run / "index.html").read_text()


def test_a_kernel_that_dies_is_reported_with_the_reason(tmp_path):
    folder = notebooks_with(tmp_path / "nbs", b_dies="import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    result = run(folder, tmp_path / "out", jobs=2)
    status = {n.notebook: n for n in result.notebooks}
    assert status["a_ok"].status == "ok"
    assert status["b_dies"].status == "failed"
    assert "DeadKernelError" in status["b_dies"].error, status["b_dies"].error
    assert "os.kill" in (status["b_dies"].failed_cell or ""), status["b_dies"].failed_cell


def test_parallel_notebooks_with_relative_paths_do_not_race(tmp_path, monkeypatch):
    # papermill changes the working directory of its process while a notebook runs; with relative
    # paths and notebooks in threads of one process, a second notebook could no longer be found
    monkeypatch.chdir(FIXTURES.parent)
    result = run("notebooks", tmp_path / "out", parameters={"dataset": "sample"}, only=["a_ok", "c_metrics", "d_hostile"], jobs=3)
    assert [n.status for n in result.notebooks] == ["ok", "ok", "ok"], [n.error for n in result.notebooks]
    assert os.getcwd() == str(FIXTURES.parent)


def test_significant_rounds_model_figures_but_keeps_counts_whole():
    import pandas as pd

    from clm_helpers import report

    table = pd.DataFrame({"estimate": [25.87851, 0.000123456, -182475.2344], "n": [42411.0, 3.0, 0.0], "name": ["a", "b", "c"]})
    out = report.significant(table)
    assert out["estimate"].tolist() == [25.88, 0.0001235, -182500.0]
    assert out["n"].tolist() == [42411.0, 3.0, 0.0] and out["name"].tolist() == ["a", "b", "c"]
    assert report.significant(2707123.4) == 2707000.0
    assert report.figures(table[["estimate"]]).splitlines()[1:] == ["0     25.88", "1 0.0001235", "2  -182,500"]


def test_the_same_config_on_the_same_data_gives_the_same_headline_figures(tmp_path):
    # the notebooks whose headlines come from model fits, random draws (CLV intervals) and joins
    notebooks = Path(__file__).parent.parent / "notebooks"
    names = ["acquisition", "clv_customer_value", "cx_surveys", "lifecycle"]
    first = run(notebooks, tmp_path / "a", parameters={"dataset": "sample"}, only=names, jobs=2)
    second = run(notebooks, tmp_path / "b", parameters={"dataset": "sample"}, only=names, jobs=2)
    assert first.ok and second.ok, [(n.notebook, n.error) for n in first.notebooks + second.notebooks if n.error]
    assert len(first.metrics) >= 8
    assert run_json(first.folder)["metrics"] == run_json(second.folder)["metrics"]


def test_engine_reaches_the_kernels_and_run_json(tmp_path):
    folder = notebooks_with(tmp_path / "nbs", b_engine=(
        "import pandas as pd\n"
        "from clm_helpers import clv, engine\n"
        "tx = pd.DataFrame({'customer_id': ['a', 'a', 'b'], 'timestamp': pd.to_datetime(['2024-01-01', '2024-01-09', '2024-01-02']),"
        " 'amount': [10.0, 20.0, 5.0]})\n"
        "s = clv.rfm_summary(tx, observation_end='2024-01-31')\n"
        "print(engine.current(), type(engine.backend()).__module__, s.loc['a', 'frequency'])"))
    result = run(folder, tmp_path / "out", only=["b_engine"], engine="spark", spark_master="local[1]")
    assert result.ok, result.notebooks[0].error
    executed = nbformat.read(result.folder / "b_engine.ipynb", as_version=4)
    assert executed.cells[-1].outputs[-1]["text"].split() == ["spark", "ibis.backends.pyspark", "1.0"]
    record = run_json(result.folder)
    assert record["engine"] == {"engine": "spark", "spark_master": "local[1]"}
    assert "pyspark" in record["packages"]


def test_unknown_engine_or_spark_master_without_spark_fail_before_anything_runs(tmp_path):
    from clm_helpers.engine import EngineError

    with pytest.raises(EngineError, match="engine must be one of"):
        run(FIXTURES, tmp_path, only=["a_ok"], engine="bigquery")
    with pytest.raises(EngineError, match="spark_master applies to the spark engine only"):
        run(FIXTURES, tmp_path, only=["a_ok"], spark_master="local[2]")
    assert not list(tmp_path.iterdir())


def test_the_dataset_is_validated_once_per_run_and_its_copy_is_not_published(tmp_path, monkeypatch):
    from clm_helpers import datasets

    calls = []
    real = datasets.write_run_cache
    monkeypatch.setattr(datasets, "write_run_cache", lambda source, folder: calls.append(source) or real(source, folder))
    folder = notebooks_with(tmp_path / "nbs", b_cached=(
        "import os\nfrom clm_helpers import datasets\n"
        "ds = datasets.load(dataset)\n"
        "print(os.environ.get('CLM_DATASET_CACHE', '').endswith('.dataset'), len(ds.transactions), ds.notes == datasets.load(dataset, mapping={}).notes)"))
    result = run(folder, tmp_path / "out", parameters={"dataset": "cdnow"}, jobs=2)
    assert result.ok, [n.error for n in result.notebooks]
    assert calls == ["cdnow"]
    executed = nbformat.read(result.folder / "b_cached.ipynb", as_version=4)
    assert executed.cells[-1].outputs[-1]["text"].split() == ["True", "69659", "True"]
    assert not (result.folder / ".dataset").exists() and not list(result.folder.rglob("*.arrow"))


def test_a_dataset_that_fails_validation_is_reported_by_each_notebook(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "transactions.csv").write_text("customer_id,timestamp,amount\na,2024-01-01,ten\n")
    folder = notebooks_with(tmp_path / "nbs", b_loads="from clm_helpers import datasets\ndatasets.load(dataset)")
    result = run(folder, tmp_path / "out", parameters={"dataset": str(bad)}, only=["b_loads"])
    assert result.notebooks[0].status == "failed"
    assert result.notebooks[0].error.startswith("SchemaError: transactions.amount: 1 of 1 rows are not numbers")


def test_report_pages_render_headings_and_tables_and_clean_what_data_brings(tmp_path):
    folder = tmp_path / "nbs"
    folder.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell('dataset = "sample"', metadata={"tags": ["parameters"]}),
        nbformat.v4.new_markdown_cell("## A heading\nA paragraph with **bold** text."),
        nbformat.v4.new_code_cell(
            "import pandas as pd\nfrom IPython.display import Markdown, display\n"
            "display(Markdown('### Computed\\n\\nChannel **<img src=x onerror=alert(1)>** <script>alert(2)</script> done.'))\n"
            "display(pd.DataFrame({'channel': ['<b>x</b>'], 'n': [3]}))"),
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, folder / "page.ipynb")
    result = run(folder, tmp_path / "out")
    assert result.ok, result.notebooks[0].error
    page = (result.folder / "page.html").read_text()
    assert "&lt;h2" not in page and "&lt;p&gt;" not in page and "&lt;th" not in page  # structure renders, not shown as text
    assert '<h2 id="A-heading">' in page and '<h3 id="Computed">Computed' in page and "<th>channel</th>" in page
    assert "Channel <strong></strong>  done." in page
    assert "onerror" not in page and "alert(2)" not in page and "<img src=\"x\"" not in page
    assert "&lt;b&gt;x&lt;/b&gt;" in page  # a value in a table stays text


def test_notebooks_start_longest_first_by_the_last_complete_run(tmp_path):
    from clm_helpers.report import _longest_first

    plan = {"a": {}, "b": {}, "c": {}, "new": {}}
    assert _longest_first(plan, tmp_path) == ["a", "b", "c", "new"]  # no earlier run: plan order
    (tmp_path / "run1").mkdir()
    (tmp_path / "run1" / "run.json").write_text(json.dumps({"notebooks": [
        {"notebook": "a", "seconds": 2.0}, {"notebook": "b", "seconds": 9.5}, {"notebook": "c", "seconds": 2.0}]}))
    (tmp_path / "latest").symlink_to("run1")
    assert _longest_first(plan, tmp_path) == ["new", "b", "a", "c"]  # unknown first, then longest; ties keep plan order


def in_new_python(code: str, *, env: dict | None = None) -> list[str]:
    """Run ``code`` in a new interpreter (what the command imports and leaves at exit is its own): its output lines."""
    import subprocess

    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()


def test_the_command_leaves_out_jsonschemas_iri_grammars_and_notebooks_still_validate():
    """``clm run`` marks rfc3987_syntax absent before Papermill imports jsonschema (2.2 s of parser building at every
    run); nbformat still validates notebooks and rejects a broken one."""
    code = (
        "import sys; from clm_helpers import cli; cli._without_iri_grammars(); import nbformat, papermill\n"
        "assert sys.modules['rfc3987_syntax'] is None, 'the IRI grammars were built'\n"
        "nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell('x = 1')]); nbformat.validate(nb)\n"
        "nb.cells[0]['outputs'] = 'not a list'\n"
        "try:\n    nbformat.validate(nb)\nexcept nbformat.ValidationError:\n    print('rejected')\n"
    )
    assert in_new_python(code) == ["rejected"]


def test_the_command_starts_the_kernel_server_before_its_own_imports_and_the_run_uses_that_one(tmp_path):
    """The server's imports (~3 s) hold up the first notebook: ``clm run`` starts it before importing pandas and
    Papermill (0.5 s), and the run forks its kernels from it instead of starting a second one."""
    code = (
        "import contextlib, json, sys\n"
        "from clm_helpers import cli, kernels\n"
        "real, seen = kernels.server, []\n"
        "@contextlib.contextmanager\n"
        "def server(*a, **k):\n"
        "    seen.append(sorted(m for m in ('pandas', 'papermill', 'clm_helpers.data', 'clm_helpers.report') if m in sys.modules))\n"
        "    with real(*a, **k) as handle:\n"
        "        yield handle\n"
        "        seen.append(bool(handle.environment().get(kernels.SERVER_ENV)) and handle._process.poll() is None)\n"
        "kernels.server = server\n"
        f"code = cli.main(['run', '--notebooks', {str(FIXTURES)!r}, '--out', {str(tmp_path)!r}, '--only', 'a_ok'])\n"
        "print(json.dumps([code, seen]))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "CLM_PRELOAD_KERNELS"}
    code, seen = json.loads(in_new_python(code, env=env)[-1])
    # one server, started before the heavy imports, ready and still running when the run had finished
    assert (code, seen) == (0, [[], True])
    executed = nbformat.read(tmp_path / "latest" / "a_ok.ipynb", as_version=4)
    assert executed.cells[-1].outputs[0]["name"] == "stdout"


def test_the_command_leaves_its_objects_to_the_exit_but_a_caller_s_process_keeps_its_collector(tmp_path):
    """As the process's command (``main()`` without arguments) the objects are frozen for the exit, where Python's
    last garbage collection took 0.4 s; called with arguments, from a process that goes on, nothing is frozen."""
    code = (
        "import atexit, gc, sys\n"
        "from clm_helpers import cli\n"
        f"argv = ['run', '--notebooks', {str(FIXTURES)!r}, '--out', {str(tmp_path)!r}, '--only', 'a_ok']\n"
        "assert cli.main(argv) == 0 and gc.get_freeze_count() == 0\n"
        "atexit.register(lambda: print('frozen at exit:', gc.get_freeze_count() > 0))\n"
        "sys.argv = ['clm'] + argv\n"
        "sys.exit(cli.main())\n"
    )
    assert in_new_python(code)[-1] == "frozen at exit: True"


def _fake_run(out_root, run_id, metrics, status="ok"):
    folder = out_root / run_id
    folder.mkdir(parents=True)
    record = {"run_id": run_id, "title": "weekly", "status": status, "notebooks": [],
              "metrics": {m: {"value": v, "notebook": "x"} for m, v in metrics.items()}}
    (folder / "run.json").write_text(json.dumps(record))


def test_the_runs_index_draws_each_headline_figure_across_runs(tmp_path):
    from clm_helpers.report import write_runs_index

    _fake_run(tmp_path, "20260105T060000Z", {"nps": 30.0, "clv": 100.0, "cac": 20.0})
    _fake_run(tmp_path, "20260112T060000Z", {"nps": 35.5, "clv": None, "cac": 20.0}, status="failed")
    _fake_run(tmp_path, "20260119T060000Z", {"nps": 31.0, "clv": 120.0, "cac": 20.0})
    _fake_run(tmp_path, "20260126T060000Z", {"nps": 33.0, "clv": 110.0, "ces": 5.0})
    page = write_runs_index(tmp_path).read_text()
    panels = re.findall(r'<svg class="trend".*?</svg>', page)
    # one panel per figure with two or more values, in the tiles' order; CES (one value) has none
    assert [re.search(r'class="t">([^<]*)<', p).group(1) for p in panels] == ["CAC (blended)", "CLV", "NPS"]
    cac, clv, nps = panels
    assert nps.count("<circle") == 4 and nps.count("<polyline") == 1
    assert "<title>20260112T060000Z: 35.5</title>" in nps  # a failed run's figure is still a point of the trend
    assert ">35.5</text>" in nps and ">30.0</text>" in nps  # the highest and lowest value label the y axis
    assert ">20260105</text>" in nps and ">20260126</text>" in nps  # first and last run below
    assert 'aria-label="NPS across 4 runs: from 30.0 to 33.0"' in nps
    # the run without a CLV breaks the line: the first point stands alone, the last two are joined
    assert clv.count("<circle") == 3 and clv.count("<polyline") == 1
    ys = {y for y in re.findall(r'cy="([\d.]+)"', clv)}
    assert len(ys) == 3
    # a constant figure sits mid-height, with one label
    assert cac.count("<circle") == 3 and len(set(re.findall(r'cy="([\d.]+)"', cac))) == 1 and cac.count(">20.00</text>") == 1
    assert "data:image/png" not in page


def test_the_runs_index_tells_runs_of_one_day_apart_by_their_time(tmp_path):
    from clm_helpers.report import write_runs_index

    _fake_run(tmp_path, "20260105T060000Z", {"nps": 30.0})
    _fake_run(tmp_path, "20260105T183000Z", {"nps": 31.0})
    page = write_runs_index(tmp_path).read_text()
    assert ">20260105 06:00</text>" in page and ">20260105 18:30</text>" in page


def test_the_runs_index_has_no_trend_before_a_second_value(tmp_path):
    from clm_helpers.report import write_runs_index

    _fake_run(tmp_path, "20260105T060000Z", {"nps": 30.0, "csat": float("inf")})
    _fake_run(tmp_path, "20260112T060000Z", {"nps": None, "csat": None})
    page = write_runs_index(tmp_path).read_text()
    assert "Trends" not in page and "<svg" not in page and "20260105T060000Z" in page


def test_a_stopped_notebook_keeps_every_finished_cell_s_output(tmp_path):
    """Progress is saved when each code cell starts: the cells before the one running, Markdown between them, are kept."""
    folder = tmp_path / "nbs"
    folder.mkdir()
    nb = nbformat.read(FIXTURES / "a_ok.ipynb", as_version=4)
    nb.cells += [nbformat.v4.new_code_cell("print('finished before the slow cell')"),
                 nbformat.v4.new_markdown_cell("## Between the two"),
                 nbformat.v4.new_code_cell("import time; time.sleep(120)")]
    nbformat.write(nb, folder / "slow.ipynb")
    result = run(folder, tmp_path / "out", jobs=1, notebook_timeout=8)
    (slow,) = result.notebooks
    assert slow.status == "timeout"
    assert "time.sleep(120)" in slow.failed_cell
    page = (result.folder / "slow.html").read_text()
    assert "finished before the slow cell" in page and "Between the two" in page


def test_pages_rendered_by_one_exporter_do_not_carry_each_other_s_content(tmp_path):
    """The runner reuses one nbconvert exporter per process: a page must not depend on the pages rendered before it."""
    from clm_helpers.report import _to_html

    def notebook(text):
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_markdown_cell(f"# {text}"),
                    nbformat.v4.new_code_cell("shown_only_with_code = 1", outputs=[nbformat.v4.new_output("stream", name="stdout", text=f"{text} out\n")])]
        return nb

    first = notebook("first page")
    _to_html(nbformat.from_dict(first), tmp_path / "a1.html", show_code=False, title="A")
    _to_html(notebook("second page"), tmp_path / "b.html", show_code=True, title="B")
    _to_html(nbformat.from_dict(first), tmp_path / "a2.html", show_code=False, title="A")
    a1, b, a2 = ((tmp_path / f).read_text() for f in ("a1.html", "b.html", "a2.html"))
    assert a1 == a2
    assert "second page" in b and "first page" not in b and "first page" in a1 and "second page" not in a1
    assert "shown_only_with_code" in b and "shown_only_with_code" not in a1  # code shown only where asked
