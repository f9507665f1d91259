"""The one-page overview: each headline equals its stage function's figure, and what cannot be computed says why."""

import math

import pandas as pd
import pytest

from clm_helpers import acquisition, datasets, engagement, lifecycle, onboarding, overview, retention, survey
from clm_helpers.data import OptionError


@pytest.fixture(scope="module")
def sample():
    return datasets.load("sample")


@pytest.fixture(scope="module")
def table(sample):
    return overview.stage_headlines(sample, observation_end="2024-12-31", clv_model="bgnbd")


def row(table, metric):
    return table.set_index("metric").loc[metric]


def test_every_stage_has_a_headline_and_every_figure_is_finite(table):
    assert list(dict.fromkeys(table["stage"])) == ["reach/acquire", "onboard/activate", "engage", "retain", "grow/advocate"]
    assert table["value"].notna().all(), table.loc[table["value"].isna(), ["metric", "note"]]
    for column in ("value", "previous", "change"):
        assert all(math.isfinite(v) for v in table[column])


def test_period_figures_are_the_lifecycle_counts_of_the_last_two_months(sample, table):
    counts = lifecycle.stage_counts(sample.transactions, observation_end="2024-12-31", period="M")
    assert row(table, "active_customers")["value"] == counts["active"].iloc[-1]
    assert row(table, "new_customers")["previous"] == counts["new"].iloc[-2]
    assert row(table, "churn_rate")["value"] == pytest.approx(counts["churn_pct"].iloc[-1])
    assert row(table, "new_customers")["current_window"] == "2024-12"


@pytest.mark.parametrize("end, period", [("2024-12-31", "M"), ("2024-11-20", "M"), ("2024-12-18", "W"), ("2024-12-29", "W")])
def test_last_two_period_figures_equal_the_whole_tables(sample, end, period):
    """Stickiness and inactivity churn are computed over the last two complete periods only: the same figures as the
    last two of the whole history's tables."""
    t = overview.stage_headlines(sample, observation_end=end, period=period, clv_model="bgnbd").set_index("metric")
    sticky = engagement.stickiness(sample.product_events, observation_end=end)["stickiness_pct"].dropna()
    assert (t.loc["stickiness", "value"], t.loc["stickiness", "previous"]) == (sticky.iloc[-1], sticky.iloc[-2])
    churn = retention.inactivity_churn(sample.transactions, observation_end=end, window_days=180, period=period)["churn_pct"]
    assert (t.loc["inactivity_churn_rate", "value"], t.loc["inactivity_churn_rate", "previous"]) == (churn.iloc[-1], churn.iloc[-2])
    assert t.loc["inactivity_churn_rate", "current_window"] == str(churn.index[-1])


def test_window_figures_cover_the_last_twelve_months_and_the_twelve_before(sample, table):
    now = dict(observation_start="2024-01-01", observation_end="2024-12-31")
    before = dict(observation_start="2023-01-01", observation_end="2023-12-31")
    cac = [acquisition.cac_totals(acquisition.cac(sample.customers, sample.marketing_spend, period="all",
                                                  transactions=sample.transactions, **w)).iloc[0]["blended_cac"] for w in (now, before)]
    assert (row(table, "cac")["value"], row(table, "cac")["previous"]) == pytest.approx(cac)
    activation = [onboarding.activation_rate(onboarding.activation(sample.customers, sample.product_events, **w), by=None)
                  .iloc[0]["activation_rate"] for w in (now, before)]  # two tables; the overview reads one (as_of)
    assert (row(table, "activation_rate")["value"], row(table, "activation_rate")["previous"]) == tuple(activation)
    ctr = engagement.email_metrics(sample.email_events, by=None, **now).iloc[0]["click_through_rate"]
    assert row(table, "email_click_through_rate")["value"] == pytest.approx(ctr)
    s = sample.surveys
    answers = s.loc[(s["survey"] == "nps") & (s["timestamp"] >= "2024-01-01") & (s["timestamp"] < "2025-01-01"), "score"]
    assert row(table, "nps")["value"] == pytest.approx(survey.nps(answers).value)
    assert row(table, "nps")["current_window"] == "2024-01-01 to 2024-12-31"
    assert row(table, "nps")["previous_window"] == "2023-01-01 to 2023-12-31"


