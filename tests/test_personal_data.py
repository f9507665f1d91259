"""Personal data stays out of the reports: personal columns are dropped at load, ids are masked, lists are opt-in files."""

import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from clm_helpers import datasets, survey
from clm_helpers.report import run

ROOT = Path(__file__).parent.parent
NAMES = ["Ada Lovelace", "Grace Hopper", "Alan Turing"]
EMAILS = ["ada.lovelace@example.org", "grace@navy.example.mil", "alan.turing@example.ac.uk"]
PHONES = ["+44 20 7946 0958", "(555) 010-4477", "+1 202 555 0199"]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """The sample company as a folder of files, its customers carrying name, e-mail and phone, some comments carrying contact details."""
    folder = tmp_path_factory.mktemp("crm_export")
    sample = datasets.ensure_sample()
    for path in sample.glob("*.parquet"):
        shutil.copy(path, folder / path.name)
    customers = pd.read_parquet(folder / "customers.parquet")
    k = len(customers)
    customers["name"] = [NAMES[i % 3] for i in range(k)]
    customers["email"] = [EMAILS[i % 3] for i in range(k)]
    customers["phone"] = [PHONES[i % 3] for i in range(k)]
    customers.to_parquet(folder / "customers.parquet")
    surveys = pd.read_parquet(folder / "surveys.parquet")
    has_comment = surveys.index[surveys["comment"].notna()]
    for j, i in enumerate(has_comment):  # every commented answer now carries contact details, so the examples shown do too
        surveys.loc[i, "comment"] = f"{surveys.loc[i, 'comment']} write to {EMAILS[j % 3]} or call {PHONES[j % 3]}"
    surveys.to_parquet(folder / "surveys.parquet")
    return folder


def test_personal_columns_are_dropped_at_load_and_named_in_the_notes(source):
    ds = datasets.load(source)
    assert not {"name", "email", "phone"} & set(ds.customers.columns)
    assert any("ignored 3 column(s) outside the contract: name, email, phone" in note for note in ds.notes)


def test_contact_details_in_comments_are_masked():
    comments = pd.Series(["late, mail me: jo.doe+x@example.co.uk", "call +44 20 7946 0958", "see https://x.example/a", "order 12345 was fine", None])
    out = survey.redact_personal(comments)
    assert out.tolist()[:4] == ["late, mail me: [e-mail]", "call [phone]", "see [link]", "order 12345 was fine"]
    assert out.isna().tolist()[4] and out.attrs["redacted"] == 3
    assert survey.top_terms(comments, n=20)["term"].tolist().count("mail") == 1  # the placeholders are not counted as words


def test_reports_show_no_personal_data_and_customer_lists_are_opt_in_files(source, tmp_path):
    names = ["cx_surveys", "clv_customer_value", "rfm_segments", "lifecycle", "00_data_overview"]
    result = run(ROOT / "notebooks", tmp_path, parameters={"dataset": str(source)}, only=names, jobs=2,
                 per_notebook={"rfm_segments": {"export_segments": True}})
    assert result.ok, [(n.notebook, n.error) for n in result.notebooks if n.error]
    pages = {p.name: p.read_text() for p in result.folder.glob("*.html")}
    notebooks = {p.name: p.read_text() for p in result.folder.glob("*.ipynb")}
    for text in [*pages.values(), *notebooks.values()]:
        for value in NAMES + EMAILS + PHONES:
            assert value not in text
    assert "[e-mail]" in pages["cx_surveys.html"] and "[phone]" in pages["cx_surveys.html"]
    # customer ids appear masked, never as they are in the data
    ids = set(pd.read_parquet(source / "customers.parquet")["customer_id"].astype(str))
    shown = set(re.findall(r"cust-[0-9a-f]{8}", pages["clv_customer_value.html"]))
    assert shown and not shown & ids
    # customer lists are files next to the report, only from the notebook that was asked for them (export_segments=True)
    files = sorted(result.folder.glob("*.csv"))
    assert files and all(f.name.startswith("rfm_segment_") for f in files)
    exported = pd.concat(pd.read_csv(f) for f in files)
    assert not {"name", "email", "phone"} & set(exported.columns)
    assert set(exported["customer_id"].astype(str)) <= ids
