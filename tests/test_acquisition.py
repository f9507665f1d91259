"""Acquisition metrics on a small hand-made company, with every answer worked out by hand."""

import numpy as np
import pandas as pd
import pytest

from clm_helpers import acquisition as acq
from clm_helpers.data import SchemaError

WINDOW = dict(observation_start="2024-01-01", observation_end="2024-03-31")


def customers():
    # C1, C2: paid_search in January; C3: organic in January; C4: paid_social in March (a channel with one customer);
    # C5: no channel, in March. February: no sign-up at all (an empty month).
    return pd.DataFrame({
        "customer_id": ["C1", "C2", "C3", "C4", "C5"],
        "signup_date": pd.to_datetime(["2024-01-05", "2024-01-20", "2024-01-10", "2024-03-02", "2024-03-15"]),
        "acquisition_channel": ["paid_search", "paid_search", "organic", "paid_social", None],
    })


def spend():
    # tv spends 80 and wins no one; paid_search spends 40 in March and wins no one there.
    return pd.DataFrame({
        "date": pd.to_datetime(["2024-01-03", "2024-01-25", "2024-01-10", "2024-03-01", "2024-03-10"]),
        "channel": ["paid_search", "paid_search", "tv", "paid_social", "paid_search"],
        "spend": [100.0, 50.0, 80.0, 30.0, 40.0],
        "leads": [10.0, np.nan, 0.0, 6.0, 8.0],
    })


def transactions():
    return pd.DataFrame({
        "customer_id": ["C1", "C1", "C1", "C1", "C3", "C4"],
        "timestamp": pd.to_datetime(["2024-01-06 09:00", "2024-01-20 10:00", "2024-02-03 10:00", "2024-02-10 08:00",
                                     "2024-01-11 15:00", "2024-03-05 12:00"]),
        "amount": [100.0, -20.0, 50.0, 70.0, 200.0, 500.0],
    })


def row(table, channel, period):
    return table[(table["channel"] == channel) & (table["period"].astype(str) == period)].iloc[0]


# ----------------------------------------------------------------------------- new customers and CAC


def test_cac_per_channel_and_month_by_hand():
    c, s = customers(), spend()
    c0, s0 = c.copy(), s.copy()
    table = acq.cac(c, s, **WINDOW)
    pd.testing.assert_frame_equal(c, c0)  # inputs untouched
    pd.testing.assert_frame_equal(s, s0)
    # 5 channels (both tables) x 3 months, empty ones included
    assert len(table) == 15
    assert sorted(table["channel"].unique()) == ["(unknown)", "organic", "paid_search", "paid_social", "tv"]
    # paid_search, January: spend 100 + 50 = 150 for C1 and C2 -> 150 / 2 = 75
    r = row(table, "paid_search", "2024-01")
    assert (r["spend"], r["new_customers"], r["cac"]) == (150.0, 2, 75.0)
    # February is empty everywhere: no spend, no customer, CAC missing with the reason
    feb = table[table["period"].astype(str) == "2024-02"]
    assert (feb["spend"] == 0).all() and (feb["new_customers"] == 0).all() and feb["cac"].isna().all()
    assert set(feb["note"]) == {"no spend and no new customer"}
    # paid_search, March: 40 spent, no one won -> undefined, never inf
    r = row(table, "paid_search", "2024-03")
    assert np.isnan(r["cac"]) and r["note"] == "spent 40.00 and won no new customer: CAC undefined"
    # tv spent 80 in January and never won a customer
    r = row(table, "tv", "2024-01")
    assert np.isnan(r["cac"]) and r["note"].startswith("spent 80.00")
    # paid_social, March: a channel with one customer: 30 / 1 = 30
    assert row(table, "paid_social", "2024-03")["cac"] == 30.0
    # organic and the customer without a channel: customers, no spend -> CAC 0
    assert row(table, "organic", "2024-01")["cac"] == 0.0 and row(table, "organic", "2024-01")["note"] == "no spend"
    assert row(table, "(unknown)", "2024-03")["new_customers"] == 1
    assert not np.isinf(table["cac"].to_numpy(float)).any()
    # paid: spend above zero in the window
    assert dict(table.groupby("channel")["paid"].first()) == {"(unknown)": False, "organic": False, "paid_search": True,
                                                              "paid_social": True, "tv": True}


