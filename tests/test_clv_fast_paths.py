"""clm_helpers.clv's fast paths against the straightforward computations they replace (same numbers)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from clm_helpers import clv


@pytest.fixture(scope="module")
def small_summary():
    tx, truth = clv.simulate_transactions(400, seed=3)
    return clv.rfm_summary(tx, observation_end=truth["observation_end"], time_unit="W")


def test_one_blas_thread_restores_the_thread_counts_and_changes_no_number(small_summary):
    from threadpoolctl import threadpool_info

    def blas_threads():
        return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]

    before = blas_threads()
    with clv._one_blas_thread():
        assert set(blas_threads()) <= {1}
    assert blas_threads() == before
    for name in ("bgnbd", "pareto_nbd"):  # Pareto/NBD: numerical gradients, so any change in the sum's last bits shows
        fitted = clv.fit_model(small_summary, name)  # inside the limit (fit is decorated)
        assert blas_threads() == before
        plain = type(fitted)()
        clv._Model.fit.__wrapped__(plain, small_summary)  # the undecorated fit: BLAS threads as they are
        np.testing.assert_array_equal(fitted.params_.to_numpy(), plain.params_.to_numpy())
        np.testing.assert_array_equal(fitted.cov_, plain.cov_)


SBG_SERIES = [[1000, 631, 468, 382, 326, 289, 262, 241], [1000, 869, 743, 653, 593, 551, 517, 491],  # Fader & Hardie (2007), Table 1
              [270, 243, 237, 213, 204, 192, 179, 171, 160, 150, 141, 133, 125, 117, 110, 102, 97, 90, 85],
              [63, 58, 55, 47, 44, 42, 39, 38]]


@pytest.mark.parametrize("series", SBG_SERIES)
def test_sbg_gradient_equals_central_differences_of_the_likelihood(series):
    m = clv.SBG()
    data = m._prepare(series)
    # far out on the ridge (alpha, beta ~ 1e5) the differences lose digits to betaln's rounding: a looser tolerance
    for params, rtol in (([0.704, 1.182], 1e-6), ([0.05, 40.0], 1e-6), ([3.0, 0.3], 1e-6), ([2e4, 3e5], 1e-3)):
        params = np.array(params)
        ll, g = m._loglik_grad(params, data)
        assert ll[0] == m._loglik(params, data)[0]
        numeric = [(m._loglik(params + h, data)[0] - m._loglik(params - h, data)[0]) / (2 * h[i])
                   for i, h in enumerate(np.eye(2) * 1e-5 * params)]
        np.testing.assert_allclose(g[:, 0], numeric, rtol=rtol, atol=1e-6)


@pytest.mark.parametrize("series", SBG_SERIES)
def test_sbg_fit_is_the_stationary_point_of_the_likelihood(series):
    # the analytic-gradient fit lands where Newton's method on the gradient does (to 1e-7), the maximum likelihood estimate
    m = clv.fit_sbg(series)
    data = m._prepare(series)
    grad = lambda x: m._loglik_grad(np.exp(x), data)[1][:, 0] * np.exp(x)  # noqa: E731
    x = np.log(m.params_.to_numpy())
    for _ in range(8):
        jac = np.column_stack([(grad(x + e) - grad(x - e)) / 2e-6 for e in np.eye(2) * 1e-6])
        x = x - np.linalg.solve(jac, grad(x))
    assert np.abs(grad(x)).max() < 1e-8
    np.testing.assert_allclose(m.params_.to_numpy(), np.exp(x), rtol=1e-7)
    assert m.fit_info_["converged"] and m.fit_info_["restarts"] == 0


@pytest.mark.parametrize("series", [[450, 425, 409, 353, 329, 301, 284], [425, 412, 380, 338], [1000 * 0.9**t for t in range(7)]])
def test_sbg_that_runs_up_the_ridge_is_the_geometric_limit(series):
    # young cohorts with nearly homogeneous churn: the fit stops far out (alpha, beta > 1e5) or fails; both give the limit
    m = clv.fit_sbg(series)
    c = np.asarray(series, float)
    p = (c[0] - c[-1]) / c[:-1].sum()
    assert m.fit_info_["method"] == "geometric limit" and not m.fit_info_["converged"]
    np.testing.assert_allclose(m.params_.to_numpy(), [p * 1e8, (1 - p) * 1e8])


@pytest.mark.parametrize("name", ["bgnbd", "mbgnbd", "pareto_nbd"])
def test_predict_customers_split_equals_expected_purchases(small_summary, name):
    # predict_customers computes E[Y(t)] as E[Y(t) | alive] on distinct (x, T) times P(alive): the product expected_purchases forms
    m = clv.fit_model(small_summary, name)
    pred = clv.predict_customers(m, small_summary, horizon=20, n_draws=5)
    x, tx, T = (small_summary[c].to_numpy(float) for c in ("frequency", "recency", "T"))
    np.testing.assert_array_equal(pred["expected_purchases"].to_numpy(), m.expected_purchases(20, x, tx, T))
    draws = m.param_draws(5)
    by_hand = np.vstack([m.expected_purchases(20, x, tx, T, params=p) for p in draws])
    lo, hi = clv._quantiles(by_hand, 0.9)
    np.testing.assert_array_equal(pred["expected_purchases_lower"].to_numpy(), lo)
    np.testing.assert_array_equal(pred["expected_purchases_upper"].to_numpy(), hi)


@pytest.mark.parametrize("name", ["bgnbd", "mbgnbd", "pareto_nbd"])
@pytest.mark.parametrize("chunk, gather_below", [(None, None), (97, 2.0), (97, 0.0)],
                         ids=["one-chunk", "chunks-distinct-rows-gathered", "chunks-per-customer"])
def test_customer_value_months_in_one_call_equals_the_month_by_month_sum(small_summary, name, chunk, gather_below, monkeypatch):
    """The month-by-month sum per customer, by hand; the interval's chunks of customers (each chunk's distinct rows
    gathered, or computed per customer) change no number."""
    if chunk:
        monkeypatch.setattr(clv, "_INTERVAL_CHUNK", chunk)
        monkeypatch.setattr(clv, "_GATHER_BELOW", gather_below)
    m = clv.fit_model(small_summary, name)
    g = clv.fit_model(small_summary, "gamma_gamma")
    v = clv.customer_value(m, g, small_summary, horizon_months=5, n_draws=4)
    x, tx, T = (small_summary[c].to_numpy(float) for c in ("frequency", "recency", "T"))
    month, dm = 365.25 / 12 / 7, 1.1 ** (1 / 12) - 1

    def by_hand(params):
        total, prev = 0.0, 0.0
        for k in range(1, 6):
            cur = m.expected_purchases(k * month, x, tx, T, params=params)
            total, prev = total + (cur - prev) / (1 + dm) ** k, cur
        return total

    spend = g.expected_average_value(x, small_summary["monetary_value"].to_numpy(float))
    np.testing.assert_allclose(v["clv"].to_numpy(), by_hand(None) * spend, rtol=1e-12)
    np.testing.assert_allclose(v["expected_purchases"].to_numpy(), m.expected_purchases(5 * month, x, tx, T), rtol=1e-14)
    vdraws, tdraws = g.param_draws(4, seed=1), m.param_draws(4)
    sims = np.vstack([by_hand(tdraws[i]) * g.expected_average_value(x, small_summary["monetary_value"].to_numpy(float), params=vdraws[i])
                      for i in range(4)])
    lo, hi = clv._quantiles(sims, 0.9)
    np.testing.assert_allclose(v["clv_lower"].to_numpy(), lo, rtol=1e-12)
    np.testing.assert_allclose(v["clv_upper"].to_numpy(), hi, rtol=1e-12)


def test_repeat_transaction_tracking_per_distinct_age_equals_the_full_matrix():
    tx, truth = clv.simulate_transactions(300, seed=4)
    end = truth["observation_end"]
    cal = pd.Timestamp(end) - pd.Timedelta(weeks=26)
    comp = clv.compare_models(tx, calibration_end=cal, observation_end=end, time_unit="W")
    s = comp.summary
    unit = 7.0
    first = cal - pd.to_timedelta(np.round(s["T"].to_numpy() * unit), unit="D")
    start = first.min()
    n_periods = int(np.ceil(((pd.Timestamp(end) - start).days + 1) / unit))
    edges = np.arange(1, n_periods + 1) * unit
    fd = pd.Series(1, index=first).groupby(level=0).sum()
    offs = (fd.index - start).days.to_numpy(float)
    for name, m in comp.models.items():
        age = np.clip(edges[:, None] - offs[None, :], 0, None) / unit
        expected = (m.unconditional_expected_purchases(age) * fd.to_numpy()[None, :]).sum(axis=1)
        np.testing.assert_array_equal(comp.tracking[name].to_numpy(), expected)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_distinct_rows_are_numpys_unique_rows(seed):
    """``clv._distinct`` gives ``np.unique(axis=0, return_inverse=True)``'s rows, order and inverse, without its row sort."""
    rng = np.random.default_rng(seed)
    n = 5_000
    x = rng.integers(0, 20, n).astype(float)
    t_x = np.round(rng.uniform(0, 50, n), 1) * (x > 0)
    T = np.round(rng.uniform(0, 60, n), 1)
    for arrays in ([x, t_x, T], [x, T], [x], [x.astype(np.int64), T]):
        got, inverse = clv._distinct(arrays)
        uniq, expected_inverse = np.unique(np.column_stack(arrays), axis=0, return_inverse=True)
        assert len(got) == len(arrays)
        for i, column in enumerate(got):
            np.testing.assert_array_equal(column, uniq[:, i])
            assert column.dtype == uniq.dtype
        np.testing.assert_array_equal(inverse, expected_inverse.ravel())


def test_rows_are_stacked_as_vstack_would():
    rows = [np.arange(5.0) * i for i in range(7)]
    np.testing.assert_array_equal(clv._rows(iter(rows), 7), np.vstack(rows))
    with pytest.raises(ValueError, match="expected 8 rows to stack, got 7"):
        clv._rows(iter(rows), 8)
    with pytest.raises(ValueError, match="got 0"):
        clv._rows(iter([]), 3)