def test_verdict_follows_the_good_direction():
    base = {"value": 10.0, "previous": 12.0, "change": -2.0, "unit": "%"}
    assert overview.verdict(pd.Series({**base, "good": "lower"})) == "better"
    assert overview.verdict(pd.Series({**base, "good": "higher"})) == "worse"
    assert overview.verdict(pd.Series({**base, "change": 0.001, "good": "higher"})) == "unchanged"  # rounds to 0.00 as shown
    assert overview.verdict(pd.Series({**base, "previous": None, "good": "higher"})) == ""


def test_sentences_state_both_windows_and_the_verdict(table):
    lines = overview.headline_sentences(table)
    cac = lines[table.index[table["metric"] == "cac"][0]]
    assert cac.startswith("CAC, blended (spend / new customers): **28.23**, against 28.50 in 2023-01-01 to 2023-12-31")
    assert cac.endswith("better).")


def test_a_transactions_only_dataset_lists_what_it_cannot_give():
    tx = pd.DataFrame({"customer_id": ["a", "a", "b", "b", "c"],
                       "timestamp": ["2024-01-05", "2024-02-10", "2024-01-20", "2024-03-03", "2024-02-14"],
                       "amount": [10.0, 12.0, 5.0, 7.5, 20.0]})
    ds = datasets.from_frames("tiny", transactions=tx)
    table = overview.stage_headlines(ds, observation_end="2024-03-31", window_months=1)
    missing = table.set_index("metric")["note"]
    assert missing["cac"] == "no marketing_spend table: CAC cannot be computed"
    assert missing["nps"] == "no surveys table: experience cannot be measured"
    assert table.set_index("metric").loc[["cac", "nps", "activation_rate"], "value"].isna().all()
    assert row(table, "active_customers")["value"] == 1  # only b bought in March
    lines = overview.headline_sentences(table)
    assert "CAC, blended (spend / new customers): not available (no marketing_spend table: CAC cannot be computed)." in lines


def test_a_company_younger_than_the_comparison_window_gets_figures_without_a_previous_value(sample):
    """Nine months of data and 12-month windows: the earlier window is empty. Each figure is computed, or says why
    not, and no warning or error reaches the report (an empty earlier window once crashed the activation row)."""
    import warnings

    cut = pd.Timestamp("2024-04-01")
    dates = {"customers": "signup_date", "marketing_spend": "date", "subscriptions": "start_date"}
    frames = {name: getattr(sample, name)[lambda df, c=dates.get(name, "timestamp"): df[c] >= cut].reset_index(drop=True)
              for name in ("customers", "transactions", "email_events", "product_events", "marketing_spend", "surveys", "subscriptions")}
    young = datasets.from_frames("young", **frames)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table = overview.stage_headlines(young, observation_end="2024-12-31").set_index("metric")
    window = ["cac", "activation_rate", "email_click_through_rate", "email_unsubscribe_rate", "clv", "nps", "csat", "ces"]
    assert table.loc[window, "value"].notna().all() and table.loc[window, "previous"].isna().all()
    assert table.loc[["new_customers", "active_customers", "stickiness"], "previous"].notna().all()  # the month before is in the data
    assert all(overview.headline_sentences(table.reset_index()))


def test_bad_options_are_refused(sample):
    with pytest.raises(OptionError, match="period must be one of"):
        overview.stage_headlines(sample, period="D")
    with pytest.raises(OptionError, match=r"period must be one of \['M', 'W'\], got 'Q'"):  # the stage counts have no quarters
        overview.stage_headlines(sample, period="Q")
    with pytest.raises(OptionError, match="window_months must be at least 1"):
        overview.stage_headlines(sample, window_months=0)


def test_sharing_the_tables_changes_no_figure_and_modifies_no_table(sample, table, monkeypatch):
    """stage_headlines converts each table once (engine.shared): the same table as converting per query, inputs untouched."""
    import contextlib

    from clm_helpers import engine

    before = {name: df.copy() for name, df in sample.tables().items()}
    shared = overview.stage_headlines(sample, observation_end="2024-12-31", clv_model="bgnbd")
    for name, df in sample.tables().items():
        pd.testing.assert_frame_equal(df, before[name], obj=name)
    pd.testing.assert_frame_equal(shared, table)
    monkeypatch.setattr(engine, "shared", lambda *frames: contextlib.nullcontext())
    one_by_one = overview.stage_headlines(sample, observation_end="2024-12-31", clv_model="bgnbd")
    pd.testing.assert_frame_equal(shared, one_by_one, check_exact=False, rtol=1e-9, atol=0)
