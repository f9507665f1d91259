"""The set-up files agree with each other, and notebooks are committed clean."""

import json
import re
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _requirement(text: str) -> tuple[str, str]:
    """('pandas', '>=2.2,<4') from 'pandas>=2.2,<4'; extras are part of the name."""
    m = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+(?:\[[^\]]+\])?)\s*(.*)", text)
    return m.group(1).lower().replace("_", "-"), m.group(2).replace(" ", "")


def test_environment_yml_lists_the_same_dependencies_as_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = [req for reqs in project["optional-dependencies"].values() for req in reqs]
    declared = dict(map(_requirement, project["dependencies"] + extras))
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    listed = {}
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            listed.update(map(_requirement, dep["pip"]))
        elif dep != "pip" and not dep.startswith("python="):
            listed.update([_requirement(dep)])
    assert listed == declared


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_committed_without_outputs_except_checked_cells(path):
    nb = json.loads(path.read_text())
    for i, cell in enumerate(nb["cells"]):
        tags = cell.get("metadata", {}).get("tags", [])
        if cell["cell_type"] == "code" and "nbval-check-output" not in tags:
            assert not cell.get("outputs"), f"{path.name}: cell {i} carries outputs but is not tagged nbval-check-output"
    assert sum("parameters" in c.get("metadata", {}).get("tags", []) for c in nb["cells"]) == 1


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_declares_the_dataset_parameter_and_defines_no_functions(path):
    from clm_helpers.report import notebook_parameters

    assert "dataset" in notebook_parameters(path)
    source = "\n".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code")
    assert not re.search(r"^\s*(def|class) ", source, re.M), "move functions and classes into clm_helpers"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_papermill_sees_every_parameter_the_cell_assigns(path):
    """Papermill's parser skips lines it cannot read (an apostrophe in a comment is enough); then --param would be refused."""
    import ast

    from clm_helpers.report import notebook_parameters

    cell = next(c for c in json.loads(path.read_text())["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    assigned = {t.id for node in ast.parse("".join(cell["source"])).body if isinstance(node, ast.Assign) for t in node.targets}
    assert assigned == set(notebook_parameters(path))
