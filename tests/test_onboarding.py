"""Onboarding metrics on a small hand-made company, with every answer worked out by hand."""

import numpy as np
import pandas as pd
import pytest

from clm_helpers import onboarding as onb
from clm_helpers.data import SchemaError

END = "2024-03-31"
CRITERIA = {"view": 2, "wish": 1}


def customers():
    # A, B, C sign up in January; D alone in February (a cohort of one customer); E on 03-28, whose 7-day window
    # (to 04-04) has not elapsed on 2024-03-31; no one signs up in March but E.
    return pd.DataFrame({
        "customer_id": ["A", "B", "C", "D", "E"],
        "signup_date": pd.to_datetime(["2024-01-01", "2024-01-01", "2024-01-10", "2024-02-05", "2024-03-28"]),
        "acquisition_channel": ["x", "x", "y", "y", None],
    })


def events():
    rows = [
        # A: 2 views and a wish within 7 days: activated when the wish comes, 2024-01-03 00:00 = 2.0 days
        ("A", "2024-01-01 10:00", "view"), ("A", "2024-01-02 12:00", "view"), ("A", "2024-01-03 00:00", "wish"),
        # B: one view in the window (the second on day 8 is outside): not activated
        ("B", "2024-01-02 00:00", "view"), ("B", "2024-01-02 06:00", "wish"), ("B", "2024-01-09 00:00", "view"),
        # C: a view the day before sign-up does not count; activated at the wish, 2024-01-12 12:00 = 2.5 days
        ("C", "2024-01-09 12:00", "view"), ("C", "2024-01-10 06:00", "view"), ("C", "2024-01-10 18:00", "view"),
        ("C", "2024-01-12 12:00", "wish"),
        # D: activated at the second view, 2024-02-11 00:00 = 6.0 days
        ("D", "2024-02-06 00:00", "wish"), ("D", "2024-02-07 00:00", "view"), ("D", "2024-02-11 00:00", "view"),
        # E: meets every condition, but the window is still open: excluded and counted
        ("E", "2024-03-28 01:00", "view"), ("E", "2024-03-28 02:00", "view"), ("E", "2024-03-28 03:00", "wish"),
        # funnel steps s1 -> s2 -> s3
        ("A", "2024-01-01 01:00", "s1"), ("A", "2024-01-02 01:00", "s2"), ("A", "2024-01-03 01:00", "s3"),
        ("B", "2024-01-01 09:00", "s2"), ("B", "2024-01-01 12:00", "s1"), ("B", "2024-01-02 12:00", "s3"),
        ("C", "2024-01-10 01:00", "s1"),
    ]
    return pd.DataFrame({"customer_id": [r[0] for r in rows], "timestamp": pd.to_datetime([r[1] for r in rows]),
                         "event": [r[2] for r in rows]})


def transactions():
    return pd.DataFrame({
        "customer_id": ["A", "A", "B", "B", "B", "C", "D", "D"],
        "timestamp": pd.to_datetime(["2024-01-02 12:00", "2024-02-15 00:00", "2024-01-01 12:00", "2024-01-05 00:00",
                                     "2024-02-10 00:00", "2024-02-20 00:00", "2024-02-06 06:00", "2024-03-20 00:00"]),
        "amount": [30.0, 20.0, -5.0, 40.0, -5.0, 10.0, 15.0, 15.0],
    })


def subscriptions():
    return pd.DataFrame({
        "customer_id": ["P", "P", "Q", "Q", "R", "R", "S", "U"],
        "start_date": pd.to_datetime(["2024-01-01", "2024-01-15", "2024-01-05", "2024-01-30", "2023-12-01", "2024-02-01",
                                      "2024-03-25", "2024-03-20"]),
        "end_date": pd.to_datetime(["2024-01-15", None, "2024-01-19", None, "2024-01-01", "2024-02-15", "2024-04-08", "2024-03-27"]),
        "plan": ["trial", "standard", "trial", "standard", "standard", "trial", "trial", "trial"],
    })


def activated():
    return onb.activation(customers(), events(), criteria=CRITERIA, window_days=7, observation_end=END)


# ----------------------------------------------------------------------------- activation


