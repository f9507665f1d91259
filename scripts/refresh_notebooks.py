"""Execute notebooks and keep only the outputs nbval checks.

    python scripts/refresh_notebooks.py [notebooks/NAME.ipynb ...]

Runs each notebook top to bottom with its default parameters (the embedded
sample), then writes it back with every output stripped except in cells
tagged ``nbval-check-output``: those hold the key figures, so `make test`
fails when a number changes. Run it after a deliberate change to a figure,
and say why in the commit message.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
CHECKED = "nbval-check-output"


def strip(nb) -> None:
    nb.metadata.pop("papermill", None)
    nb.metadata.pop("widgets", None)
    count = 0
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        cell.metadata.pop("papermill", None)
        if cell.cell_type != "code":
            continue
        if CHECKED in cell.metadata.get("tags", []):
            # nbval treats a cell without an execution count as never run: number the checked ones
            count += 1
            cell.execution_count = count
            for out in cell.outputs:
                if "execution_count" in out:
                    out["execution_count"] = count
        else:
            cell.execution_count = None
            cell.outputs = []


def refresh(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=1800, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    strip(nb)
    nbformat.write(nb, path)
    print(f"refreshed {path.relative_to(ROOT)}")


if __name__ == "__main__":
    paths = [Path(p).resolve() for p in sys.argv[1:]] or sorted((ROOT / "notebooks").glob("*.ipynb"))
    for p in paths:
        refresh(p)