def test_cac_over_the_whole_window():
    table = acq.cac(customers(), spend(), period="all", **WINDOW).set_index("channel")
    # paid_search: (100 + 50 + 40) / 2 = 95; tv: 80 / 0 undefined; paid_social 30 / 1
    assert table.loc["paid_search", "cac"] == 95.0
    assert np.isnan(table.loc["tv", "cac"])
    assert table.loc["paid_social", "cac"] == 30.0
    assert set(table["period"]) == {"2024-01-01 to 2024-03-31"}


def test_default_window_is_the_spend_table():
    table = acq.cac(customers(), spend(), period="all")
    # spend runs from 2024-01-03 to 2024-03-10: C4 (03-02) is in, C5 (03-15) is out
    assert table["period"].iloc[0] == "2024-01-03 to 2024-03-10"
    assert table.set_index("channel").loc["paid_social", "new_customers"] == 1
    assert "(unknown)" in set(table["channel"]) and table.set_index("channel").loc["(unknown)", "new_customers"] == 0


def test_cac_totals_blended_and_paid_by_hand():
    totals = acq.cac_totals(acq.cac(customers(), spend(), **WINDOW))
    jan, feb, mar = (totals.loc[pd.Period(p, "M")] for p in ("2024-01", "2024-02", "2024-03"))
    # January: all spend 150 + 80 = 230 over C1, C2, C3 -> 76.67; paid: 230 over C1, C2 -> 115; organic share 1/3
    assert jan["blended_cac"] == pytest.approx(230 / 3)
    assert jan["paid_cac"] == pytest.approx(115.0)
    assert jan["organic_share_pct"] == pytest.approx(100 / 3)
    # February: nothing spent, no one acquired -> both undefined, said so
    assert np.isnan(feb["blended_cac"]) and np.isnan(feb["paid_cac"]) and np.isnan(feb["organic_share_pct"])
    assert "blended: no spend and no new customer" in feb["note"]
    # March: spend 40 + 30 = 70 over C4 and C5 -> 35; paid: 70 over C4 -> 70; C5 (no channel) is not paid: share 50%
    assert mar["blended_cac"] == pytest.approx(35.0)
    assert mar["paid_cac"] == pytest.approx(70.0)
    assert mar["organic_share_pct"] == pytest.approx(50.0)


def test_first_purchase_convention():
    table = acq.cac(customers(), spend(), period="all", acquired="first_purchase", transactions=transactions(), **WINDOW).set_index("channel")
    # C2 never bought: paid_search acquired only C1 -> 190 / 1; C3 and C4 by their first orders
    assert table.loc["paid_search", "new_customers"] == 1 and table.loc["paid_search", "cac"] == 190.0
    assert table.loc["organic", "new_customers"] == 1 and table.loc["paid_social", "new_customers"] == 1


def test_new_customers_counts_every_channel_and_month():
    table = acq.new_customers(customers(), **WINDOW)
    # January: 2 paid_search + 1 organic; February: none; March: paid_social and (unknown)
    by_month = table.groupby(table["period"].astype(str))["new_customers"].sum().to_dict()
    assert by_month == {"2024-01": 3, "2024-02": 0, "2024-03": 2}


def test_cost_per_lead_by_hand():
    table = acq.cost_per_lead(spend(), period="all", **WINDOW).set_index("channel")
    # paid_search: rows with a lead count: 100 (10 leads) and 40 (8 leads) -> 140 / 18; the 50 without a count is left out, counted
    assert table.loc["paid_search", "cost_per_lead"] == pytest.approx(140 / 18)
    assert table.loc["paid_search", "rows_without_leads"] == 1
    assert table.loc["paid_search", "note"] == "1 row(s) without a lead count left out"
    # tv: 80 spent, 0 leads -> undefined; paid_social: 30 / 6 = 5
    assert np.isnan(table.loc["tv", "cost_per_lead"]) and "cost per lead undefined" in table.loc["tv", "note"]
    assert table.loc["paid_social", "cost_per_lead"] == 5.0