def test_activation_per_customer_by_hand():
    c, e = customers(), events()
    c0, e0 = c.copy(), e.copy()
    act = onb.activation(c, e, criteria=CRITERIA, window_days=7, observation_end=END).set_index("customer_id")
    pd.testing.assert_frame_equal(c, c0)
    pd.testing.assert_frame_equal(e, e0)
    assert act["activated"].to_dict() == {"A": True, "B": False, "C": True, "D": True, "E": True}
    assert act["eligible"].to_dict() == {"A": True, "B": True, "C": True, "D": True, "E": False}
    assert act.loc["A", "days_to_activation"] == pytest.approx(2.0)
    assert act.loc["C", "days_to_activation"] == pytest.approx(2.5)  # the 2 views came first; the wish at 2.5 days completes it
    assert act.loc["D", "days_to_activation"] == pytest.approx(6.0)  # the second view completes it
    assert np.isnan(act.loc["B", "days_to_activation"])
    assert act.loc["B", "n_view"] == 1 and act.loc["C", "n_view"] == 2  # out-of-window events are not counted
    assert act.loc["E", "acquisition_channel"] == "(unknown)"


def test_activation_rate_by_cohort_by_hand():
    rates = onb.activation_rate(activated()).set_index("cohort")
    # January: A, B, C eligible, A and C activated -> 66.7%; February: D alone -> 100%
    jan, feb, mar = rates.loc[pd.Period("2024-01", "M")], rates.loc[pd.Period("2024-02", "M")], rates.loc[pd.Period("2024-03", "M")]
    assert (jan["eligible"], jan["activated"]) == (3, 2) and jan["activation_rate"] == pytest.approx(200 / 3)
    assert (feb["signed_up"], feb["activated"], feb["activation_rate"]) == (1, 1, 100.0)
    # March: E's window is open: out of the denominator, counted, and the rate is missing with the reason
    assert (mar["signed_up"], mar["window_open"], mar["eligible"]) == (1, 1, 0)
    assert np.isnan(mar["activation_rate"]) and mar["note"] == "every customer's activation window is still open"


def test_activation_rate_as_of_an_earlier_day_by_hand():
    # As of 2024-02-10: A, B, C (January) eligible; D signed up 02-05, its 7-day window runs to 02-11: still open,
    # though D had met both conditions by then; E (03-28) had not signed up yet
    rates = onb.activation_rate(activated(), by=None, as_of="2024-02-10").iloc[0]
    assert (rates["signed_up"], rates["window_open"], rates["eligible"], rates["activated"]) == (4, 1, 3, 2)
    # a day later D's window has elapsed (the end of 02-11 is past 02-05 + 7 days)
    later = onb.activation_rate(activated(), by=None, as_of="2024-02-11").iloc[0]
    assert (later["eligible"], later["activated"]) == (4, 3)
    by_hand = onb.activation(customers(), events(), criteria=CRITERIA, window_days=7, observation_end="2024-02-10")
    pd.testing.assert_frame_equal(rates.to_frame(), onb.activation_rate(by_hand, by=None).iloc[0].to_frame())
    with pytest.raises(onb.OnboardingError, match="as_of 2024-04-01 is after the activation table's observation_end 2024-03-31"):
        onb.activation_rate(activated(), as_of="2024-04-01")
    with pytest.raises(onb.OnboardingError, match="window_days and observation_end"):
        onb.activation_rate(activated().copy().pipe(lambda t: setattr(t, "attrs", {}) or t), as_of="2024-02-10")


def test_activation_rate_by_channel():
    rates = onb.activation_rate(activated(), by="acquisition_channel").set_index("acquisition_channel")
    # x: A, B -> 1 of 2 = 50%; y: C, D -> 100%; (unknown): E, window open
    assert rates.loc["x", "activation_rate"] == 50.0
    assert rates.loc["y", "activation_rate"] == 100.0
    assert rates.loc["(unknown)", "window_open"] == 1


def test_time_to_activation_distribution_by_hand():
    summary = onb.time_summary(activated(), column="days_to_activation").iloc[0]
    # eligible A, B, C, D; reached 2.0, 2.5, 6.0 -> mean 3.5, median 2.5,
    # p25 = 2.0 + 0.5 x 0.5 = 2.25, p75 = 2.5 + 0.5 x 3.5 = 4.25, p90 = 2.5 + 0.8 x 3.5 = 5.3 (linear interpolation)
    assert (summary["customers"], summary["reached"]) == (4, 3)
    assert summary["reached_pct"] == 75.0
    assert summary["mean"] == pytest.approx(3.5)
    assert summary["median"] == pytest.approx(2.5)
    assert summary["p25"] == pytest.approx(2.25)
    assert summary["p75"] == pytest.approx(4.25)
    assert summary["p90"] == pytest.approx(5.3)


