"""clm_helpers.clv: RFM summaries against lifetimes, published estimates, predictions, robustness.

Published numbers come from the papers (and the authors' spreadsheets) named
next to each; the data are the files lifetimes ships (CDNOW_sample.txt,
donations.csv) and, for the sBG, the two retention series printed in Fader &
Hardie (2007), Table 1.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clm_helpers import clv

lifetimes = clv._lifetimes()  # lifetimes is imported in clm_helpers.clv only
calibration_and_holdout_data = lifetimes.utils.calibration_and_holdout_data
summary_data_from_transaction_data = lifetimes.utils.summary_data_from_transaction_data
DATASETS = Path(lifetimes.datasets.__file__).parent


@pytest.fixture(scope="module")
def cdnow_tx():
    """The 2,357-customer CDNOW sample of Fader, Hardie & Lee (2005); customer_id = the id in the sample (1..2357)."""
    raw = pd.read_csv(DATASETS / "CDNOW_sample.txt", sep=r"\s+", header=None,
                      names=["master_id", "customer_id", "date", "cds", "amount"])
    return pd.DataFrame({
        "customer_id": raw["customer_id"].astype(int),
        "timestamp": pd.to_datetime(raw["date"].astype(str), format="%Y%m%d"),
        "amount": raw["amount"].astype(float),
    })


@pytest.fixture(scope="module")
def cdnow_cal(cdnow_tx):
    """The 39-week calibration summary (1997-01-01 to 1997-09-30), weeks with day precision, built from the raw log."""
    return clv.rfm_summary(cdnow_tx, observation_end="1998-06-30", calibration_end="1997-09-30", time_unit="W")


@pytest.fixture(scope="module")
def synthetic_tx():
    tx, truth = clv.simulate_transactions(3000, seed=7, customer_ids="str")
    return tx, truth


@pytest.fixture(scope="module")
def donations():
    d = pd.read_csv(DATASETS / "donations.csv")
    return d.rename(columns={"periods": "n_periods", "weights": "weight"})


def _lifetimes_equal(ours: pd.DataFrame, theirs: pd.DataFrame):
    theirs = theirs.rename(columns=lambda c: c.replace("_cal", "")).sort_index()
    assert list(ours.index) == list(theirs.index)
    assert list(ours.columns) == list(theirs.columns)
    for col in ours.columns:
        np.testing.assert_allclose(ours[col].to_numpy(), theirs[col].to_numpy(), rtol=1e-10, atol=1e-9, err_msg=col)


# ----------------------------------------------------------------------------- rfm_summary


def test_rfm_summary_equals_lifetimes_on_cdnow_weeks(cdnow_tx, cdnow_cal):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = calibration_and_holdout_data(cdnow_tx, "customer_id", "timestamp", calibration_period_end="1997-09-30",
                                              observation_period_end="1998-06-30", freq="D", freq_multiplier=7,
                                              monetary_value_col="amount")
    _lifetimes_equal(cdnow_cal, theirs)
    assert len(cdnow_cal) == 2357 and cdnow_cal["frequency"].gt(0).sum() == 946  # the papers' 946 repeat customers


def test_rfm_summary_equals_lifetimes_on_full_cdnow_days():
    from clm_helpers import datasets

    tx = datasets.load_cdnow().transactions
    ours = clv.rfm_summary(tx, observation_end="1998-06-30", time_unit="D")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = summary_data_from_transaction_data(tx, "customer_id", "timestamp", "amount",
                                                    observation_period_end="1998-06-30", freq="D")
    _lifetimes_equal(ours, theirs)
    assert len(ours) == 23_570


def test_rfm_summary_equals_lifetimes_on_synthetic(synthetic_tx):
    tx, truth = synthetic_tx
    ours = clv.rfm_summary(tx, observation_end="2025-03-31", calibration_end="2024-09-30", time_unit="D")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # our calibration_end is a whole day; lifetimes compares raw timestamps with midnight, so give it the day's end
        theirs = calibration_and_holdout_data(tx, "customer_id", "timestamp", calibration_period_end="2024-09-30 23:59:59.999999",
                                              observation_period_end="2025-03-31 23:59:59.999999", monetary_value_col="amount")
    _lifetimes_equal(ours, theirs)
    ours_w = clv.rfm_summary(tx, observation_end=truth["observation_end"], time_unit="W")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs_w = summary_data_from_transaction_data(tx, "customer_id", "timestamp", "amount",
                                                      observation_period_end=truth["observation_end"], freq="D", freq_multiplier=7)
    _lifetimes_equal(ours_w, theirs_w)


def test_rfm_summary_equals_lifetimes_on_generated_sample():
    from clm_helpers import datasets

    if not hasattr(datasets, "generate_sample"):
        pytest.skip("datasets.generate_sample is not available")
    try:
        tables, _ = datasets.generate_sample(2000, seed=11)
    except ImportError:
        pytest.skip("clm_helpers.synthetic is not available yet")
    tx = tables["transactions"]
    tx = tx[tx["amount"] >= 0]  # equality is defined on data without refunds
    end = pd.Timestamp(tx["timestamp"].max()).normalize()
    ours = clv.rfm_summary(tx, observation_end=end, time_unit="W")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = summary_data_from_transaction_data(tx, "customer_id", "timestamp", "amount", observation_period_end=end,
                                                    freq="D", freq_multiplier=7)
    _lifetimes_equal(ours, theirs)


def test_rfm_summary_by_hand_with_refunds():
    tx = pd.DataFrame({
        "customer_id": ["a", "a", "a", "a", "a", "b", "b", "c", "d"],
        "timestamp": pd.to_datetime(["2024-01-01 09:00", "2024-01-01 18:00", "2024-01-08", "2024-01-15", "2024-01-20",
                                     "2024-01-03", "2024-01-05", "2024-01-10", "2024-01-02"], format="ISO8601"),
        "amount": [10.0, 5.0, 20.0, 40.0, -30.0, 8.0, -50.0, -5.0, 7.0],
    })
    s = clv.rfm_summary(tx, observation_end="2024-01-29", time_unit="D")
    # a: purchase days Jan 1, 8, 15 (Jan 20 is a refund, not a purchase): frequency 2, recency 14, T 28;
    #    repeat spend 20 + 40 - 30 refunded = 30 over 2 days = 15
    assert s.loc["a"].tolist() == [2.0, 14.0, 28.0, 15.0]
    # b: one purchase day; the refund on Jan 5 is not a purchase; no repeat, monetary value 0
    assert s.loc["b"].tolist() == [0.0, 0.0, 26.0, 0.0]
    assert "c" not in s.index  # refunds only: no purchase occasion at all
    assert s.attrs["refund_rows"] == 3 and s.attrs["refund_only_days"] == 3 and s.attrs["refund_only_customers"] == 1
    assert s.attrs["refund_amount"] == pytest.approx(-85.0)
    tx2 = pd.concat([tx, pd.DataFrame({"customer_id": ["d", "d"], "timestamp": pd.to_datetime(["2024-01-09", "2024-01-10"]),
                                       "amount": [3.0, -10.0]})])
    s2 = clv.rfm_summary(tx2, observation_end="2024-01-29")
    assert s2.loc["d", "monetary_value"] == 0.0 and s2.attrs["clipped_monetary_value"] == 1  # never negative


def test_rfm_summary_pandas_path_equals_ibis_path(synthetic_tx):
    """A pandas frame is summarised in numpy, an Ibis table by the Ibis expression: the two agree row for row."""
    import ibis

    tx, _ = synthetic_tx
    rng = np.random.default_rng(3)
    tx = tx.sample(frac=1.0, random_state=3).reset_index(drop=True)  # unsorted rows
    refund = rng.random(len(tx)) < 0.05
    tx.loc[refund, "amount"] = -tx.loc[refund, "amount"] / 2  # refunds, some on days without a purchase
    for kw in ({"observation_end": "2025-03-31", "time_unit": "D"},
               {"observation_end": "2025-01-31", "calibration_end": "2024-09-30", "time_unit": "W"}):
        ours = clv.rfm_summary(tx, **kw)
        via_ibis = clv.rfm_summary(ibis.memtable(tx), **kw)
        assert list(ours.index) == list(via_ibis.index) and list(ours.columns) == list(via_ibis.columns)
        for col in ours.columns:
            np.testing.assert_allclose(ours[col].to_numpy(), via_ibis[col].to_numpy(), rtol=1e-10, atol=1e-9, err_msg=col)
        assert ours.attrs.keys() == via_ibis.attrs.keys()
        for k, v in ours.attrs.items():
            assert v == (pytest.approx(via_ibis.attrs[k], rel=1e-10) if isinstance(v, float) else via_ibis.attrs[k]), k
        in_period = (tx["timestamp"] < pd.Timestamp(kw["observation_end"]) + pd.Timedelta(days=1)).to_numpy()
        assert ours.attrs["refund_rows"] == int((refund & in_period).sum()) > 0


def test_rfm_summary_inputs_left_to_ibis_give_the_same_summary():
    """tz-aware timestamps go through the Ibis expression (taken as UTC days); the by-hand answer holds on both paths."""
    tx = pd.DataFrame({"customer_id": ["a", "a", "a", "b"],
                       "timestamp": pd.to_datetime(["2024-01-01 09:00", "2024-01-01 18:00", "2024-01-08 00:00", "2024-01-03 00:00"]),
                       "amount": [10.0, 5.0, 20.0, 8.0]})
    naive = clv.rfm_summary(tx, observation_end="2024-01-29", time_unit="D")
    aware = clv.rfm_summary(tx.assign(timestamp=tx["timestamp"].dt.tz_localize("UTC")), observation_end="2024-01-29", time_unit="D")
    assert naive.loc["a"].tolist() == [1.0, 7.0, 28.0, 20.0] and naive.loc["b"].tolist() == [0.0, 0.0, 26.0, 0.0]
    pd.testing.assert_frame_equal(naive, aware)


def test_rfm_summary_holdout_and_errors(cdnow_tx):
    s = clv.rfm_summary(cdnow_tx, observation_end="1998-06-30", calibration_end="1997-09-30", time_unit="W")
    assert (s["duration_holdout"] == 39.0).all()
    with pytest.raises(clv.ClvError, match="time_unit must be one of"):
        clv.rfm_summary(cdnow_tx, observation_end="1998-06-30", time_unit="M")
    with pytest.raises(clv.ClvError, match="missing column.*amount"):
        clv.rfm_summary(cdnow_tx.drop(columns="amount"), observation_end="1998-06-30")
    with pytest.raises(clv.ClvError, match="calibration_end .* is after observation_end"):
        clv.rfm_summary(cdnow_tx, observation_end="1997-06-30", calibration_end="1997-09-30")


def test_compress_summary_by_codes_equals_the_groupby():
    rng = np.random.default_rng(5)
    s = pd.DataFrame({"frequency": rng.integers(0, 4, 500).astype(float), "recency": rng.integers(0, 6, 500) / 7,
                      "T": rng.integers(5, 9, 500) / 7, "weight": rng.random(500)})
    reference = s.groupby(["frequency", "recency", "T"], sort=True, as_index=False)["weight"].sum()
    pd.testing.assert_frame_equal(clv.compress_summary(s), reference, rtol=1e-12)
    with_missing = s.assign(T=s["T"].where(s.index != 3))  # missing values: the groupby drops the row
    pd.testing.assert_frame_equal(clv.compress_summary(with_missing),
                                  with_missing.groupby(["frequency", "recency", "T"], as_index=False)["weight"].sum())


def test_bgnbd_summed_likelihood_and_gradient(cdnow_cal):
    """BG/NBD's per-distinct-value sums equal the weighted per-row eq. (6) and its gradient, and a numerical gradient."""
    m = clv.BGNBD()
    data = m._prepare(cdnow_cal)
    for params in ([0.243, 4.414, 0.793, 2.426], [1.7, 0.3, 3.0, 0.6], [0.05, 40.0, 0.2, 12.0]):
        params = np.array(params)
        ll, g = m._loglik_grad(params, data)
        total, grad = m._total_and_grad(params, data)
        assert total == pytest.approx(float(np.dot(data["weight"], ll)), rel=1e-12)
        np.testing.assert_allclose(grad, g @ data["weight"], rtol=1e-9)
        f = lambda p: float(np.dot(data["weight"], m._loglik(p, data)))  # noqa: E731
        numeric = [(f(params + h) - f(params - h)) / (2 * h[i]) for i, h in enumerate(np.eye(4) * 1e-6 * params)]
        np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-4)  # central differences of a sum of ~-10,000


