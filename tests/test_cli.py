"""The `clm` command: a run folder per run, failures reported, bad parameters refused before anything runs."""

import json
import os

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
    assert "failed: b_fails" in capsys.readouterr().err
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
    assert "no notebook named ['nope']; notebooks are ['a_ok', 'b_fails']" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_sample_command_writes_the_dataset(tmp_path):
    assert cli.main(["sample", "--customers", "300", "--seed", "1", "--out", str(tmp_path / "s")]) == 0
    assert (tmp_path / "s" / "ground_truth.json").exists()