def test_time_summary_when_no_one_reached_it():
    act = activated()
    act = act.assign(days_to_activation=np.nan)
    row = onb.time_summary(act, column="days_to_activation").iloc[0]
    assert row["reached"] == 0 and np.isnan(row["median"]) and row["note"] == "no eligible customer reached it"


def test_time_to_first_value_by_hand():
    fv = onb.time_to_first_value(customers(), transactions=transactions(), product_events=events(), key_events=["wish"],
                                 within_days=7, observation_end=END).set_index("customer_id")
    # A: purchase 1.5 days (before the wish at 2.0); B: the refund at 0.5 days is not a purchase, the wish at 1.25 days is first;
    # C: wish at 2.5 (purchase on day 41 is outside); D: wish at 1.0 (purchase at 1.25); E: a wish already, but not eligible
    assert fv["source"].to_dict() == {"A": "purchase", "B": "wish", "C": "wish", "D": "wish", "E": "wish"}
    assert fv.loc["A", "days_to_first_value"] == pytest.approx(1.5)
    assert fv.loc["B", "days_to_first_value"] == pytest.approx(1.25)
    assert not fv.loc["E", "eligible"]
    summary = onb.time_summary(fv, column="days_to_first_value").iloc[0]
    # 1.0, 1.25, 1.5, 2.5 -> median 1.375, mean 1.5625
    assert summary["reached"] == 4 and summary["median"] == pytest.approx(1.375) and summary["mean"] == pytest.approx(1.5625)


def test_time_to_first_value_from_purchases_only():
    fv = onb.time_to_first_value(customers(), transactions=transactions(), within_days=7, observation_end=END).set_index("customer_id")
    # B's first purchase is at 4.0 days; C bought on day 41: no first value within 7 days
    assert fv.loc["B", "days_to_first_value"] == pytest.approx(4.0)
    assert fv.loc["C", "source"] == "none"


# ----------------------------------------------------------------------------- trials


def test_trial_conversion_by_hand():
    subs = subscriptions()
    subs0 = subs.copy()
    out = onb.trial_conversion(subs, observation_end=END).set_index("cohort")
    pd.testing.assert_frame_equal(subs, subs0)
    jan, feb, mar = out.loc[pd.Period("2024-01", "M")], out.loc[pd.Period("2024-02", "M")], out.loc[pd.Period("2024-03", "M")]
    # January: P pays the day its trial ends (converted, 14 days); Q pays 11 days after its trial ends (> 7: not converted)
    assert (jan["trials"], jan["decided"], jan["converted"], jan["conversion_rate"]) == (2, 2, 1, 50.0)
    assert jan["median_days_to_paid"] == 14.0
    # February: R's only paid plan started before its trial: not converted
    assert (feb["converted"], feb["conversion_rate"]) == (0, 0.0)
    assert feb["note"] == "no converted trial: days to paid undefined"
    # March: S ends after the observation end, U's grace period runs to 04-03: both pending, no rate
    assert (mar["trials"], mar["pending"], mar["decided"]) == (2, 2, 0)
    assert np.isnan(mar["conversion_rate"]) and mar["note"] == "every trial is still pending"


def test_trial_conversion_any_time_convention():
    out = onb.trial_conversion(subscriptions(), period="all", grace_days=None, observation_end=END).iloc[0]
    # decided: every trial that has ended (P, Q, R, U; S has not); converted P (14 days) and Q (25 days) -> 2 of 4
    assert (out["trials"], out["decided"], out["converted"]) == (5, 4, 2)
    assert out["conversion_rate"] == 50.0 and out["median_days_to_paid"] == 19.5


def test_a_running_trial_that_already_converted_is_decided():
    # no end dates at all: V upgraded to a paid plan during the trial, W has not (still running: pending)
    subs = pd.DataFrame({"customer_id": ["V", "V", "W"], "start_date": pd.to_datetime(["2024-03-01", "2024-03-05", "2024-03-02"]),
                         "plan": ["trial", "standard", "trial"]})
    out = onb.trial_conversion(subs, period="all", observation_end=END).iloc[0]
    assert (out["trials"], out["pending"], out["decided"], out["converted"], out["conversion_rate"]) == (2, 1, 1, 1, 100.0)
    assert out["median_days_to_paid"] == 4.0