def test_large_fit_newton_polish_matches_plain_lbfgs(synthetic_tx):
    """Above WARM_START_ROWS distinct rows: warm start on a subsample, then Newton steps with its Hessian; same estimate."""
    tx, truth = synthetic_tx
    s = clv.rfm_summary(tx, observation_end=truth["observation_end"], time_unit="D")
    for name in ("bgnbd", "mbgnbd"):
        plain = clv.fit_model(s, name)
        assert plain.fit_info_["n_rows"] == 1655
        # force the large-data path on this small summary: a 1,000-row subsample's Hessian is good enough for the
        # Newton steps; a 300-row one is not, and L-BFGS-B then continues from where they stopped
        for rows, newton in ((1000, True), (300, False)):
            small = clv.MODELS[name]()
            small.WARM_START_ROWS = rows
            small.fit(s)
            assert small.fit_info_["attempts"][0]["message"].startswith("Newton steps with the subsample's Hessian") == newton
            np.testing.assert_allclose(small.params_.to_numpy(), plain.params_.to_numpy(), rtol=1e-6)
            assert small.log_likelihood_ == pytest.approx(plain.log_likelihood_, rel=1e-9)


def test_compress_summary_keeps_the_likelihood(cdnow_cal):
    c = clv.compress_summary(cdnow_cal)
    assert c["weight"].sum() == len(cdnow_cal) and len(c) < len(cdnow_cal) / 2
    full = clv.fit_model(cdnow_cal, "bgnbd", compress=False)
    packed = clv.fit_model(c, "bgnbd")
    np.testing.assert_allclose(full.params_, packed.params_, rtol=1e-4)
    assert full.log_likelihood_ == pytest.approx(packed.log_likelihood_, abs=1e-6)


