"""The metric catalog is true: its functions exist, its notebooks report them, and no metric function lacks an entry."""

import importlib
import inspect
import json
from pathlib import Path

import pytest

from clm_helpers import catalog

ROOT = Path(__file__).resolve().parent.parent
TABLE = catalog.load_catalog()

#: Modules whose public functions compute reported metrics.
METRIC_MODULES = ("survey", "lifecycle", "clv", "acquisition", "onboarding", "engagement", "retention", "segmentation")
#: Public functions of those modules that are not metrics (classification helpers, fitting, I/O, data shaping).
NOT_METRICS = {
    "survey.nps_group", "survey.latest_nps_group", "survey.redact_personal",
    "lifecycle.period_bounds",
    # clv: summaries, fitting and data shaping behind the metrics above
    "clv.compress_summary", "clv.fit_model", "clv.fit_sbg", "clv.fit_sbg_cohorts", "clv.subscription_cohort_counts",
    "clv.cohort_mean_payment", "clv.holdout_split", "clv.describe_summary", "clv.model_parameters", "clv.mask_ids",
    "clv.simulate_transactions",
    # retention: data shaping for the survival functions
    "retention.subscription_durations", "retention.customer_lifetimes",
    "retention.cohort_percentages",  # cohort_matrix(normalize=True) from counts already computed (its entry covers it)
    # segmentation: the steps and shaping behind rfm_segments, and the campaign lists
    "segmentation.assign_segments", "segmentation.rfm_snapshots", "segmentation.score_ranges", "segmentation.segment_exports",
}


def notebook_code(name: str) -> str:
    nb = json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text())
    return "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")


@pytest.mark.parametrize("metric_id", TABLE.index)
def test_entry_function_exists_and_notebooks_report_it(metric_id):
    entry = TABLE.loc[metric_id]
    assert callable(catalog.resolve(entry["function"]))
    assert entry["notebooks"], metric_id
    module, name = (entry["via"] or entry["function"]).rsplit(".", 1)
    for notebook in entry["notebooks"]:
        code = notebook_code(notebook)
        assert f"{module}.{name}" in code or f"{name}(" in code, f"{notebook} does not use {entry['function']}"


def test_every_public_metric_function_has_an_entry():
    documented = set(TABLE["function"])
    missing = []
    for module_name in METRIC_MODULES:
        try:
            module = importlib.import_module(f"clm_helpers.{module_name}")
        except ImportError:
            continue
        for name in getattr(module, "__all__", []):
            obj = getattr(module, name)
            qualified = f"{module_name}.{name}"
            if inspect.isfunction(obj) and not name.startswith("plot_") and qualified not in NOT_METRICS | documented:
                missing.append(qualified)
    assert not missing, f"metric functions without a catalog entry: {missing}"


def test_catalog_fields_are_complete():
    assert set(TABLE["stage"]) <= set(catalog.STAGES)
    assert TABLE["definition"].str.len().min() > 20
    assert catalog.definition("nps").startswith("Share of answers")
    with pytest.raises(catalog.CatalogError, match=r"no metric 'nope' in the catalog"):
        catalog.definition("nope")


def test_glossary_groups_by_stage_and_escapes():
    page = catalog.glossary_html()
    assert '<dt id="nps">' in page and "<h2>grow/advocate</h2>" in page
    assert catalog.glossary_markdown().startswith("## reach/acquire")
