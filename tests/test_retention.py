"""Cohort retention, inactivity churn, subscription churn, revenue retention and survival on hand-made data worked out by hand."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from clm_helpers import retention
from clm_helpers.data import SchemaError
from clm_helpers.retention import RetentionError


def purchases(rows):
    df = pd.DataFrame(rows, columns=["customer_id", "timestamp", "amount"])
    df["timestamp"] = pd.Series([pd.Timestamp(t) for t in df["timestamp"]], dtype="datetime64[us]")
    return df


# 2024, observation end 30 April (January to April complete).
#   A: 5 Jan 10, 10 Feb 20, 2 Apr 30                  -> January cohort
#   B: 20 Jan 5, 25 Jan 5, refund -2 on 3 Mar          -> January cohort (the refund is not a purchase)
#   C: 14 Feb 40, refund -10 on 20 Feb, 15 Mar 40      -> February cohort of one customer
#   nobody's first purchase in March                  -> an empty cohort
#   D: 10 Apr 8                                       -> April cohort of one customer
#   E: only a refund (-5, 1 Mar)                      -> in no cohort
#   F: 3 May 12, after the end                        -> ignored
TX = purchases([
    ("A", "2024-01-05 10:00", 10.0), ("A", "2024-02-10", 20.0), ("A", "2024-04-02", 30.0),
    ("B", "2024-01-20", 5.0), ("B", "2024-01-25", 5.0), ("B", "2024-03-03", -2.0),
    ("C", "2024-02-14", 40.0), ("C", "2024-02-20", -10.0), ("C", "2024-03-15", 40.0),
    ("D", "2024-04-10", 8.0),
    ("E", "2024-03-01", -5.0),
    ("F", "2024-05-03", 12.0),
])
END = "2024-04-30"


def rows(matrix):
    return [[None if np.isnan(v) else round(float(v), 6) for v in r] for r in matrix.to_numpy(float)]


def test_cohort_matrix_customers_classic_by_hand():
    m = retention.cohort_matrix(TX, observation_end=END)
    assert [str(p) for p in m.index] == ["2024-01", "2024-02", "2024-03", "2024-04"]
    # January (A, B): Feb A -> 1 of 2; Mar nobody (B's refund is not a purchase) -> 0; Apr A -> 1 of 2
    # February (C): Mar C -> 100; Apr nobody -> 0. March: empty cohort -> missing. April (D): period 0 only.
    assert rows(m) == [
        [100.0, 50.0, 0.0, 50.0],
        [100.0, 100.0, 0.0, None],
        [None, None, None, None],
        [100.0, None, None, None],
    ]
    assert any("1 cohort(s) with no first purchase: 2024-03" in n for n in m.attrs["notes"])
    counts = retention.cohort_matrix(TX, observation_end=END, normalize=False)
    assert rows(counts)[2] == [0.0, 0.0, None, None]  # the empty month: 0 observed, later cells not yet observed


def test_cohort_matrix_rolling_retention():
    m = retention.cohort_matrix(TX, observation_end=END, method="rolling")
    # rolling: bought in period k or later. January: A's last purchase is in period 3 -> 1 of 2 in periods 1-3
    assert rows(m)[0] == [100.0, 50.0, 50.0, 50.0]
    assert rows(m)[1] == [100.0, 100.0, 0.0, None]  # C's last purchase is in period 1


def test_cohort_matrix_revenue_by_hand():
    m = retention.cohort_matrix(TX, observation_end=END, value="revenue")
    # January net revenue: period 0 = 10 + 5 + 5 = 20; 1: A 20 -> 100%; 2: B's refund -2 -> -10%; 3: A 30 -> 150%
    # February: period 0 = 40 - 10 = 30; 1: 40 -> 133.3%; 2: 0
    assert rows(m)[0] == [100.0, 100.0, -10.0, 150.0]
    assert rows(m)[1] == pytest.approx([100.0, 400 / 3, 0.0, None])
    assert "1 customers with refunds but no purchase are in no cohort" in m.attrs["notes"]


def test_cohort_matrix_stops_at_the_last_complete_period():
    m = retention.cohort_matrix(TX, observation_end="2024-04-15")
    # April is incomplete: D's cohort is not shown, January's period 3 is missing, and the now trailing empty
    # March cohort is left out with a note
    assert [str(p) for p in m.index] == ["2024-01", "2024-02"]
    assert rows(m)[0] == [100.0, 50.0, 0.0]
    assert any("no first purchase after 2024-02" in n for n in m.attrs["notes"])


def test_cohort_matrix_of_one_customer_and_quarters():
    one = TX[TX["customer_id"] == "D"]
    m = retention.cohort_matrix(one, observation_end=END)
    assert rows(m) == [[100.0]]
    q = retention.cohort_matrix(TX, period="Q", observation_end="2024-06-30", normalize=False)
    # to 30 June: Q1 cohort A, B, C = 3; in Q2 only A of them bought -> 1; Q2 cohort: D and F (3 May) = 2
    assert str(q.index[0]) == "2024Q1" and rows(q) == [[3.0, 1.0], [2.0, None]]


def test_retention_curve_weights_by_cohort_size():
    counts = retention.cohort_matrix(TX, observation_end=END, normalize=False)
    curve = retention.retention_curve(counts)
    # k=0: all 4 cohorts, base 2+1+0+1 = 4 -> 100; k=1: Jan, Feb, Mar: base 3, retained 1+1+0 -> 66.7
    # k=2: Jan, Feb: base 3, retained 0; k=3: Jan: base 2, retained 1 -> 50
    assert curve["retention_pct"].tolist() == pytest.approx([100.0, 200 / 3, 0.0, 50.0])
    assert curve["cohorts"].tolist() == [4, 3, 2, 1]
    with pytest.raises(RetentionError, match=r"counts holds percentages"):
        retention.retention_curve(retention.cohort_matrix(TX, observation_end=END))


def test_cohort_errors():
    with pytest.raises(RetentionError, match=r"value must be 'customers' or 'revenue', got 'orders'"):
        retention.cohort_matrix(TX, value="orders")
    with pytest.raises(RetentionError, match=r"period must be one of \['W', 'M', 'Q'\]"):
        retention.cohort_matrix(TX, period="D")
    with pytest.raises(RetentionError, match=r"method='rolling' applies to value='customers' only"):
        retention.cohort_matrix(TX, value="revenue", method="rolling")
    with pytest.raises(SchemaError, match=r"transactions: missing column\(s\) \['amount'\]"):
        retention.cohort_matrix(TX.drop(columns="amount"))
    with pytest.raises(RetentionError, match=r"no purchase in a complete calendar month up to 2024-01-15"):
        retention.cohort_matrix(TX, observation_end="2024-01-15")


def test_cohort_matrix_does_not_modify_its_input():
    before = TX.copy()
    retention.cohort_matrix(TX, value="revenue", observation_end=END)
    pd.testing.assert_frame_equal(TX, before)


def test_customer_churn_status_by_hand():
    s = retention.customer_churn_status(TX, observation_end=END, window_days=60)
    # days since the last purchase at 30 April: A 28 (2 Apr), B 96 (25 Jan), C 46 (15 Mar), D 20 (10 Apr); E never bought
    assert s["days_since_last"].to_dict() == {"A": 28, "B": 96, "C": 46, "D": 20}
    assert s["churned"].to_dict() == {"A": False, "B": True, "C": False, "D": False}
    assert s.loc["B", "purchase_days"] == 2
    edge = retention.customer_churn_status(TX, observation_end=END, window_days=46)
    assert edge.loc["C", "churned"]  # 46 days without a purchase is a full 46-day window: churned
    with pytest.raises(RetentionError, match=r"window_days must be a whole number of days, at least 1, got 0"):
        retention.customer_churn_status(TX, window_days=0)


def test_inactivity_churn_per_month_by_hand():
    c = retention.inactivity_churn(TX, observation_end=END, window_days=31)
    # Activity lasts 31 days after each purchase unless renewed:
    #   A active 5 Jan - 4 Feb, 10 Feb - 11 Mar, from 2 Apr; B 20 Jan - 24 Feb; C 14 Feb - 14 Apr (15 Mar renews); D from 10 Apr
    # Jan: nobody active on 31 Dec -> missing. Feb: active on 31 Jan A, B; both lapse in Feb (5 and 25 Feb) -> 2 of 2.
    # Mar: active on 29 Feb A, C; A lapses 12 Mar -> 1 of 2. Apr: active on 31 Mar C; C lapses 15 Apr -> 1 of 1.
    assert c["active_start"].tolist() == [0, 2, 2, 1]
    assert c["churned"].tolist() == [0, 2, 1, 1]
    assert c["churn_pct"].tolist()[1:] == [100.0, 50.0, 100.0] and np.isnan(c["churn_pct"].iloc[0])
    assert c["note"].iloc[0] == "no customer active at the start"
    assert c["active_end"].tolist() == [2, 2, 1, 2]  # 31 Jan A, B; 29 Feb A, C; 31 Mar C; 30 Apr A, D


def test_inactivity_churn_counts_only_customers_active_at_the_start():
    # window 10 days. G: 25 Mar and 2 Apr (active on 31 Mar, lapses 12 Apr: churned in April).
    # H: first purchase 1 Apr, lapses 11 Apr: not active at April's start, so not April's churn.
    tx = purchases([("G", "2024-03-25", 1.0), ("G", "2024-04-02", 1.0), ("H", "2024-04-01", 1.0)])
    c = retention.inactivity_churn(tx, observation_end=END, window_days=10)
    assert c.loc[pd.Period("2024-04", "M"), ["active_start", "churned", "churn_pct"]].tolist() == [1, 1, 100.0]
    assert c.loc[pd.Period("2024-03", "M"), "active_end"] == 1


def test_compare_churn_views_by_hand():
    status = retention.customer_churn_status(TX, observation_end=END, window_days=60)
    p = pd.Series({"A": 0.9, "B": 0.2, "C": 0.4})  # D has no P(alive)
    v = retention.compare_churn_views(status, p, threshold=0.5)
    # churned by rule: B (0.2): expected inactive 0.8, below 0.5: 1 of 1
    assert v.loc["churned (inactivity rule)"].tolist() == pytest.approx([1, 0, 0.2, 0.8, 1, 100.0])
    # active by rule: A, C, D (no P(alive)): mean (0.9 + 0.4)/2, expected 0.1 + 0.6, below: C -> 1 of 2
    assert v.loc["active (inactivity rule)"].tolist() == pytest.approx([3, 1, 0.65, 0.7, 1, 50.0])
    assert v.loc["all"].tolist() == pytest.approx([4, 1, 0.5, 1.5, 2, 200 / 3])
    with pytest.raises(RetentionError, match=r"p_alive: 1 of 4 values are outside 0-1 \(e.g. 'A': 1.2\)"):
        retention.compare_churn_views(status, pd.Series({"A": 1.2}))


# Subscriptions, observation end 30 April 2024 (snapshots on the 1st of January to May):
#   a: standard 10 from 1 Jan, ended 20 Apr
#   b: premium 20 from 15 Jan, ended 1 Mar (not paying on 1 Mar)
#   c: trial 1-15 Jan (not paid), standard 10 from 15 Jan, an add-on 5 from 1 Mar (expansion)
#   d: 30 from 10 Feb, end 10 Jun is after the observation end: still running
#   e: 15 from 1 Jan to 1 Mar, then 5 from 1 Mar (downgrade: contraction)
#   f: 8 from 10 Apr; g: 8 from 5 Apr
SUBS = pd.DataFrame({
    "customer_id": ["a", "b", "c", "c", "c", "d", "e", "e", "f", "g"],
    "start_date": pd.to_datetime(["2024-01-01", "2024-01-15", "2024-01-01", "2024-01-15", "2024-03-01", "2024-02-10", "2024-01-01",
                                  "2024-03-01", "2024-04-10", "2024-04-05"]),
    "end_date": pd.to_datetime(["2024-04-20", "2024-03-01", "2024-01-15", None, None, "2024-06-10", "2024-03-01", None, None, None]),
    "plan": ["standard", "premium", "trial", "standard", "addon", "premium", "premium", "standard", "basic", "basic"],
    "mrr": [10.0, 20.0, 0.0, 10.0, 5.0, 30.0, 15.0, 5.0, 8.0, 8.0],
})


def test_subscription_churn_by_hand():
    c = retention.subscription_churn(SUBS, observation_end=END)
    assert [str(m) for m in c.index] == ["2024-01", "2024-02", "2024-03", "2024-04"]
    # MRR on the 1st:   Jan  Feb  Mar  Apr  May
    #   a               10   10   10   10    -
    #   b                -   20    -    -    -
    #   c                -   10   15   15   15
    #   d                -    -   30   30   30
    #   e               15   15    5    5    5
    #   f, g             -    -    -    -   8, 8
    assert c["customers_start"].tolist() == [2, 4, 4, 4]
    assert c["new"].tolist() == [2, 1, 0, 2] and c["churned"].tolist() == [0, 1, 0, 1]
    assert c["customers_end"].tolist() == [4, 4, 4, 5]
    assert c["logo_churn_pct"].tolist() == pytest.approx([0.0, 25.0, 0.0, 25.0])
    feb = c.loc[pd.Period("2024-02", "M")]
    # February: 55 + new 30 (d) + expansion 5 (c) - contraction 10 (e) - churned 20 (b) = 60
    assert feb[["mrr_start", "new_mrr", "expansion_mrr", "contraction_mrr", "churned_mrr", "mrr_end"]].tolist() == [55, 30, 5, 10, 20, 60]
    assert feb["mrr_churn_pct"] == pytest.approx(100 * 30 / 55)
    avg = retention.subscription_churn(SUBS, observation_end=END, denominator="average")
    assert avg["logo_churn_pct"].iloc[3] == pytest.approx(100 / 4.5)  # April: 1 churned / mean(4, 5)
    assert "1 subscriptions on plan(s) ['trial'] left out (not paid)" in c.attrs["notes"]
    assert "1 end dates after 2024-04-30 treated as still running" in c.attrs["notes"]


def test_subscription_churn_without_mrr_and_first_month():
    c = retention.subscription_churn(SUBS.drop(columns="mrr"), observation_end=END)
    assert "mrr_start" not in c.columns and c["churned"].tolist() == [0, 1, 0, 1]
    late = SUBS[SUBS["customer_id"].isin(["d"])]
    d = retention.subscription_churn(late, observation_end=END)
    # d starts in February: nobody pays on 1 February -> logo churn missing with the reason
    assert np.isnan(d["logo_churn_pct"].iloc[0]) and d["note"].iloc[0] == "no paying subscriber at the start"


def test_revenue_retention_by_hand():
    one = retention.revenue_retention(SUBS, months=1, observation_end=END)
    feb = one.loc[pd.Period("2024-02", "M")]
    # 1 Feb: a 10, b 20, c 10, e 15 = 55. 1 Mar: a 10, b 0, c 15, e 5 = 30.
    # retained (capped): 10 + 0 + 10 + 5 = 25 -> GRR 45.45; NRR 30 / 55 = 54.55 (d is new: excluded)
    assert (feb["grr_pct"], feb["nrr_pct"]) == pytest.approx((100 * 25 / 55, 100 * 30 / 55))
    assert feb[["expansion_mrr", "contraction_mrr", "churned_mrr"]].tolist() == [5, 10, 20]
    three = retention.revenue_retention(SUBS, months=3, observation_end=END)
    # 1 Jan -> 1 Apr: a 10 -> 10, e 15 -> 5: GRR = NRR = 15 / 25; 1 Feb -> 1 May: a 0, b 0, c 15, e 5 -> retained 0+0+10+5
    assert three["to"].tolist() == ["2024-04-01", "2024-05-01"]
    assert three["grr_pct"].tolist() == pytest.approx([60.0, 100 * 15 / 55])
    assert three["nrr_pct"].tolist() == pytest.approx([60.0, 100 * 20 / 55])
    assert retention.revenue_retention(SUBS, months=12, observation_end=END).empty  # no start month 12 months back


def test_subscription_errors():
    with pytest.raises(SchemaError, match=r"subscriptions: missing column\(s\) \['mrr'\]"):
        retention.revenue_retention(SUBS.drop(columns="mrr"))
    bad = SUBS.copy()
    bad.loc[0, "end_date"] = pd.Timestamp("2023-12-01")
    with pytest.raises(SchemaError, match=r"subscriptions.end_date: 1 of 10 rows end before they start \(e.g. customer_id 'a': 2024-01-01 -> 2023-12-01\)"):
        retention.subscription_churn(bad)
    with pytest.raises(RetentionError, match=r"months must be a whole number of months, at least 1, got 0"):
        retention.revenue_retention(SUBS, months=0)
    with pytest.raises(RetentionError, match=r"denominator must be 'start' .* or 'average', got 'end'"):
        retention.subscription_churn(SUBS, denominator="end")


def test_subscription_durations_by_hand():
    d = retention.subscription_durations(SUBS, observation_end=END).set_index(["customer_id", "start_date"])
    # a: 1 Jan -> 20 Apr = 31 + 29 + 31 + 19 = 110 days, churned; b: 15 Jan -> 1 Mar = 16 + 29 + 1 = 46, churned
    # d: 10 Feb -> 30 Apr (its end is after the observation end) = 80, censored
    assert d.loc[("a", pd.Timestamp("2024-01-01")), ["duration_days", "churned"]].tolist() == [110, True]
    assert d.loc[("b", pd.Timestamp("2024-01-15")), ["duration_days", "churned"]].tolist() == [46, True]
    assert d.loc[("d", pd.Timestamp("2024-02-10")), ["duration_days", "churned"]].tolist() == [80, False]
    assert len(d) == 9  # the trial is left out
    customers = pd.DataFrame({"customer_id": list("abcdefg"), "acquisition_channel": list("xxyyzz") + [None], "plan": ["p"] * 7})
    withc = retention.subscription_durations(SUBS, observation_end=END, customers=customers)
    assert {"acquisition_channel", "customer_plan", "plan"} <= set(withc.columns)


def test_customer_lifetimes_both_conventions():
    last = retention.customer_lifetimes(TX, observation_end=END, window_days=60).set_index("customer_id")
    # first to last purchase: A 5 Jan -> 2 Apr = 88 days (alive, censored there); B 5 days, churned; C 30; D 0
    assert last["duration_days"].to_dict() == {"A": 88, "B": 5, "C": 30, "D": 0}
    assert last["churned"].to_dict() == {"A": False, "B": True, "C": False, "D": False}
    declared = retention.customer_lifetimes(TX, observation_end=END, window_days=60, churn_at="declared").set_index("customer_id")
    # churned B: 5 + 60 = 65 days; the others censored at 30 April: A 116, C 76, D 20
    assert declared["duration_days"].to_dict() == {"A": 116, "B": 65, "C": 76, "D": 20}
    with pytest.raises(RetentionError, match=r"churn_at must be 'last_purchase' or 'declared'"):
        retention.customer_lifetimes(TX, churn_at="end")


# Survival: group x durations 2, 3, 3+, 5, 8+ (+ censored); group y 1+, 4+ (never churns)
DUR = pd.DataFrame({"duration_days": [2, 3, 3, 5, 8, 1, 4], "churned": [True, True, False, True, False, False, False],
                    "group": ["x"] * 5 + ["y"] * 2})


def test_kaplan_meier_by_hand():
    km = retention.kaplan_meier(DUR, by="group")
    x = km[km["group"] == "x"].set_index("time")
    # t=2: 5 at risk, 1 churns -> 4/5; t=3: 4 at risk, 1 churns (1 censored) -> 0.8 * 3/4 = 0.6; t=5: 2 at risk -> 0.3
    assert x.loc[[2.0, 3.0, 5.0, 8.0], "survival_pct"].tolist() == pytest.approx([80.0, 60.0, 30.0, 30.0])
    assert x.loc[3.0, ["at_risk", "churned", "censored"]].tolist() == [4, 1, 1]
    # Greenwood on the log(-log) scale at t=2: sigma = sqrt(1/(5*4)) / |log 0.8|; bounds exp(-exp(log(-log 0.8) +- z sigma))
    z = stats.norm.ppf(0.975)
    theta, sigma = np.log(-np.log(0.8)), np.sqrt(1 / 20) / abs(np.log(0.8))
    assert x.loc[2.0, "ci_low"] == pytest.approx(100 * np.exp(-np.exp(theta + z * sigma)), abs=1e-6)
    assert x.loc[2.0, "ci_high"] == pytest.approx(100 * np.exp(-np.exp(theta - z * sigma)), abs=1e-6)
    y = km[km["group"] == "y"]
    assert (y["survival_pct"] == 100).all()


def test_survival_summary_by_hand():
    s = retention.survival_summary(DUR, by="group", at=(4, 10))
    # x: median = first time survival <= 50% -> 5 days; at 4 days 60%; 10 days is beyond the longest (8): missing
    assert s.loc["x", ["rows", "churned", "median_days", "survival_4d"]].tolist() == pytest.approx([5, 3, 5.0, 60.0])
    assert np.isnan(s.loc["x", "survival_10d"]) and s.loc["x", "note"] == "10d not observed"
    # y never churns: median not reached
    assert np.isnan(s.loc["y", "median_days"]) and s.loc["y", "note"].startswith("median not reached")


def test_logrank_test_by_hand():
    r = retention.logrank_test(DUR, by="group")
    # churn times 2, 3, 5 (all in x). t=2: n=6, x at risk 5 -> E_x = 5/6, V = (5/6)(1/6);
    # t=3: n=5, x 4 -> E_x = 4/5, V = (4/5)(1/5); t=5: n=2, x 2 -> E_x = 1, V = 0.
    # O_x - E_x = 3 - 79/30 = 11/30; chi2 = (11/30)^2 / (5/36 + 4/25)
    chi2 = (11 / 30) ** 2 / (5 / 36 + 4 / 25)
    assert r.statistic == pytest.approx(chi2) and r.df == 1
    assert r.p_value == pytest.approx(stats.chi2.sf(chi2, 1))
    with pytest.raises(RetentionError, match=r"group has 1 group\(s\) \(x\); the test compares two or more"):
        retention.logrank_test(DUR[DUR["group"] == "x"], by="group")


def test_survival_input_errors_and_missing_groups():
    bad = DUR.assign(duration_days=[2, -1, 3, 5, 8, 1, 4])
    with pytest.raises(RetentionError, match=r"durations.duration_days: 1 of 7 rows are missing, negative or not numbers \(e.g. -1\)"):
        retention.kaplan_meier(bad)
    with pytest.raises(RetentionError, match=r"durations.churned: must be True/False"):
        retention.kaplan_meier(DUR.assign(churned=["yes"] * 7))
    unlabelled = DUR.assign(group=["x"] * 5 + [None, None])
    assert set(retention.kaplan_meier(unlabelled, by="group")["group"]) == {"x", "(missing)"}


def _random_purchases(seed=7, n=600):
    rng = np.random.default_rng(seed)
    return purchases([(f"C{rng.integers(60):02d}", pd.Timestamp("2023-01-01") + pd.Timedelta(days=int(d)), float(a))
                      for d, a in zip(rng.integers(0, 600, n), rng.normal(30, 40, n).round(2))])


@pytest.mark.parametrize("value,method,period", [("customers", "classic", "M"), ("customers", "rolling", "Q"),
                                                 ("revenue", "classic", "M"), ("customers", "classic", "W"),
                                                 ("revenue", "classic", "W")])
def test_cohort_percentages_of_the_counts_are_the_normalized_matrix(value, method, period):
    """Percentages from the counts (no second query) equal the matrix asked for in %: each row over its period 0."""
    for tx, end in ((TX, END), (_random_purchases(), "2024-08-20")):
        if value == "revenue" and method == "rolling":
            continue
        counts = retention.cohort_matrix(tx, value=value, method=method, period=period, normalize=False, observation_end=end)
        pct = retention.cohort_percentages(counts)
        pd.testing.assert_frame_equal(pct, retention.cohort_matrix(tx, value=value, method=method, period=period, observation_end=end))
        size = counts[0].where(counts[0] > 0)
        expected = counts.apply(lambda col: 100 * col / size)
        pd.testing.assert_frame_equal(pct, expected, check_exact=False, rtol=1e-12)
        assert pct.attrs == {**counts.attrs, "normalize": True, "notes": pct.attrs["notes"]}
        assert pct.attrs["notes"][:len(counts.attrs["notes"])] == counts.attrs["notes"]
    with pytest.raises(RetentionError, match="already holds percentages"):
        retention.cohort_percentages(pct)


def test_survival_summary_reuses_the_fitted_curves():
    for by in ("group", None):
        km = retention.kaplan_meier(DUR, by=by)
        pd.testing.assert_frame_equal(retention.survival_summary(DUR, by=by, at=(4, 10), curves=km),
                                      retention.survival_summary(DUR, by=by, at=(4, 10)))
    with pytest.raises(RetentionError, match="curves were fitted with by=None"):
        retention.survival_summary(DUR, by="group", curves=retention.kaplan_meier(DUR))


def test_customer_lifetimes_reuse_the_churn_status():
    customers = pd.DataFrame({"customer_id": list("ABCD"), "acquisition_channel": ["x", "y", "x", None]})
    for churn_at in ("last_purchase", "declared"):
        status = retention.customer_churn_status(TX, observation_end=END, window_days=60)
        got = retention.customer_lifetimes(TX, observation_end=END, window_days=60, churn_at=churn_at, customers=customers, status=status)
        want = retention.customer_lifetimes(TX, observation_end=END, window_days=60, churn_at=churn_at, customers=customers)
        pd.testing.assert_frame_equal(got, want)
        assert got.attrs == want.attrs
    with pytest.raises(RetentionError, match="status is for window_days=60"):
        retention.customer_lifetimes(TX, observation_end=END, window_days=90, status=status)
    with pytest.raises(RetentionError, match="at 2024-04-30"):
        retention.customer_lifetimes(TX, observation_end="2024-03-31", window_days=60, status=status)