# ----------------------------------------------------------------------------- published estimates


def test_bgnbd_reproduces_fader_hardie_lee_2005(cdnow_cal):
    """Fader, Hardie & Lee (2005), Marketing Science 24(2), p. 280: r = 0.243, alpha = 4.414, a = 0.793, b = 2.426, LL = -9582.4."""
    m = clv.fit_model(cdnow_cal, "bgnbd")
    np.testing.assert_allclose(m.params_[["r", "alpha", "a", "b"]], [0.243, 4.414, 0.793, 2.426], atol=5e-4)
    assert m.log_likelihood_ == pytest.approx(-9582.4, abs=0.05)
    assert m.fit_info_["converged"] and m.fit_info_["penalizer"] == 0
    # Section 5: a customer with x = 2, t_x = 30.43, T = 38.86 weeks expects 1.226 purchases in the next 39 weeks.
    assert float(m.expected_purchases(39, 2, 30.43, 38.86)) == pytest.approx(1.226, abs=5e-4)
    # Hardie's BG/NBD spreadsheet (note 004), E[X(t)] at these t (weeks).
    t = np.array([0.1429, 1.0, 3.0, 31.8571, 32.0, 78.0])
    np.testing.assert_allclose(m.unconditional_expected_purchases(t), [0.0078, 0.0532, 0.1506, 1.0405, 1.0437, 1.8576], atol=2e-3)


