"""Lifecycle stages on a hand-made activity calendar that covers every transition."""

import numpy as np
import pandas as pd
import pytest

from clm_helpers import lifecycle
from clm_helpers.data import OptionError


def purchases(calendar):
    rows = [(c, pd.Timestamp(d), amount) for c, days in calendar.items() for d, amount in days]
    return pd.DataFrame(rows, columns=["customer_id", "timestamp", "amount"])


# Months of 2024:      Jan Feb Mar Apr May Jun
#   A                   x   x   x   x   x   x
#   B                   x   .   x   .   .   .
#   C                   .   .   .   .   .   x
#   D                   .   x   .   .   x   .
#   E: only a refund in March, and a purchase in July (after the end): never in the lifecycle
CALENDAR = {
    "A": [(f"2024-{m:02d}-15", 10.0) for m in range(1, 7)],
    "B": [("2024-01-03", 5.0), ("2024-03-31 23:59", 5.0)],
    "C": [("2024-06-01", 8.0)],
    "D": [("2024-02-10", 4.0), ("2024-05-20", 4.0)],
    "E": [("2024-03-05", -3.0), ("2024-07-02", 9.0)],
}
END = "2024-06-30"


def test_stage_counts_per_month_worked_by_hand():
    counts = lifecycle.stage_counts(purchases(CALENDAR), observation_end=END)
    assert [str(p) for p in counts.index] == ["2024-01", "2024-02", "2024-03", "2024-04", "2024-05", "2024-06"]
    expected = pd.DataFrame(
        {   # Jan: A,B new. Feb: D new, A returning, B dormant. Mar: A ret, B resurrecting, D dormant.
            # Apr: A ret, B dormant. May: A ret, D resurrecting. Jun: C new, A ret, D dormant.
            "new":          [2, 1, 0, 0, 0, 1],
            "returning":    [0, 1, 1, 1, 1, 1],
            "resurrecting": [0, 0, 1, 0, 1, 0],
            "dormant":      [0, 1, 1, 1, 0, 1],
        },
        index=counts.index,
    )
    pd.testing.assert_frame_equal(counts[["new", "returning", "resurrecting", "dormant"]], expected)
    assert counts["active"].tolist() == [2, 2, 2, 1, 2, 2]
    # pulse = (new + resurrecting) / dormant; undefined (missing, never inf) where no one went dormant
    np.testing.assert_array_equal(counts["pulse_ratio"].to_numpy(), [np.nan, 1.0, 1.0, 0.0, np.nan, 1.0])
    # period churn = dormant / active last period: Feb 1/2, Mar 1/2, Apr 1/2, May 0/1, Jun 1/2
    np.testing.assert_array_equal(counts["churn_pct"].to_numpy(), [np.nan, 50.0, 50.0, 50.0, 0.0, 50.0])


def test_only_complete_periods_are_used():
    counts = lifecycle.stage_counts(purchases(CALENDAR), observation_end="2024-06-29")
    assert str(counts.index[-1]) == "2024-05"


def test_customer_stages_in_the_last_period():
    stages = lifecycle.customer_stages(purchases(CALENDAR), observation_end=END, churn_after=3)
    assert stages["stage"].astype(str).to_dict() == {"A": "returning", "B": "churned", "C": "new", "D": "dormant"}
    assert stages.loc["B", "periods_inactive"] == 3
    assert stages.attrs["period"] == "2024-06"


def test_customer_stages_in_an_earlier_period():
    stages = lifecycle.customer_stages(purchases(CALENDAR), observation_end=END, at="2024-05", churn_after=3)
    # B last active in March: two periods inactive in May -> inactive (not yet churned); C not yet a customer
    assert stages["stage"].astype(str).to_dict() == {"A": "returning", "B": "inactive", "D": "resurrecting"}


def test_at_risk_overlay_from_p_alive_spares_new_and_churned():
    p_alive = pd.Series({"A": 0.9, "B": 0.1, "C": 0.05, "D": 0.2})
    stages = lifecycle.customer_stages(purchases(CALENDAR), observation_end=END, p_alive=p_alive, at_risk_below=0.3)
    assert stages["stage"].astype(str).to_dict() == {"A": "returning", "B": "churned", "C": "new", "D": "at_risk"}


def test_transition_matrix_between_may_and_june():
    tx = purchases(CALENDAR)
    may = lifecycle.customer_stages(tx, observation_end=END, at="2024-05")
    june = lifecycle.customer_stages(tx, observation_end=END)
    counts = lifecycle.transition_matrix(may, june, normalize=False)
    moves = {(f, t): n for (f, t), n in counts.stack().items() if n}
    assert moves == {("(not yet a customer)", "new"): 1, ("returning", "returning"): 1,
                     ("resurrecting", "dormant"): 1, ("inactive", "churned"): 1}
    shares = lifecycle.transition_matrix(may, june)
    assert (shares.sum(axis=1) == 100).all()