# ----------------------------------------------------------------------------- value, payback, CLV:CAC


def test_historical_value_by_hand():
    tx = transactions()
    tx0 = tx.copy()
    value = acq.historical_value(customers(), tx, gross_margin_pct=50, months=1, observation_end="2024-03-31")
    pd.testing.assert_frame_equal(tx, tx0)
    # one month = 30.44 days; complete when sign-up + 30.44 days <= 2024-04-01: C1, C2, C3 (C4, C5 excluded, counted)
    assert sorted(value.index) == ["C1", "C2", "C3"]
    assert value.attrs["excluded_incomplete"] == 2
    # C1: 100 - 20 (refund) + 50 (day 29.4) = 130, the 70 on day 36 is outside -> 50% = 65; C2 never bought: 0; C3: 200 -> 100
    assert value.to_dict() == {"C1": 65.0, "C2": 0.0, "C3": 100.0}


def test_clv_cac_per_channel_paid_and_blended_by_hand():
    c = customers()
    table = acq.cac(c, spend(), period="all", **WINDOW)
    value = acq.historical_value(c, transactions(), gross_margin_pct=50, months=1, observation_end="2024-03-31")
    out = acq.clv_cac(table, value, c)
    # paid_search: mean(65, 0) = 32.5 over CAC 95 -> 0.342, below 3:1
    assert out.loc["paid_search", "clv_cac"] == pytest.approx(32.5 / 95)
    assert out.loc["paid_search", "vs_benchmark"] == "below 3:1"
    # organic: CAC 0 -> undefined, not inf
    assert np.isnan(out.loc["organic", "clv_cac"]) and "CAC is 0" in out.loc["organic", "note"]
    # paid_social: its one customer (C4) has no value yet; tv: no customer at all
    assert out.loc["paid_social", "customers_without_value"] == 1 and np.isnan(out.loc["paid_social", "clv_cac"])
    assert out.loc["tv", "note"] == "no customer acquired through this channel"
    # paid: C1, C2, C4 (value for C1, C2: mean 32.5) over paid CAC (190 + 30 + 80) / 3 = 100 -> 0.325
    assert out.loc[acq.PAID_ROW, "clv_cac"] == pytest.approx(0.325)
    assert out.loc[acq.PAID_ROW, "customers_without_value"] == 1
    # blended: mean(65, 0, 100) = 55 over 300 / 5 = 60 -> 0.9167
    assert out.loc[acq.BLENDED_ROW, "clv_cac"] == pytest.approx(55 / 60)
    assert not np.isinf(out["clv_cac"].to_numpy(float)).any()


def test_clv_cac_leaves_out_customers_who_signed_up_after_the_window():
    c = customers()
    table = acq.cac(c, spend(), period="all", observation_start="2024-01-01", observation_end="2024-02-29")
    value = acq.historical_value(c, transactions(), gross_margin_pct=50, months=1, observation_end="2024-03-31")
    out = acq.clv_cac(table, value, c)
    # C4 and C5 signed up in March, after the window: the blended row counts C1, C2, C3 only, all valued
    assert out.loc[acq.BLENDED_ROW, "customers"] == 3 and out.loc[acq.BLENDED_ROW, "customers_without_value"] == 0


def test_clv_cac_above_benchmark():
    c = customers()
    table = acq.cac(c, spend(), period="all", **WINDOW)
    value = pd.Series({"C1": 300.0, "C2": 290.0})  # mean 295 over 95 -> 3.105
    out = acq.clv_cac(table, value, c, benchmark=3)
    assert out.loc["paid_search", "clv_cac"] == pytest.approx(295 / 95)
    assert out.loc["paid_search", "vs_benchmark"] == "at or above 3:1"