def test_no_trials_gives_an_empty_table():
    subs = subscriptions()
    out = onb.trial_conversion(subs[subs["plan"] != "trial"], observation_end=END)
    assert out.empty and "conversion_rate" in out.columns


# ----------------------------------------------------------------------------- funnel


def test_ordered_funnel_by_hand():
    f = onb.funnel(customers(), events(), steps=["s1", "s2", "s3"], window_days=7, observation_end=END)
    # base: A, B, C, D (E's window open); s1: A, B, C; s2 after s1: A only (B did s2 before s1); s3 after s2: A
    assert f["customers"].to_dict() == {"signed up": 4, "s1": 3, "s2": 1, "s3": 1}
    assert f["pct_of_start"].tolist() == pytest.approx([100.0, 75.0, 25.0, 25.0])
    assert f["conversion_from_previous"].tolist() == pytest.approx([100.0, 75.0, 100 / 3, 100.0])
    assert f["drop_off"].tolist() == [0, 1, 2, 0]
    assert f["drop_off_pct"].tolist() == pytest.approx([0.0, 25.0, 200 / 3, 0.0])
    assert f.attrs["window_open"] == 1


def test_unordered_funnel_by_hand():
    f = onb.funnel(customers(), events(), steps=["s1", "s2", "s3"], window_days=7, observation_end=END, ordered=False)
    # any order: A and B did s1, s2 and s3 in the window; C only s1
    assert f["customers"].to_dict() == {"signed up": 4, "s1": 3, "s2": 2, "s3": 2}


def test_step_conversion_between_any_two_steps():
    f = onb.funnel(customers(), events(), steps=["s1", "s2", "s3"], window_days=7, observation_end=END)
    pairs = onb.step_conversion(f)
    assert len(pairs) == 6  # 4 steps: 4 x 3 / 2 pairs
    one = onb.step_conversion(f, from_step="s1", to_step="s3").iloc[0]
    assert (one["from_customers"], one["to_customers"]) == (3, 1) and one["conversion"] == pytest.approx(100 / 3)


def test_step_conversion_from_an_empty_step():
    f = pd.DataFrame({"customers": [5, 0, 0]}, index=pd.Index(["signed up", "a", "b"], name="step"))
    row = onb.step_conversion(f, from_step="a", to_step="b").iloc[0]
    assert np.isnan(row["conversion"]) and row["note"] == "no customer at the earlier step"


# ----------------------------------------------------------------------------- retention by activation


def test_retention_by_activation_by_hand():
    curve = onb.retention_by_activation(activated(), transactions(), months=2).set_index(["group", "month"])
    # months elapsed at 2024-04-01: A, B 2.99; C 2.69; D 1.84 (only month 1). E is not eligible.
    # activated, month 1: A, C, D; purchases in month 1: A (day 1.5), D (day 1.25) -> 2 of 3
    assert curve.loc[("activated", 1), ["customers", "retained"]].tolist() == [3, 2]
    # activated, month 2: A, C; A bought on day 45, C on day 41 -> 2 of 2 (D's day-44 order is in a month not yet elapsed)
    assert curve.loc[("activated", 2), ["customers", "retained"]].tolist() == [2, 2]
    # not activated (B): month 1 bought (day 4; the refund is not a purchase); month 2 only a refund -> 0
    assert curve.loc[("not activated", 1), "retention_rate"] == 100.0
    assert curve.loc[("not activated", 2), "retention_rate"] == 0.0
    # Wilson 95% for 2 of 2: centre (1 + z^2/4) / (1 + z^2/2) = 0.6712, half 0.3288 -> 34.24% to 100%
    assert curve.loc[("activated", 2), "ci_low"] == pytest.approx(34.238, abs=1e-3)
    assert curve.loc[("activated", 2), "ci_high"] == pytest.approx(100.0)


def test_activation_lift_newcombe_by_hand():
    curve = onb.retention_by_activation(activated(), transactions(), months=2)
    lift = onb.activation_lift(curve, month=2).iloc[0]
    # 100% - 0% = 100 points; Newcombe: low = 1 - sqrt((1 - 0.34238)^2 + (0.79346 - 0)^2) = -0.0306, high = 1
    assert lift["lift_points"] == pytest.approx(100.0)
    assert lift["ci_low"] == pytest.approx(-3.056, abs=1e-2)
    assert lift["ci_high"] == pytest.approx(100.0)