def test_pareto_nbd_reproduces_published(cdnow_cal):
    """Fader, Hardie & Lee (2005), Marketing Science 24(2), p. 280: r = 0.553, alpha = 10.578, s = 0.606, beta = 11.669, LL = -9595.0."""
    m = clv.fit_model(cdnow_cal, "pareto_nbd")
    np.testing.assert_allclose(m.params_[["r", "alpha", "s", "beta"]], [0.553, 10.578, 0.606, 11.669], atol=2e-3)
    assert m.log_likelihood_ == pytest.approx(-9595.0, abs=0.05)
    # BTYD walkthrough (Dziurzynski, Wadsworth & McCarthy), p. 8: P(alive) of x = 26, t_x = 30.86, T = 31
    # at (0.5534, 10.5802, 0.6061, 11.6562) is 0.9979; it expects 25.46 purchases in the next 52 weeks.
    assert float(m.probability_alive(26, 30.86, 31, params=[0.5534, 10.5802, 0.6061, 11.6562])) == pytest.approx(0.9979, abs=5e-5)
    assert float(m.expected_purchases(52, 26, 30.86, 31)) == pytest.approx(25.46, abs=0.01)


def test_mbgnbd_reproduces_published(cdnow_cal):
    """MBG/NBD on CDNOW as reported by BTYDplus (Platzer), the reference lifetimes uses: 0.525, 6.183, 0.891, 1.614.

    Batislam, Denizel & Filiztekin (2007) fitted their own (Turkish grocery)
    data, which no installed package ships.
    """
    m = clv.fit_model(cdnow_cal, "mbgnbd")
    np.testing.assert_allclose(m.params_[["r", "alpha", "a", "b"]], [0.525, 6.183, 0.891, 1.614], atol=5e-4)