def test_cac_payback_average_and_cumulative_by_hand():
    c, tx = customers(), transactions()
    table = acq.cac(c, spend(), period="all", **WINDOW)
    # months=1, margin 50%: monthly margin per paid_search customer = mean(65, 0) = 32.5 -> 95 / 32.5 = 2.92 months
    out = acq.cac_payback(table, c, tx, gross_margin_pct=50, months=1, observation_end="2024-03-31")
    assert out.loc["paid_search", "payback_months"] == pytest.approx(95 / 32.5)
    assert out.loc["organic", "payback_months"] == 0.0  # no spend: nothing to pay back
    assert np.isnan(out.loc["tv", "payback_months"])
    assert out.loc[acq.PAID_ROW, "payback_months"] == pytest.approx(100 / 32.5)  # paid CAC 100, C1 and C2 complete
    assert out.loc[acq.BLENDED_ROW, "payback_months"] == pytest.approx(60 / 55)
    # months=2, margin 100%: C1 month 1: 100 - 20 + 50 = 130, month 2 (day 36): 70; C2: 0, 0 -> per customer 65 then 35
    avg = acq.cac_payback(table, c, tx, gross_margin_pct=100, months=2, observation_end="2024-03-31")
    assert avg.loc["paid_search", "monthly_margin"] == pytest.approx(50.0)  # (130 + 70 + 0) / 2 customers / 2 months
    assert avg.loc["paid_search", "payback_months"] == pytest.approx(95 / 50)
    cum = acq.cac_payback(table, c, tx, gross_margin_pct=100, months=2, observation_end="2024-03-31", method="cumulative")
    assert cum.loc["paid_search", "payback_months"] == 2.0  # cumulative 65 < 95, then 100 >= 95
    # at 50%: cumulative 32.5, then 50 < 95: not paid back within 2 months, missing with the reason
    cum50 = acq.cac_payback(table, c, tx, gross_margin_pct=50, months=2, observation_end="2024-03-31", method="cumulative")
    assert np.isnan(cum50.loc["paid_search", "payback_months"]) and cum50.loc["paid_search", "note"] == "not paid back within 2 months"


def test_first_purchase_convention_values_only_buyers():
    c, tx = customers(), transactions()
    table = acq.cac(c, spend(), period="all", acquired="first_purchase", transactions=tx, **WINDOW)
    value = acq.historical_value(c, tx, gross_margin_pct=50, months=1, observation_end="2024-03-31")
    out = acq.clv_cac(table, value, c, transactions=tx)
    # paid_search acquired only C1 (C2 never bought): value 65 over CAC 190 / 1
    assert out.loc["paid_search", "customers"] == 1 and out.loc["paid_search", "clv_cac"] == pytest.approx(65 / 190)
    payback = acq.cac_payback(table, c, tx, gross_margin_pct=50, months=1, observation_end="2024-03-31")
    assert payback.loc["paid_search", "payback_months"] == pytest.approx(190 / 65)
    with pytest.raises(acq.AcquisitionError, match=r'acquired="first_purchase"\): pass transactions='):
        acq.clv_cac(table, value, c)


# ----------------------------------------------------------------------------- errors, one per rule


def test_period_must_be_known():
    with pytest.raises(acq.AcquisitionError, match=r"period must be one of \['W', 'M', 'Q', 'Y', 'all'\].*got 'D'"):
        acq.cac(customers(), spend(), period="D")


def test_required_columns():
    with pytest.raises(SchemaError, match=r"marketing_spend: missing column\(s\) \['spend'\]"):
        acq.cac(customers(), spend().drop(columns="spend"))


def test_negative_spend_is_refused_with_count_and_example():
    s = spend()
    s.loc[2, "spend"] = -5.0
    with pytest.raises(SchemaError, match=r"marketing_spend.spend: 1 of 5 rows are not a number of zero or more \(e.g. row 3: -5.0\)"):
        acq.cac(customers(), s)


def test_duplicate_customers_are_refused():
    c = pd.concat([customers(), customers().iloc[[0]]], ignore_index=True)
    with pytest.raises(SchemaError, match=r"customers.customer_id: 2 of 6 rows share an identifier.*'C1'"):
        acq.cac(c, spend())


def test_window_order():
    with pytest.raises(acq.AcquisitionError, match=r"observation_start 2024-03-01 is after observation_end 2024-01-31"):
        acq.cac(customers(), spend(), observation_start="2024-03-01", observation_end="2024-01-31")