def test_weeks_start_on_monday():
    tx = purchases({"A": [("2024-01-07", 1.0), ("2024-01-08", 1.0)]})  # a Sunday, then a Monday
    counts = lifecycle.stage_counts(tx, observation_end="2024-01-14", period="W")
    assert [str(p.start_time.date()) for p in counts.index] == ["2024-01-01", "2024-01-08"]
    assert counts["new"].tolist() == [1, 0] and counts["returning"].tolist() == [0, 1]


def test_single_customer_single_purchase():
    counts = lifecycle.stage_counts(purchases({"Z": [("2024-03-03", 1.0)]}), observation_end="2024-04-30")
    assert counts[["new", "dormant"]].to_dict("list") == {"new": [1, 0], "dormant": [0, 1]}


def test_bad_options_are_refused():
    # OptionError: the project's error for a bad option (a ClmError, and a ValueError as before)
    with pytest.raises(OptionError, match=r"period must be 'M' \(calendar month\) or 'W' \(ISO week\), got 'D'"):
        lifecycle.stage_counts(purchases(CALENDAR), observation_end=END, period="D")
    with pytest.raises(OptionError, match=r"churn_after must be at least 2 periods"):
        lifecycle.customer_stages(purchases(CALENDAR), observation_end=END, churn_after=1)
    with pytest.raises(ValueError, match=r"period 2024-07 is not complete at observation_end 2024-06-30"):
        lifecycle.customer_stages(purchases(CALENDAR), observation_end=END, at="2024-07")


def test_metrics_mountain_by_hand():
    customers = pd.DataFrame({"customer_id": ["X", "Y", "Z", "LATE"],
                              "signup_date": pd.to_datetime(["2024-01-01", "2024-01-01", "2024-01-01", "2024-08-01"])})
    tx = purchases({"X": [("2024-01-02", 10.0), ("2024-06-20", 30.0)], "Y": [("2024-02-01", 20.0), ("2024-02-05", -5.0)]})
    surveys = pd.DataFrame({"customer_id": ["X", "Z", "Z"], "timestamp": pd.to_datetime(["2024-03-01", "2024-03-01", "2024-05-01"]),
                            "survey": ["nps", "nps", "nps"], "score": [10.0, 9.0, 3.0]})
    mountain = lifecycle.metrics_mountain(customers, tx, observation_end=END, surveys=surveys,
                                          activated=pd.Series({"X": True, "Y": False}), active_days=30)
    # acquired X,Y,Z (LATE signs up after the end); activated X; purchased X,Y; repeat X; active (June) X;
    # promoters: X (10); Z's latest answer is 3. Revenue: X 40, Y 20 - 5 = 15.
    assert mountain["customers"].to_dict() == {"acquired": 3, "activated": 1, "purchased": 2, "repeat": 1, "active": 1, "promoters": 1}
    assert mountain["revenue"].to_dict() == {"acquired": 55.0, "activated": 40.0, "purchased": 55.0, "repeat": 40.0, "active": 40.0, "promoters": 40.0}
    assert mountain.loc["purchased", "share_of_acquired_pct"] == pytest.approx(66.7)


def test_lifecycle_score_combines_health_and_value_rank():
    stages = lifecycle.customer_stages(purchases(CALENDAR), observation_end=END)
    score = lifecycle.lifecycle_score(stages, pd.Series({"A": 60.0, "B": 10.0, "C": 8.0, "D": 4.0}))
    # ranks among 4: A 1.0, B 0.75, C 0.5, D 0.25; health A 1, B 0 (churned), C 1 (new), D 0.5 (dormant)
    assert score["score"].to_dict() == {"A": 100.0, "C": 75.0, "D": 37.5, "B": 37.5}


@pytest.mark.parametrize("period", ["M", "W"])
def test_customer_stages_periods_are_each_customers_own_period(period):
    """The periods (converted once per distinct index) are the ones each customer's index gives one by one."""
    rng = np.random.default_rng(3)
    tx = pd.DataFrame({"customer_id": [f"C{i % 40:02d}" for i in range(400)],
                       "timestamp": pd.Timestamp("2023-01-01") + pd.to_timedelta(rng.integers(0, 540, 400), unit="D"),
                       "amount": rng.normal(20, 10, 400)})
    stages = lifecycle.customer_stages(tx, observation_end="2024-06-30", period=period)
    per = lifecycle._activity(tx, "2024-06-30", period)[0]
    ends = lifecycle.execute(per.group_by("customer_id").aggregate(first=per.p.min(), last=per.p.max())).set_index("customer_id")
    ends = ends.reindex(stages.index)
    for column, source in (("first_period", "first"), ("last_active_period", "last")):
        one_by_one = pd.Series([lifecycle._period_start(i, period).to_period(period) for i in ends[source]], index=stages.index,
                               name=column)
        pd.testing.assert_series_equal(stages[column], one_by_one)
    assert lifecycle._periods_of(pd.Series([], dtype="int64"), period) == []