def test_gamma_gamma_reproduces_fader_hardie_2013(cdnow_cal):
    """Fader & Hardie (2013), "The Gamma-Gamma model of monetary value" (note 025): p = 6.25, q = 3.74, gamma = 15.44 on the 946 repeaters."""
    m = clv.fit_model(cdnow_cal, "gamma_gamma")
    np.testing.assert_allclose(m.params_[["p", "q", "v"]], [6.25, 3.74, 15.44], atol=5e-3)
    assert m.n_customers_ == 946
    # The note's spreadsheet: E(M | x, m_x) of customers 1-10 of the sample.
    head = cdnow_cal.loc[range(1, 11)]
    np.testing.assert_allclose(m.expected_average_value(head["frequency"], head["monetary_value"]),
                               [24.65, 18.91, 35.17, 35.17, 35.17, 71.46, 18.91, 35.17, 27.28, 35.17], atol=0.01)


def test_bgbb_reproduces_fader_hardie_shang_2010(donations):
    """Fader, Hardie & Shang (2010), Marketing Science 29(6), Table 3: alpha 1.204, beta 0.750, gamma 0.657, delta 2.783, LL -33,225.6."""
    m = clv.fit_model(donations, "bgbb")
    np.testing.assert_allclose(m.params_[["alpha", "beta", "gamma", "delta"]], [1.204, 0.750, 0.657, 2.783], atol=5e-4)
    assert m.log_likelihood_ == pytest.approx(-33225.6, abs=0.05)
    assert m.n_customers_ == 11_104
    # Table 6: P(alive in 2002) for (x, t_x) = (0, 0), (2, 4), (6, 6), n = 6.
    np.testing.assert_allclose(m.probability_alive([0, 2, 6], [0, 4, 6], 6, 1), [0.11, 0.59, 0.93], atol=5e-3)
    # Hardie's BG/BB spreadsheet (note 010), "Conditional Expectations" sheet: 12,884.2 donations in 1996-2001 + 5 years.
    total = (m.expected_purchases(5, donations["frequency"], donations["recency"], donations["n_periods"]) * donations["weight"]).sum()
    assert total == pytest.approx(12884.2, abs=0.5)


# Fader & Hardie (2007), "How to project customer retention", J. Interactive Marketing 21(1), Table 1:
# customers active at the start of years 0-12 of two 1,000-customer cohorts.
REGULAR = [1000, 631, 468, 382, 326, 289, 262, 241, 223, 207, 194, 183, 173]
HIGH_END = [1000, 869, 743, 653, 593, 551, 517, 491, 468, 445, 427, 409, 394]


@pytest.mark.parametrize("series, alpha, beta, ll", [(REGULAR, 0.704, 1.182, -1680.3), (HIGH_END, 0.668, 3.806, -1611.2)])
def test_sbg_reproduces_fader_hardie_2007(series, alpha, beta, ll):
    """Fitted on years 0-7 as in the paper: regular alpha 0.704, beta 1.182; high end alpha 0.668, beta 3.806."""
    m = clv.fit_sbg(series[:8])
    assert m.params_["alpha"] == pytest.approx(alpha, abs=5e-4)
    assert m.params_["beta"] == pytest.approx(beta, abs=5e-4)
    assert m.log_likelihood_ == pytest.approx(ll, abs=0.05)
    # The projection tracks the held-out years 8-12 (the paper's Figure 4) within 2 percentage points.
    np.testing.assert_allclose(m.survival(np.arange(8, 13)), np.array(series[8:]) / 1000, atol=0.02)
    np.testing.assert_allclose(m.retention(1), beta / (alpha + beta), rtol=1e-4)  # r_1 = beta / (alpha + beta)


def test_sbg_derl_equals_the_discounted_sum():
    """Fader & Hardie (2010) eq. (6) against the definition: sum_t S(n-1+t)/S(n-1) / (1+d)^(t-1)."""
    m = clv.fit_sbg(REGULAR[:8])
    for renewals in (0, 3):
        n = renewals + 1
        t = np.arange(1, 3000)
        direct = (m.survival(n - 1 + t) / m.survival(n - 1) / 1.1 ** (t - 1)).sum()
        assert float(m.derl(0.1, renewals=renewals)) == pytest.approx(direct, rel=1e-6)


# ----------------------------------------------------------------------------- against lifetimes' formulas


@pytest.mark.parametrize("name, fitter", [("bgnbd", "BetaGeoFitter"), ("pareto_nbd", "ParetoNBDFitter"),
                                          ("mbgnbd", "ModifiedBetaGeoFitter")])