def test_bad_date():
    with pytest.raises(acq.AcquisitionError, match=r"observation_end must be a date such as 2024-12-31, got 'soon'"):
        acq.cac(customers(), spend(), observation_end="soon")


def test_acquired_convention_must_be_known():
    with pytest.raises(acq.AcquisitionError, match=r"acquired must be one of \['signup', 'first_purchase'\]"):
        acq.cac(customers(), spend(), acquired="lead")


def test_first_purchase_needs_transactions():
    with pytest.raises(acq.AcquisitionError, match=r'acquired="first_purchase" needs the transactions table'):
        acq.cac(customers(), spend(), acquired="first_purchase")


def test_cost_per_lead_needs_leads():
    with pytest.raises(acq.AcquisitionError, match=r"marketing_spend has no leads column"):
        acq.cost_per_lead(spend().drop(columns="leads"))


def test_leads_must_be_counts():
    s = spend()
    s.loc[0, "leads"] = -1.0
    with pytest.raises(SchemaError, match=r"marketing_spend.leads: 1 of 5 rows are not a count of zero or more \(e.g. row 1: -1.0\)"):
        acq.cost_per_lead(s)


def test_months_must_be_whole_and_positive():
    with pytest.raises(acq.AcquisitionError, match=r"months must be a whole number of months, at least 1, got 0"):
        acq.historical_value(customers(), transactions(), gross_margin_pct=50, months=0)


def test_gross_margin_is_a_percentage():
    with pytest.raises(acq.AcquisitionError, match=r"gross_margin_pct must be above 0 and at most 100.*got 0"):
        acq.historical_value(customers(), transactions(), gross_margin_pct=0)
    with pytest.raises(acq.AcquisitionError, match=r"gross_margin_pct must be above 0 and at most 100.*got 140"):
        acq.historical_value(customers(), transactions(), gross_margin_pct=140)


def test_payback_method_must_be_known():
    table = acq.cac(customers(), spend(), period="all", **WINDOW)
    with pytest.raises(acq.AcquisitionError, match=r"method must be one of \['average', 'cumulative'\], got 'simple'"):
        acq.cac_payback(table, customers(), transactions(), gross_margin_pct=50, method="simple")


def test_values_must_belong_to_the_customers():
    table = acq.cac(customers(), spend(), period="all", **WINDOW)
    with pytest.raises(acq.AcquisitionError, match=r"values: 1 of 2 customer_ids are not in customers \(e.g. 'Z9'\)"):
        acq.clv_cac(table, pd.Series({"C1": 1.0, "Z9": 2.0}), customers())


def test_values_must_be_finite():
    table = acq.cac(customers(), spend(), period="all", **WINDOW)
    with pytest.raises(acq.AcquisitionError, match=r"values: 1 of 2 customers have an infinite value \(e.g. 'C2'\)"):
        acq.clv_cac(table, pd.Series({"C1": 1.0, "C2": np.inf}), customers())


def test_benchmark_must_be_positive():
    table = acq.cac(customers(), spend(), period="all", **WINDOW)
    with pytest.raises(acq.AcquisitionError, match=r"benchmark must be a positive number \(3 for 3:1\), got 0"):
        acq.clv_cac(table, pd.Series({"C1": 1.0}), customers(), benchmark=0)


# ----------------------------------------------------------------------------- plots


def test_plots_draw_and_label(monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = customers()
    monthly = acq.cac(c, spend(), **WINDOW)
    top, bottom = acq.plot_spend_vs_customers(monthly)
    assert bottom.get_ylabel() == "new customers per month" and "spend" in top.get_ylabel()
    table = acq.cac(c, spend(), period="all", **WINDOW)
    out = acq.clv_cac(table, pd.Series({"C1": 300.0, "C2": 290.0}), c)
    ax = acq.plot_clv_cac(out)
    texts = [t.get_text() for t in ax.texts]
    assert "n/a" in texts and "3.11" in texts  # organic undefined, paid_search 295 / 95
    ax = acq.plot_cac(table.set_index("channel"))
    assert ax.get_ylabel() == "CAC (currency per new customer)"
    plt.close("all")
