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
    controls = clv._openblas_thread_controls()
    before = [get() for _, get, _ in controls]
    with clv._one_blas_thread(numpy_blas=True):
        assert all(get() == 1 for _, get, _ in controls)
    assert [get() for _, get, _ in controls] == before
    fitted = clv.fit_model(small_summary, "bgnbd")  # inside the limit (fit is decorated)
    assert [get() for _, get, _ in controls] == before
    plain = clv.BGNBD()
    plain_fit = clv._Model.fit.__wrapped__  # the undecorated fit: BLAS threads as they are
    plain_fit(plain, small_summary)
    np.testing.assert_array_equal(fitted.params_.to_numpy(), plain.params_.to_numpy())
    np.testing.assert_array_equal(fitted.cov_, plain.cov_)