def test_predictions_equal_lifetimes_at_the_same_parameters(cdnow_cal, name, fitter):
    m = clv.fit_model(cdnow_cal, name)
    lt = getattr(lifetimes, fitter)()
    lt.params_ = pd.Series(m.params_.to_dict())
    x, tx, T = cdnow_cal["frequency"], cdnow_cal["recency"], cdnow_cal["T"]
    np.testing.assert_allclose(m.probability_alive(x, tx, T), lt.conditional_probability_alive(x, tx, T), rtol=1e-8)
    np.testing.assert_allclose(m.expected_purchases(39, x, tx, T),
                               lt.conditional_expected_number_of_purchases_up_to_time(39, x, tx, T), rtol=1e-7)
    np.testing.assert_allclose(m.unconditional_expected_purchases(np.array([1.0, 20.0, 78.0])),
                               lt.expected_number_of_purchases_up_to_time(np.array([1.0, 20.0, 78.0])), rtol=1e-8)


# ----------------------------------------------------------------------------- robustness


def test_every_customer_with_one_purchase_is_not_identified():
    s = pd.DataFrame({"frequency": [0.0] * 5, "recency": [0.0] * 5, "T": [10.0, 12, 20, 30, 31]})
    for name in ("bgnbd", "pareto_nbd", "mbgnbd"):
        with pytest.raises(clv.NotIdentifiedError, match="none of the 5 customers made a repeat purchase"):
            clv.fit_model(s, name)
    with pytest.raises(clv.NotIdentifiedError, match="no customer has a repeat purchase"):
        clv.fit_model(s.assign(monetary_value=0.0), "gamma_gamma")
    with pytest.raises(clv.NotIdentifiedError, match="no customer churned"):
        clv.fit_sbg([100, 100, 100])


def test_fit_model_rejects_bad_arguments(cdnow_cal):
    with pytest.raises(clv.ClvError, match=r"model must be one of \['bgbb', 'bgnbd'"):
        clv.fit_model(cdnow_cal, "bgnbdd")
    with pytest.raises(clv.ClvError, match="unknown option"):
        clv.fit_model(cdnow_cal, "bgnbd", penaliser=0.1)
    bad = cdnow_cal.head(10).copy()
    bad.loc[bad.index[:2], "recency"] = 99.0
    with pytest.raises(clv.ClvError, match="2 customers have an impossible frequency/recency/T"):
        clv.fit_model(bad, "bgnbd")


def test_extreme_frequencies_give_finite_results():
    s = pd.DataFrame({"frequency": [0, 1, 3, 250, 600, 900, 0, 2], "recency": [0, 5, 20, 99.5, 100, 100, 0, 50],
                      "T": [100, 100, 100, 100, 100, 100, 40, 60.0]})
    for name in ("bgnbd", "pareto_nbd", "mbgnbd"):
        m = clv.fit_model(s, name)
        p = clv.predict_customers(m, s, horizon=52, n_draws=50)
        assert np.isfinite(p.to_numpy()).all(), name
        assert (p["p_alive"].between(0, 1)).all()
        assert p.loc[5, "expected_purchases"] > 300  # a 9-a-week buyer keeps buying
        assert m.fit_info_["converged"]


def test_weights_count_customers(donations):
    exploded = donations.loc[donations.index.repeat(donations["weight"])].drop(columns="weight")
    a = clv.fit_model(exploded, "bgbb", compress=False)
    b = clv.fit_model(donations, "bgbb")
    np.testing.assert_allclose(a.params_, b.params_, rtol=1e-4)


def test_a_bad_start_is_recovered_and_recorded(cdnow_cal):
    m = clv.fit_model(cdnow_cal, "pareto_nbd", initial_params={"r": 1e-6, "alpha": 1e6, "s": 1e-6, "beta": 1e-6})
    np.testing.assert_allclose(m.params_, [0.553, 10.578, 0.606, 11.669], atol=2e-3)
    info = m.fit_info_
    assert info["converged"] and set(info) >= {"restarts", "penalizer", "attempts", "n_rows", "notes"}
    assert info["n_rows"] < 1100 and info["n_customers"] == 2357


def test_simulated_ground_truth_is_recovered():
    tx, truth = clv.simulate_transactions(20_000, seed=3)
    s = clv.rfm_summary(tx, observation_end=truth["observation_end"], time_unit="W")
    m = clv.fit_model(s, "bgnbd")
    ci = m.param_intervals(level=0.99)
    for k, v in truth["bgnbd"].items():  # day-precision rounding biases alpha slightly: allow 5%
        assert ci.loc[k, "lower"] * 0.95 <= v <= ci.loc[k, "upper"] * 1.05, (k, v, ci.loc[k].tolist())


# ----------------------------------------------------------------------------- predictions and CLV


