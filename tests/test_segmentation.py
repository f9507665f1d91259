"""RFM values, scores with ties, segments, summaries and migration on hand-made data worked out by hand."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import ibis  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from clm_helpers import segmentation as sg  # noqa: E402
from clm_helpers.data import OptionError, SchemaError  # noqa: E402
from clm_helpers.segmentation import SegmentationError  # noqa: E402


def purchases(rows):
    df = pd.DataFrame(rows, columns=["customer_id", "timestamp", "amount"])
    df["timestamp"] = pd.Series([pd.Timestamp(t) for t in df["timestamp"]], dtype="datetime64[us]")
    return df


# Observation end 31 March 2024 (a leap year: February has 29 days).
#   A: 10 Jan 50, 30 Mar 100 and 50 (two orders, one day)  -> last 30 Mar: 1 day; 3 orders on 2 days; 200
#   B: 1 Mar 20, refund -5 on 5 Mar                         -> 30 days; 1 order; net 15 (the refund is not a purchase)
#   C: 1 Feb 10, 21 Mar 10                                  -> 10 days; 2 orders; 20
#   D: 1 Jan 5                                              -> 31 + 29 + 30 = 90 days; 1 order; 5
#   E: only a refund (-10, 10 Feb)                          -> not scored (refund only)
#   F: 5 Apr 30, after the end                              -> ignored
#   G: 21 Mar 0.00 (a free replacement is a purchase)       -> 10 days; 1 order; 0
TX = purchases([
    ("A", "2024-01-10 09:00", 50.0), ("A", "2024-03-30 10:00", 100.0), ("A", "2024-03-30 18:00", 50.0),
    ("B", "2024-03-01", 20.0), ("B", "2024-03-05", -5.0),
    ("C", "2024-02-01", 10.0), ("C", "2024-03-21", 10.0),
    ("D", "2024-01-01", 5.0),
    ("E", "2024-02-10", -10.0),
    ("F", "2024-04-05", 30.0),
    ("G", "2024-03-21", 0.0),
])
END = "2024-03-31"


def test_rfm_values_by_hand():
    v = sg.rfm_values(TX, observation_end=END)
    assert list(v.index) == ["A", "B", "C", "D", "G"]
    assert v["days_since_last_purchase"].tolist() == [1, 30, 10, 90, 10]
    assert v["purchases"].tolist() == [3, 1, 2, 1, 1]
    assert v["monetary"].tolist() == [200.0, 15.0, 20.0, 5.0, 0.0]
    assert v["revenue"].tolist() == v["monetary"].tolist()
    assert v.loc["A", "first_purchase"] == pd.Timestamp("2024-01-10")
    assert v.attrs["refund_only_customers"] == 1 and v.attrs["rows_after_end"] == 1


def test_rfm_values_other_conventions_and_window():
    days = sg.rfm_values(TX, observation_end=END, frequency="days")
    assert days["purchases"].tolist() == [2, 1, 2, 1, 1]  # A's two orders on 30 March count once
    mean = sg.rfm_values(TX, observation_end=END, monetary="mean")
    assert mean["monetary"].tolist() == pytest.approx([200 / 3, 15.0, 10.0, 5.0, 0.0])
    # the last 31 days: 1-31 March. A: two orders, 150; B: 20 - 5 = 15; C: 10; D: nothing (still scored, 90 days); G: 0
    w = sg.rfm_values(TX, observation_end=END, window_days=31)
    assert w["purchases"].tolist() == [2, 1, 1, 0, 1]
    assert w["revenue"].tolist() == [150.0, 15.0, 10.0, 0.0, 0.0]
    assert w["days_since_last_purchase"].tolist() == [1, 30, 10, 90, 10]  # recency looks at all history
    w_mean = sg.rfm_values(TX, observation_end=END, window_days=31, monetary="mean")
    assert w_mean.loc["D", "monetary"] == 0.0  # no purchase in the window: 0, not a division by zero


def test_rfm_values_default_end_is_the_last_transaction_day_and_ibis_input_gives_the_same():
    v = sg.rfm_values(TX)
    assert v.attrs["observation_end"] == "2024-04-05"
    assert v.loc["F", "days_since_last_purchase"] == 0 and v.loc["A", "days_since_last_purchase"] == 6
    via_ibis = sg.rfm_values(ibis.memtable(TX), observation_end=END)
    pd.testing.assert_frame_equal(via_ibis, sg.rfm_values(TX, observation_end=END))


def test_rfm_scores_quintiles_with_ties_min():
    s = sg.rfm_scores(sg.rfm_values(TX, observation_end=END))
    # score = 1 + floor(5 x customers strictly worse / 5), n = 5
    # R (days 1, 30, 10, 90, 10; more days is worse): A 4 worse -> 5; B 1 (D) -> 2; C 2 (B, D) -> 3; D 0 -> 1; G as C -> 3
    assert s["r_score"].tolist() == [5, 2, 3, 1, 3]
    # F (3, 1, 2, 1, 1): A 4 fewer -> 5; the three single buyers 0 -> 1; C 3 -> 4 (scores 2 and 3 stay empty)
    assert s["f_score"].tolist() == [5, 1, 4, 1, 1]
    # M (200, 15, 20, 5, 0): A 4 -> 5; B 2 -> 3; C 3 -> 4; D 1 -> 2; G 0 -> 1
    assert s["m_score"].tolist() == [5, 3, 4, 2, 1]
    # FM = (F + M) / 2 rounded half up: A 5; B (1+3)/2 = 2; C 4; D (1+2)/2 = 1.5 -> 2; G 1
    assert s["fm_score"].tolist() == [5, 2, 4, 2, 1]
    assert s["rfm_cell"].tolist() == ["555", "213", "344", "112", "311"]
    assert sg.rfm_scores(s, fm="frequency")["fm_score"].tolist() == [5, 1, 4, 1, 1]


def test_rfm_scores_ties_first_gives_equal_groups_decided_by_customer_id():
    s = sg.rfm_scores(sg.rfm_values(TX, observation_end=END), ties="first")
    # R worst first: D (90), B (30), C and G (10: C before G by id), A (1) -> positions 0..4, score = position + 1
    assert s["r_score"].tolist() == [5, 2, 3, 1, 4]
    # F worst first: B, D, G (1 order, by id), C (2), A (3)
    assert s["f_score"].tolist() == [5, 1, 4, 2, 3]


def test_rfm_scores_do_not_depend_on_row_order():
    shuffled = TX.sample(frac=1.0, random_state=7).reset_index(drop=True)
    for ties in ("min", "first"):
        a = sg.rfm_segments(TX, observation_end=END, ties=ties)
        b = sg.rfm_segments(shuffled, observation_end=END, ties=ties)
        pd.testing.assert_frame_equal(a, b)


def test_rfm_scores_against_a_reference():
    ref = sg.rfm_values(TX, observation_end=END)
    new = pd.DataFrame({"days_since_last_purchase": [5], "purchases": [2], "monetary": [20.0]}, index=pd.Index(["X"], name="customer_id"))
    s = sg.rfm_scores(new, reference=ref)
    # R: reference days above 5: 30, 10, 90, 10 -> 4 of 5 -> 1 + 20 // 5 = 5
    # F: reference purchases below 2: three single buyers -> 1 + 15 // 5 = 4
    # M: reference revenue below 20: 15, 5, 0 -> 4 (20 itself is not below 20)
    assert s[["r_score", "f_score", "m_score"]].iloc[0].tolist() == [5, 4, 4]
    better = new.assign(purchases=10)  # above every reference value: capped at 5
    assert sg.rfm_scores(better, reference=ref)["f_score"].iloc[0] == 5
    # scored against itself, the reference changes nothing
    pd.testing.assert_series_equal(sg.rfm_scores(ref, reference=ref)["r_score"], sg.rfm_scores(ref)["r_score"])


def test_segments_by_hand_on_the_default_map():
    seg = sg.rfm_segments(TX, observation_end=END)
    # cells R, FM: A 55 Champions; B 22 Hibernating; C 34 Loyal; D 12 Hibernating; G 31 About to sleep
    assert seg["segment"].tolist() == ["Champions", "Hibernating", "Loyal", "Hibernating", "About to sleep"]
    assert seg.attrs["segments"][0] == "Champions" and len(seg.attrs["segments"]) == 11


def test_default_map_covers_every_cell_once():
    grid = sg.assign_segments(sg.rfm_scores(sg.rfm_values(TX, observation_end=END))).attrs["segment_grid"]
    assert len(grid) == 25 and set(grid.values()) == set(sg.DEFAULT_SEGMENT_MAP.values())
    assert grid["11"] == "Lost" and grid["15"] == "Cannot lose them" and grid["51"] == "New" and grid["33"] == "Need attention"
    assert set(sg.SEGMENT_ACTIONS) == set(sg.DEFAULT_SEGMENT_MAP.values())


def test_custom_map_and_map_errors():
    scores = sg.rfm_scores(sg.rfm_values(TX, observation_end=END))
    two = sg.assign_segments(scores, segment_map={"[4-5].": "Recent", "[1-3].": "Lapsing"})
    assert two["segment"].tolist() == ["Recent", "Lapsing", "Lapsing", "Lapsing", "Lapsing"]  # R 5, 2, 3, 1, 3
    with pytest.raises(OptionError, match=r"segment_map leaves 5 of 25 cells .* without a segment: 11, 12, 13, 14, 15"):
        sg.assign_segments(scores, segment_map={"[2-5].": "Rest"})
    with pytest.raises(OptionError, match=r"matches 1 cell\(s\) with more than one pattern: 33 by '33' \(Need attention\) and '3\[3\]' \(Three\)"):
        sg.assign_segments(scores, segment_map={**sg.DEFAULT_SEGMENT_MAP, "3[3]": "Three"})
    with pytest.raises(OptionError, match=r"pattern '\[1-' is not a valid regular expression"):
        sg.assign_segments(scores, segment_map={"[1-": "Broken"})
    with pytest.raises(OptionError, match=r"segment_map leaves 11 of 36 cells"):  # six bins: the 5 x 5 map misses R 6 and FM 6
        sg.rfm_segments(TX, observation_end=END, bins=6)


def test_segment_summary_by_hand():
    seg = sg.rfm_segments(TX, observation_end=END)
    clv = pd.Series({"A": 100.0, "B": 10.0, "C": 50.0, "D": 0.0, "G": 40.0})
    t = sg.segment_summary(seg, clv=clv)
    assert list(t.index) == ["Champions", "Loyal", "About to sleep", "Hibernating"]  # the map's order
    assert t["customers"].tolist() == [1, 1, 1, 2]
    assert t["customers_pct"].tolist() == [20.0, 20.0, 20.0, 40.0]
    # net revenue 200 + 15 + 20 + 5 + 0 = 240: Champions 200 -> 83.33%; Loyal 20; About to sleep 0; Hibernating 15 + 5 = 20
    assert t["revenue_pct"].tolist() == pytest.approx([250 / 3, 25 / 3, 0.0, 25 / 3])
    assert t.loc["Hibernating", "mean_days_since_last_purchase"] == 60.0  # (30 + 90) / 2
    # CLV total 200: Hibernating mean (10 + 0) / 2 = 5, share 10 / 200 = 5%
    assert t.loc["Hibernating", "mean_clv"] == 5.0 and t.loc["Champions", "clv_pct"] == 50.0
    assert "Lost" in t.attrs["empty_segments"] and t.attrs["notes"] == []


def test_segment_summary_needs_a_clv_for_every_customer_and_reports_undefined_shares():
    seg = sg.rfm_segments(TX, observation_end=END)
    with pytest.raises(SegmentationError, match=r"clv: 2 of 5 scored customers have no CLV \(e\.g\. D, G\)"):
        sg.segment_summary(seg, clv=pd.Series({"A": 1.0, "B": 1.0, "C": 1.0}))
    refunds = purchases([("A", "2024-03-01", 5.0), ("A", "2024-03-02", -20.0)])  # net revenue -15
    t = sg.segment_summary(sg.rfm_segments(refunds, observation_end=END))
    assert t["revenue_pct"].isna().all() and "not positive" in t.attrs["notes"][0]


def test_segment_migration_by_hand():
    before = sg.rfm_segments(TX, observation_end="2024-02-15")
    # at 15 Feb: A (10 Jan, 50) 36 days; C (1 Feb, 10) 14 days; D (1 Jan, 5) 45 days; n = 3, everyone 1 order
    # R: A 1 worse -> 1 + 5 // 3 = 2; C 2 -> 1 + 10 // 3 = 4; D -> 1. M: A 2 lower -> 4; C 1 -> 2; D -> 1. F all 1
    # FM: A (1 + 4 + 1) // 2 = 3; C 2; D 1 -> A 23 At risk, C 42 Potential loyalists, D 11 Lost
    assert before["segment"].tolist() == ["At risk", "Potential loyalists", "Lost"]
    after = sg.rfm_segments(TX, observation_end=END)
    m = sg.segment_migration(before, after)
    assert list(m.index) == ["(new customer)", "Potential loyalists", "At risk", "Lost"]
    assert list(m.columns) == ["Champions", "Loyal", "About to sleep", "Hibernating"]
    assert m.loc["At risk", "Champions"] == 1 and m.loc["Potential loyalists", "Loyal"] == 1 and m.loc["Lost", "Hibernating"] == 1
    assert m.loc["(new customer)"].tolist() == [0, 0, 1, 1]  # B and G bought first in March
    pct = sg.segment_migration(before, after, normalize=True)
    assert pct.loc["(new customer)"].tolist() == [0.0, 0.0, 50.0, 50.0]
    assert m.attrs == {"before": "2024-02-15", "after": "2024-03-31"}
    # a customer scored before but not after lands in "(not scored)"
    gone = sg.segment_migration(before, after.drop(index="D"))
    assert gone.loc["Lost", "(not scored)"] == 1


def test_snapshots_with_each_and_with_first_thresholds():
    earlier, later = sg.rfm_snapshots(TX, observation_end=END, months_before=1)
    assert earlier.attrs["observation_end"] == "2024-02-29"
    # at 29 Feb: A 50 days, C 28, D 59, one order each, 50 / 10 / 5 -> A 23 At risk, C 42 Potential loyalists, D 11 Lost
    assert earlier["segment"].tolist() == ["At risk", "Potential loyalists", "Lost"]
    pd.testing.assert_frame_equal(later, sg.rfm_segments(TX, observation_end=END))
    _, fixed = sg.rfm_snapshots(TX, observation_end=END, months_before=1, thresholds="first")
    # against the 29 Feb values (days 50, 28, 59; purchases 1, 1, 1; monetary 50, 10, 5), n = 3:
    # R: A 1 day, 3 above -> 1 + 15 // 3 = 6, capped at 5; B 30, 2 above (50, 59) -> 4; C and G 10 -> 5; D 90 -> 1
    # F: A 3 and C 2 are above all three -> 5; single buyers -> 1.  M: A 200 -> 5; B 15 and C 20 above 10 and 5 -> 4;
    # D 5 and G 0 -> 1.  FM: A 5, B (1 + 4 + 1) // 2 = 3, C 5, D 1, G 1
    assert fixed["r_score"].tolist() == [5, 4, 5, 1, 5] and fixed["fm_score"].tolist() == [5, 3, 5, 1, 1]
    assert fixed["segment"].tolist() == ["Champions", "Potential loyalists", "Champions", "Lost", "New"]
    with pytest.raises(OptionError, match=r"thresholds must be one of \['each', 'first'\], got 'fixed'"):
        sg.rfm_snapshots(TX, observation_end=END, thresholds="fixed")
    with pytest.raises(OptionError, match=r"thresholds='first' needs ties='min' .*got ties='first'"):
        sg.rfm_snapshots(TX, observation_end=END, thresholds="first", ties="first")
    with pytest.raises(SegmentationError, match=r"no customer had bought by 2023-03-31"):
        sg.rfm_snapshots(TX, observation_end=END, months_before=12, thresholds="first")


def test_score_ranges_by_hand():
    r = sg.score_ranges(sg.rfm_segments(TX, observation_end=END))
    recency = r["R: days since last purchase"]
    # R scores from above: D 90 -> 1, B 30 -> 2, C and G 10 -> 3, nobody 4, A 1 -> 5
    assert recency["customers"].tolist() == [1, 1, 2, 0, 1]
    assert recency["lowest"].tolist()[:3] == [90, 30, 10] and np.isnan(recency.loc[4, "lowest"])
    assert r["F: purchases"]["customers"].tolist() == [3, 0, 0, 1, 1]


def test_segment_exports_lists_per_segment():
    seg = sg.rfm_segments(TX, observation_end=END)
    lists = sg.segment_exports(seg)
    assert list(lists) == ["rfm_segment_champions.csv", "rfm_segment_loyal.csv", "rfm_segment_about_to_sleep.csv", "rfm_segment_hibernating.csv"]
    assert lists["rfm_segment_hibernating.csv"]["customer_id"].tolist() == ["B", "D"]
    assert list(lists["rfm_segment_champions.csv"].columns) == ["customer_id", "segment", "r_score", "f_score", "m_score",
                                                                 "days_since_last_purchase", "purchases", "monetary"]
    assert list(sg.segment_exports(seg, only="Loyal")) == ["rfm_segment_loyal.csv"]
    with pytest.raises(OptionError, match=r"only: unknown segment\(s\) \['Gold'\]"):
        sg.segment_exports(seg, only=["Gold"])


def test_inputs_are_not_modified():
    before = TX.copy()
    values = sg.rfm_values(TX, observation_end=END)
    kept = values.copy()
    seg = sg.assign_segments(sg.rfm_scores(values))
    sg.segment_summary(seg)
    pd.testing.assert_frame_equal(TX, before)
    pd.testing.assert_frame_equal(values, kept)
    assert "segment" not in values.columns


def test_no_purchase_gives_an_empty_segmentation():
    only_refunds = purchases([("E", "2024-02-10", -10.0)])
    seg = sg.rfm_segments(only_refunds, observation_end=END)
    assert seg.empty and seg.attrs["refund_only_customers"] == 1
    t = sg.segment_summary(seg)
    assert t.empty and len(t.attrs["empty_segments"]) == 11
    assert sg.segment_exports(seg) == {}


def test_one_rule_per_error():
    with pytest.raises(SchemaError, match=r"transactions: missing column\(s\) \['amount'\]"):
        sg.rfm_values(TX.drop(columns="amount"), observation_end=END)
    with pytest.raises(SchemaError, match=r"transactions\.amount: 1 of 2 rows are empty \(e\.g\. rows 1\)"):
        sg.rfm_values(purchases([("A", "2024-03-01", 5.0), ("B", "2024-03-01", None)]), observation_end=END)
    with pytest.raises(SegmentationError, match=r"transactions: the table is empty"):
        sg.rfm_values(TX.iloc[:0])
    with pytest.raises(OptionError, match=r"observation_end must be a date such as 2024-12-31, got 'soon'"):
        sg.rfm_values(TX, observation_end="soon")
    with pytest.raises(OptionError, match=r"frequency must be one of \['orders', 'days'\], got 'visits'"):
        sg.rfm_values(TX, frequency="visits")
    with pytest.raises(OptionError, match=r"monetary must be one of \['total', 'mean'\], got 'max'"):
        sg.rfm_values(TX, monetary="max")
    with pytest.raises(OptionError, match=r"window_days must be a positive whole number of days or None .*got 0"):
        sg.rfm_values(TX, window_days=0)
    values = sg.rfm_values(TX, observation_end=END)
    with pytest.raises(OptionError, match=r"bins must be a whole number from 2 to 9 .*got 10"):
        sg.rfm_scores(values, bins=10)
    with pytest.raises(OptionError, match=r"ties must be one of \['min', 'first'\], got 'average'"):
        sg.rfm_scores(values, ties="average")
    with pytest.raises(OptionError, match=r"fm must be one of \['mean', 'frequency'\], got 'sum'"):
        sg.rfm_scores(values, fm="sum")
    with pytest.raises(OptionError, match=r"reference thresholds need ties='min'"):
        sg.rfm_scores(values, ties="first", reference=values)
    with pytest.raises(SchemaError, match=r"rfm values\.monetary: 1 of 5 customers have no finite value \(e\.g\. C\)"):
        sg.rfm_scores(values.assign(monetary=[1.0, 2.0, np.inf, 3.0, 4.0]))
    with pytest.raises(SchemaError, match=r"rfm values: missing column\(s\) \['purchases'\]"):
        sg.rfm_scores(values.drop(columns="purchases"))
    with pytest.raises(OptionError, match=r"segment_map must be a non-empty dict"):
        sg.assign_segments(sg.rfm_scores(values), segment_map=["Champions"])
    with pytest.raises(OptionError, match=r"months_before must be a positive whole number of months, got 0"):
        sg.rfm_snapshots(TX, months_before=0)


def test_plots_draw_on_the_given_axes():
    seg = sg.rfm_segments(TX, observation_end=END)
    before = sg.rfm_segments(TX, observation_end="2024-02-15")
    counts = sg.segment_migration(before, seg)
    for draw in (lambda ax: sg.plot_rfm_grid(seg, ax=ax),
                 lambda ax: sg.plot_segment_shares(sg.segment_summary(seg), ax=ax),
                 lambda ax: sg.plot_migration_matrix(sg.segment_migration(before, seg, normalize=True), ax=ax),
                 lambda ax: sg.plot_migration_flows(counts, ax=ax)):
        fig, ax = plt.subplots()
        assert draw(ax) is ax
        assert ax.get_title() and ax.get_xlabel() and ax.get_ylabel()
        plt.close(fig)
    fig, ax = plt.subplots()
    sg.plot_migration_flows(counts, ax=ax, min_share=0.3)  # the 1-customer flows (20% each) are under 30%: not drawn
    assert "flows under 30.0% of customers not drawn" in ax.get_title()
    plt.close(fig)
