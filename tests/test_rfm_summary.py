"""clv.rfm_summary on pandas frames: the numpy path whatever the row order, id type, refunds or holdout.

The numpy path takes shortcuts that depend on the input: a log already in
(customer, day) order is not sorted and its ids are not hashed, and the
columns that are 0 without refunds or without a holdout period are not
computed. Each test below gives it the same log in several shapes and holds
the answer to the one worked out by hand, or to the Ibis expression (which
takes none of these shortcuts).
"""

from __future__ import annotations

import ibis
import numpy as np
import pandas as pd
import pytest

from clm_helpers import clv

#: Purchases only, rows in (customer, time) order. By hand, to 2024-01-31 (days):
#: a: days Jan 1 (two rows), 8, 15: frequency 2, recency 14, T 30, repeat spend (20 + 40) / 2 = 30
#: b: Jan 3 and Jan 30: frequency 1, recency 27, T 28, monetary value 6
#: c: Jan 10 only: frequency 0, recency 0, T 21, monetary value 0
#: d: Jan 2 and Feb 3 (after the observation end, not counted): frequency 0, recency 0, T 29
BY_HAND = pd.DataFrame({
    "customer_id": ["a", "a", "a", "a", "b", "b", "c", "d", "d"],
    "timestamp": pd.to_datetime(["2024-01-01 09:00", "2024-01-01 18:00", "2024-01-08 12:00", "2024-01-15 23:59",
                                 "2024-01-03 00:00", "2024-01-30 07:00", "2024-01-10 10:00", "2024-01-02 08:00",
                                 "2024-02-03 08:00"]),
    "amount": [10.0, 5.0, 20.0, 40.0, 8.0, 6.0, 3.0, 7.0, 9.0],
})
EXPECTED = pd.DataFrame({"frequency": [2.0, 1.0, 0.0, 0.0], "recency": [14.0, 27.0, 0.0, 0.0],
                         "T": [30.0, 28.0, 21.0, 29.0], "monetary_value": [30.0, 6.0, 0.0, 0.0]},
                        index=pd.Index(["a", "b", "c", "d"], name="customer_id"))


def _assert_same(ours: pd.DataFrame, expected: pd.DataFrame, what: str = "", **tolerance):
    """The same customers in the same order (whatever the type of the index: categorical ids stay categorical) and columns."""
    assert list(ours.index) == list(expected.index), what
    pd.testing.assert_frame_equal(ours.reset_index(drop=True), expected.reset_index(drop=True), obj=what, **tolerance)


def _shapes(tx: pd.DataFrame, seed: int = 0) -> dict[str, pd.DataFrame]:
    """The same log in the row orders and id types the numpy path treats differently."""
    by_customer = tx.sort_values(["customer_id", "timestamp"], kind="stable").reset_index(drop=True)
    return {
        "customer order": by_customer,
        "time order": tx.sort_values("timestamp", kind="stable").reset_index(drop=True),
        "shuffled": tx.sample(frac=1.0, random_state=seed).reset_index(drop=True),
        "customer order, ids descending": by_customer.iloc[::-1].reset_index(drop=True),
        "categorical ids": by_customer.assign(customer_id=by_customer["customer_id"].astype("category")),
        "arrow string ids": by_customer.assign(customer_id=by_customer["customer_id"].astype("string[pyarrow]")),
    }


@pytest.mark.parametrize("shape", list(_shapes(BY_HAND)))
def test_rfm_summary_by_hand_in_every_row_order_and_id_type(shape):
    tx = _shapes(BY_HAND)[shape]
    s = clv.rfm_summary(tx, observation_end="2024-01-31", time_unit="D")
    _assert_same(s, EXPECTED, shape, check_exact=True)
    assert s.attrs["refund_rows"] == 0 and s.attrs["refund_only_customers"] == 0


def test_rfm_summary_of_an_id_that_comes_back_later():
    """a, b, a: grouped runs whose heads are not increasing (a comes back): the ids are hashed, a is one customer."""
    tx = BY_HAND.iloc[[0, 4, 2, 3, 5, 6, 7, 1]].reset_index(drop=True)  # a's second row of Jan 1 last
    s = clv.rfm_summary(tx, observation_end="2024-01-31", time_unit="D")
    pd.testing.assert_frame_equal(s, EXPECTED, check_exact=True)


def test_rfm_summary_when_only_the_first_rows_are_in_customer_order():
    """The first 10,000 rows pass the quick check of customer order, a repeat id after them does not: still one customer each."""
    n = 6_000
    ids = np.array([f"C{i:05d}" for i in range(n)], dtype=object)
    tx = pd.DataFrame({
        "customer_id": np.concatenate([np.repeat(ids, 2), ids[:10]]),  # 12,000 rows in customer order, then 10 again
        "timestamp": pd.Timestamp("2024-01-01") + pd.to_timedelta(np.concatenate([np.tile([0, 5], n), np.full(10, 9)]), unit="D"),
        "amount": 1.0,
    })
    s = clv.rfm_summary(tx, observation_end="2024-01-31", time_unit="D")
    assert len(s) == n and s.index.is_monotonic_increasing
    assert s["frequency"].tolist() == [2.0] * 10 + [1.0] * (n - 10)
    assert s["recency"].tolist() == [9.0] * 10 + [5.0] * (n - 10)


@pytest.fixture(scope="module")
def simulated():
    tx, truth = clv.simulate_transactions(2000, seed=11, customer_ids="str")
    return tx, truth


@pytest.mark.parametrize("refunds", [False, True], ids=["purchases only", "with refunds"])
@pytest.mark.parametrize("calibration_end", [None, "2024-12-31"], ids=["no holdout", "holdout"])
def test_rfm_summary_numpy_path_equals_ibis_path_in_every_shape(simulated, refunds, calibration_end):
    tx, _ = simulated
    if refunds:  # a refund of half of every 10th purchase, some days later (days with refunds only)
        r = tx.iloc[::10]
        tx = pd.concat([tx, r.assign(timestamp=r["timestamp"] + pd.Timedelta(days=3), amount=-r["amount"] / 2)])
    kw = {"observation_end": "2025-03-31", "calibration_end": calibration_end, "time_unit": "W"}
    via_ibis = clv.rfm_summary(ibis.memtable(tx), **kw)
    assert (via_ibis["frequency"] > 0).sum() > 100
    for shape, frame in _shapes(tx, seed=4).items():
        ours = clv.rfm_summary(frame, **kw)
        _assert_same(ours, via_ibis, shape, rtol=1e-10, atol=1e-9)
        for k, v in ours.attrs.items():
            assert v == (pytest.approx(via_ibis.attrs[k], rel=1e-10) if isinstance(v, float) else via_ibis.attrs[k]), (shape, k)
        if refunds:
            assert ours.attrs["refund_rows"] > 0 and ours.attrs["refund_only_days"] > 0


def test_rfm_summary_does_not_change_its_input(simulated):
    tx, _ = simulated
    tx = tx.sort_values(["customer_id", "timestamp"]).reset_index(drop=True)
    before = tx.copy()
    clv.rfm_summary(tx, observation_end="2025-01-31", calibration_end="2024-10-31")
    pd.testing.assert_frame_equal(tx, before)


def test_ids_of_mixed_types_are_refused_with_the_column_and_examples():
    tx = pd.DataFrame({"customer_id": [1, "b", 1], "timestamp": pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-05"]),
                       "amount": [1.0, 2.0, 3.0]})
    with pytest.raises(clv.ClvError, match=r"transactions.customer_id: ids of 2 types \(int, str\), e.g. 1, 'b'"):
        clv.rfm_summary(tx, observation_end="2024-01-31")