def test_predictions_have_intervals_around_the_estimate(cdnow_cal):
    m = clv.fit_model(cdnow_cal, "bgnbd")
    p = clv.predict_customers(m, cdnow_cal, horizon=39, n_draws=100)
    assert list(p.columns) == ["p_alive", "p_alive_lower", "p_alive_upper",
                               "expected_purchases", "expected_purchases_lower", "expected_purchases_upper"]
    assert (p["p_alive_lower"] <= p["p_alive"] + 1e-12).all() and (p["p_alive"] <= p["p_alive_upper"] + 1e-12).all()
    assert (p["expected_purchases_lower"] <= p["expected_purchases"] + 1e-12).all()
    assert p.loc[1, "expected_purchases"] == pytest.approx(float(m.expected_purchases(39, *cdnow_cal.loc[1, ["frequency", "recency", "T"]])))


def test_customer_value_by_hand(cdnow_cal):
    m = clv.fit_model(cdnow_cal, "bgnbd")
    g = clv.fit_model(cdnow_cal, "gamma_gamma")
    v = clv.customer_value(m, g, cdnow_cal, horizon_months=2, discount_rate=0.0, n_draws=50)
    month = 365.25 / 12 / 7
    row = cdnow_cal.loc[1]
    e2 = float(m.expected_purchases(2 * month, row["frequency"], row["recency"], row["T"]))
    ev = float(g.expected_average_value(row["frequency"], row["monetary_value"]))
    assert v.loc[1, "clv"] == pytest.approx(e2 * ev, rel=1e-9)  # no discounting: purchases x value
    d = clv.customer_value(m, g, cdnow_cal, horizon_months=2, discount_rate=0.5, interval=None)
    e1 = float(m.expected_purchases(month, row["frequency"], row["recency"], row["T"]))
    dm = 1.5 ** (1 / 12)
    assert d.loc[1, "clv"] == pytest.approx(ev * (e1 / dm + (e2 - e1) / dm**2), rel=1e-9)
    assert (v["clv_lower"] <= v["clv"] + 1e-9).all() and (v["clv"] <= v["clv_upper"] + 1e-9).all()


# ----------------------------------------------------------------------------- validation


def test_compare_models_on_cdnow(cdnow_tx):
    c = clv.compare_models(cdnow_tx, calibration_end="1997-09-30", observation_end="1998-06-30", time_unit="W")
    assert list(c.metrics.index) == ["bgnbd", "pareto_nbd", "mbgnbd"]
    assert set(c.metrics.columns) >= {"mae", "rmse", "correlation", "log_likelihood", "aic", "tracking_error_end"}
    assert c.metrics.loc["bgnbd", "log_likelihood"] == pytest.approx(-9582.4, abs=0.05)
    assert c.metrics["actual_total"].iloc[0] == c.summary["frequency_holdout"].sum()
    assert len(c.tracking) == 78 and c.tracking["calibration"].sum() == 39
    # cumulative repeat transactions by week 78 of the CDNOW sample (Fader, Hardie & Lee 2005, Figure 2 data)
    assert c.tracking["actual"].iloc[-1] == c.summary["frequency"].sum() + c.summary["frequency_holdout"].sum()
    name, sentence = c.recommendation
    assert name == c.metrics["mae"].idxmin()
    assert name in sentence and f"{c.metrics.loc[name, 'mae']:.3f}" in sentence


def test_recommend_model_prefers_aic_among_ties():
    metrics = pd.DataFrame({"mae": [0.500, 0.502, 0.7], "aic": [100.0, 90.0, 80.0], "predicted_total": [10.0, 11, 12],
                            "actual_total": [10.0, 10, 10], "correlation": [0.5, 0.5, 0.4]}, index=["a", "b", "c"])
    name, sentence = clv.recommend_model(metrics)
    assert name == "b" and "within 1% of the best" in sentence


# ----------------------------------------------------------------------------- subscriptions


def test_subscription_cohort_counts_by_hand():
    subs = pd.DataFrame({
        "customer_id": ["a", "b", "c", "d", "e"],
        "start_date": pd.to_datetime(["2024-01-01", "2024-01-15", "2024-01-20", "2024-02-01", "2024-02-10"]),
        "end_date": pd.to_datetime(["2024-02-15", None, "2024-05-01", None, "2024-02-20"]),
    })
    c = clv.subscription_cohort_counts(subs, observation_end="2024-06-30", period="M")
    # January cohort: a lasted 1.5 months, c 3.3 months, b still active; last start Jan 20 -> 5 whole months observable
    assert c.loc["2024-01"].dropna().tolist() == [3, 3, 2, 2, 1, 1]
    # February: e churned within the first month; d active; last start Feb 10 -> 4 whole months
    assert c.loc["2024-02"].dropna().tolist() == [2, 1, 1, 1, 1]
    models = clv.fit_sbg_cohorts(c, min_customers=3)
    assert "2024-02" in models.skipped and "2024-01" in models


