"""The metric catalog: one definition per metric the suite reports, read from ``catalog.yaml``.

Each entry has an id, a name, the lifecycle stage it belongs to, its
definition in words, the formula, the unit, which direction is good, a common
benchmark with its source where one is well established, the function that
computes it (``module.function``) and the notebooks that report it. Reports
link a metric's name to its entry in the glossary (``glossary_html``), and the
run index takes its headline definitions from here.
"""

from __future__ import annotations

import functools
import html
import importlib
from pathlib import Path

import pandas as pd

from .data import ClmError

__all__ = ["CatalogError", "STAGES", "FIELDS", "load_catalog", "definition", "glossary_markdown", "glossary_html"]

CATALOG_PATH = Path(__file__).with_name("catalog.yaml")

#: Lifecycle stages, in journey order.
STAGES = ("reach/acquire", "onboard/activate", "engage", "retain", "grow/advocate", "win-back")

FIELDS = ("id", "name", "stage", "definition", "formula", "unit", "good", "benchmark", "function", "notebooks", "via")
OPTIONAL = ("benchmark", "via")  # via: the function a notebook calls when it reaches this one through another


class CatalogError(ClmError, ValueError):
    """The metric catalog has a malformed entry."""


@functools.cache
def load_catalog(path: str | None = None) -> pd.DataFrame:
    """The catalog as a table indexed by metric id (cached; pass a path to read another file)."""
    import yaml

    source = Path(path) if path else CATALOG_PATH
    entries = yaml.safe_load(source.read_text())["metrics"]
    for i, entry in enumerate(entries):
        missing = [f for f in FIELDS if f not in entry and f not in OPTIONAL]
        if missing:
            raise CatalogError(f"{source.name}: entry {i} ({entry.get('id', '?')}) lacks {missing}")
        if entry["stage"] not in STAGES:
            raise CatalogError(f"{source.name}: {entry['id']}: stage must be one of {list(STAGES)}, got {entry['stage']!r}")
        if entry["good"] not in ("higher", "lower", "neutral"):
            raise CatalogError(f"{source.name}: {entry['id']}: good must be higher, lower or neutral, got {entry['good']!r}")
    # object dtype: absent optional fields stay None (pandas 3 would turn them into NaN in a str column)
    table = pd.DataFrame([{f: e.get(f) for f in FIELDS} for e in entries], dtype=object).set_index("id")
    duplicated = table.index[table.index.duplicated()].tolist()
    if duplicated:
        raise CatalogError(f"{source.name}: duplicate metric ids {duplicated}")
    return table


def definition(metric_id: str) -> str:
    """The written definition of one metric."""
    table = load_catalog()
    if metric_id not in table.index:
        raise CatalogError(f"no metric {metric_id!r} in the catalog; ids are {sorted(table.index)}")
    return table.at[metric_id, "definition"]


def resolve(function: str):
    """The callable named ``module.function`` inside clm_helpers."""
    module, _, name = function.rpartition(".")
    return getattr(importlib.import_module(f"clm_helpers.{module}"), name)


def glossary_markdown() -> str:
    """The catalog grouped by lifecycle stage, as Markdown (for a notebook or README)."""
    table = load_catalog()
    parts = []
    for stage in STAGES:
        rows = table[table["stage"] == stage]
        if rows.empty:
            continue
        parts.append(f"## {stage}\n")
        for mid, r in rows.iterrows():
            bench = f" Benchmark: {r['benchmark']}." if r["benchmark"] else ""
            parts.append(f"- **{r['name']}** (`{mid}`, {r['unit']}, {r['good']} is better): {r['definition']} "
                         f"Formula: `{r['formula']}`.{bench} Computed by `clm_helpers.{r['function']}`.\n")
    return "\n".join(parts)


def glossary_html() -> str:
    """The catalog as an HTML fragment with one anchor per metric (``glossary.html#nps``)."""
    e = html.escape
    table = load_catalog()
    out = []
    for stage in STAGES:
        rows = table[table["stage"] == stage]
        if rows.empty:
            continue
        out.append(f"<h2>{e(stage)}</h2><dl>")
        for mid, r in rows.iterrows():
            bench = f"<br>Benchmark: {e(r['benchmark'])}" if r["benchmark"] else ""
            out.append(
                f"<dt id=\"{e(mid)}\"><strong>{e(r['name'])}</strong> <code>{e(mid)}</code> · {e(r['unit'])} · {e(r['good'])} is better</dt>"
                f"<dd>{e(r['definition'])}<br>Formula: <code>{e(r['formula'])}</code>{bench}"
                f"<br>Computed by <code>clm_helpers.{e(r['function'])}</code>; reported in {e(', '.join(r['notebooks']))}.</dd>"
            )
        out.append("</dl>")
    return "".join(out)
