"""clm_helpers.clv_plots: each plot draws on the axes it is given, returns them and labels its axes."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from clm_helpers import clv, clv_plots  # noqa: E402


@pytest.fixture(scope="module")
def comparison():
    tx, truth = clv.simulate_transactions(1500, seed=4)
    return clv.compare_models(tx, calibration_end="2024-12-31", observation_end=truth["observation_end"], time_unit="W")


def _check(ax, given):
    assert ax is given
    assert ax.get_title() and ax.get_xlabel() and ax.get_ylabel()
    plt.close(ax.figure)


def test_model_plots_draw_on_the_given_axes(comparison):
    m = comparison.models["bgnbd"]
    for draw in (
        lambda ax: clv_plots.plot_period_transactions(m, comparison.summary, ax=ax),
        lambda ax: clv_plots.plot_calibration_vs_holdout(comparison, ax=ax),
        lambda ax: clv_plots.plot_cumulative_tracking(comparison, ax=ax),
        lambda ax: clv_plots.plot_probability_alive_matrix(m, comparison.summary, ax=ax),
        lambda ax: clv_plots.plot_frequency_recency_matrix(m, comparison.summary, horizon=26, ax=ax),
        lambda ax: clv_plots.plot_clv_deciles(clv.clv_deciles(pd.Series(np.arange(100.0))), ax=ax),
    ):
        ax = plt.subplots()[1]
        _check(draw(ax), ax)


def test_cohort_plots_draw_on_the_given_axes():
    counts = pd.DataFrame([[100, 70, 55, 47, 41], [120, 80, 66, np.nan, np.nan]], index=["2024-01", "2024-02"],
                          columns=range(5))
    models = clv.fit_sbg_cohorts(counts, min_customers=10)
    for draw in (lambda ax: clv_plots.plot_cohort_survival(counts, models, horizon=12, ax=ax),
                 lambda ax: clv_plots.plot_retention_curves(models, horizon=12, ax=ax)):
        ax = plt.subplots()[1]
        _check(draw(ax), ax)


def test_reporting_helpers(comparison):
    s = comparison.summary
    m = comparison.models["bgnbd"]
    values = pd.Series(np.linspace(0, 100, len(s)), index=s.index)
    dec = clv.clv_deciles(values)
    assert dec["customers"].sum() == len(s) and dec["share_of_value"].sum() == pytest.approx(1.0)
    risk = clv.customers_at_risk(m, s, values)
    assert (risk["p_alive"] < 0.5).all() and (risk["p_alive_change"] < 0).all()
    assert (risk["clv"] >= np.quantile(values, 0.8)).all()
    masked = clv.mask_ids(["a", "b", "a"])
    assert masked[0] == masked[2] != masked[1] and masked[0].startswith("cust-")
    customers = pd.DataFrame({"customer_id": s.index, "country": ["FR", "DE"] * (len(s) // 2) + ["FR"] * (len(s) % 2)})
    by = clv.value_by_segment(values, customers, "country")
    assert by["customers"].sum() == len(s)