def test_sbg_counts_must_not_increase():
    with pytest.raises(clv.ClvError, match="non-increasing"):
        clv.fit_sbg([100, 80, 90])


def test_a_boundary_estimate_whose_predictions_overflow_is_a_fit_error_not_nan():
    # 20 of 200 customers with 400 purchases: MBG/NBD runs to a ~ 8e5, b ~ 3e8, where its hypergeometric term overflows
    rng = np.random.default_rng(0)
    rows = []
    for i in range(200):
        n = 1 + (400 if i < 20 else rng.poisson(2))
        days = sorted(rng.choice(700, size=min(n, 700), replace=False))
        rows += [(f"C{i}", pd.Timestamp("2023-01-01") + pd.Timedelta(days=int(d)), float(rng.gamma(2, 10))) for d in days]
    summary = clv.rfm_summary(pd.DataFrame(rows, columns=["customer_id", "timestamp", "amount"]), observation_end="2024-12-31")
    with pytest.raises(clv.FitError, match=r"mbgnbd: the estimate is at a boundary \(r=.*a=.*e\+05.*predictions are not finite"):
        clv.fit_model(summary, "mbgnbd")
    bgnbd = clv.fit_model(summary, "bgnbd")  # the same data, another model: finite
    assert np.isfinite(clv.predict_customers(bgnbd, summary, horizon=365, interval=None).to_numpy()).all()


def test_sbg_with_homogeneous_churn_reports_the_geometric_boundary_estimate():
    # every customer churns with probability 0.1 each period: the likelihood rises without end as alpha, beta grow
    model = clv.fit_sbg([1000 * 0.9**t for t in range(7)])
    assert model.fit_info_["converged"] is False and model.fit_info_["boundary"] == ["alpha", "beta"]
    assert model.params_["alpha"] / model.params_.sum() == pytest.approx(0.1)
    assert "boundary estimate" in model.fit_info_["notes"][0] and "churn 0.1000 per period" in model.fit_info_["notes"][0]
    assert float(model.survival(12)) == pytest.approx(0.9**12, rel=1e-6)
    assert float(model.derl(0.1)) == pytest.approx(0.9 / (1 - 0.9 / 1.1))  # geometric DERL, finite


def test_interval_quantiles_equal_numpy_nanquantile():
    rng = np.random.default_rng(5)
    draws = rng.lognormal(size=(60, 500))
    draws[rng.random(draws.shape) < 0.01] = np.nan  # some columns with NaN draws
    draws[:, 7] = np.nan  # one column with nothing but NaN
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        expected = np.nanquantile(draws, [0.05, 0.95], axis=0)
    lo, hi = clv._quantiles(draws, 0.9)
    np.testing.assert_allclose(lo, expected[0], rtol=1e-13)  # the same numbers up to the last bit of the interpolation
    np.testing.assert_allclose(hi, expected[1], rtol=1e-13)
    assert np.isnan(lo[7]) and np.isnan(hi[7]) and np.isfinite(np.delete(lo, 7)).all()


@pytest.mark.parametrize("name", ["bgnbd", "mbgnbd", "pareto_nbd"])
def test_customer_value_equals_the_discounted_sum_of_expected_purchases(cdnow_cal, name):
    # customer_value computes E[Y(t)] as P(alive) x E[Y(t) | alive] on distinct (x, T); the sum must not change
    m = clv.fit_model(cdnow_cal, name)
    g = clv.fit_model(cdnow_cal, "gamma_gamma")
    v = clv.customer_value(m, g, cdnow_cal, horizon_months=3, discount_rate=0.2, interval=None)
    x, tx, T = (cdnow_cal[c].to_numpy(float) for c in ("frequency", "recency", "T"))
    month, dm = 365.25 / 12 / 7, 1.2 ** (1 / 12)
    e = [np.zeros(len(x))] + [m.expected_purchases(k * month, x, tx, T) for k in (1, 2, 3)]
    by_hand = sum((e[k] - e[k - 1]) / dm**k for k in (1, 2, 3)) * g.expected_average_value(x, cdnow_cal["monetary_value"].to_numpy(float))
    np.testing.assert_allclose(v["clv"].to_numpy(), by_hand, rtol=1e-10)