def test_activation_lift_needs_both_groups():
    curve = onb.retention_by_activation(activated(), transactions(), months=2)
    curve = curve.assign(customers=np.where(curve["group"] == "not activated", 0, curve["customers"]))
    lift = onb.activation_lift(curve, month=1).iloc[0]
    assert np.isnan(lift["lift_points"]) and lift["note"] == "no customer without activation whose month has elapsed"


# ----------------------------------------------------------------------------- errors, one per rule


def test_criteria_must_be_counts():
    with pytest.raises(onb.OnboardingError, match=r"criteria\['view'\] \(the minimum count\) must be a whole number, at least 1, got 0"):
        onb.activation(customers(), events(), criteria={"view": 0})


def test_criteria_must_not_be_empty():
    with pytest.raises(onb.OnboardingError, match=r"criteria must be a non-empty dict"):
        onb.activation(customers(), events(), criteria={})


def test_criteria_events_must_exist():
    with pytest.raises(onb.OnboardingError, match=r"criteria: event\(s\) \['veiw'\] never occur in product_events.event \(23 rows"):
        onb.activation(customers(), events(), criteria={"veiw": 2})


def test_window_must_be_whole_days():
    with pytest.raises(onb.OnboardingError, match=r"window_days must be a whole number, at least 1, got 2.5"):
        onb.activation(customers(), events(), window_days=2.5)


def test_customers_need_a_signup_date():
    c = customers()
    c.loc[1, "signup_date"] = pd.NaT
    with pytest.raises(SchemaError, match=r"customers.signup_date: 1 of 5 rows have no date \(e.g. customer_id 'B'\)"):
        onb.activation(c, events(), criteria=CRITERIA)


def test_product_events_columns():
    with pytest.raises(SchemaError, match=r"product_events: missing column\(s\) \['event'\]"):
        onb.activation(customers(), events().drop(columns="event"))


def test_grouping_column_must_exist():
    with pytest.raises(onb.OnboardingError, match=r"by: 'country' is neither 'cohort' nor a column"):
        onb.activation_rate(activated(), by="country")


def test_trials_need_a_plan_column():
    with pytest.raises(onb.OnboardingError, match=r"subscriptions has no plan column"):
        onb.trial_conversion(subscriptions().drop(columns="plan"))


def test_funnel_steps_must_not_repeat():
    with pytest.raises(onb.OnboardingError, match=r"steps must not repeat an event"):
        onb.funnel(customers(), events(), steps=["s1", "s1"])


def test_step_conversion_order():
    f = onb.funnel(customers(), events(), steps=["s1", "s2", "s3"], window_days=7, observation_end=END)
    with pytest.raises(onb.OnboardingError, match=r"to_step 's1' must come after from_step 's3'"):
        onb.step_conversion(f, from_step="s3", to_step="s1")


def test_first_value_needs_a_source():
    with pytest.raises(onb.OnboardingError, match=r"time_to_first_value needs transactions"):
        onb.time_to_first_value(customers())


def test_quantiles_between_0_and_1():
    with pytest.raises(onb.OnboardingError, match=r"quantiles must be numbers strictly between 0 and 1"):
        onb.time_summary(activated(), column="days_to_activation", quantiles=(0.5, 50))


def test_lift_month_must_be_in_the_curve():
    curve = onb.retention_by_activation(activated(), transactions(), months=2)
    with pytest.raises(onb.OnboardingError, match=r"month 5 is not in the retention curve \(months 1-2\)"):
        onb.activation_lift(curve, month=5)


# ----------------------------------------------------------------------------- plots


def test_plots_draw_and_label():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    act = activated()
    ax = onb.plot_activation_rate(onb.activation_rate(act, by=["cohort", "acquisition_channel"]))
    assert ax.get_ylabel() == "activated (% of eligible)"
    ax = onb.plot_time_distribution(act, column="days_to_activation", title="Time to activation")
    assert ax.get_legend().get_texts()[0].get_text() == "median 2.5 days"
    ax = onb.plot_funnel(onb.funnel(customers(), events(), steps=["s1", "s2", "s3"], window_days=7, observation_end=END))
    assert ax.texts[2].get_text() == "1 (25.0%), lost 66.7% of previous"
    ax = onb.plot_retention_by_activation(onb.retention_by_activation(act, transactions(), months=2))
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["activated", "not activated"]
    plt.close("all")
