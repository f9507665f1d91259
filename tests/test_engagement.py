"""E-mail metrics, flags and fatigue, and product activity, on hand-made events with answers worked out by hand."""

import numpy as np
import pandas as pd
import pytest

from clm_helpers import data, engagement
from clm_helpers.data import SchemaError
from clm_helpers.engagement import EngagementError


def events(rows, columns=("campaign_id", "customer_id", "event", "timestamp")):
    df = pd.DataFrame(rows, columns=list(columns))
    df["timestamp"] = pd.Series([pd.Timestamp(t) for t in df["timestamp"]], dtype="datetime64[us]")
    return df


# E1, sent 2024-01-05 to A, B, C, D, E:
#   A delivered, opened twice, clicked twice; B delivered, opened (on 1 February: still January's campaign);
#   C hard bounce; D soft bounce; E delivered, clicked without a recorded open (implied open), unsubscribed.
# E2, sent 2024-01-20 to A and B: both hard bounces -> zero deliveries.
# February: no campaign (an empty month).
# E3, sent 2024-03-02 to A and B: both delivered; A opened and complained.
EMAIL = events([
    ("E1", "A", "sent", "2024-01-05 09:00"), ("E1", "A", "delivered", "2024-01-05 09:01"),
    ("E1", "A", "open", "2024-01-05 10:00"), ("E1", "A", "open", "2024-01-06 10:00"),
    ("E1", "A", "click", "2024-01-05 10:01"), ("E1", "A", "click", "2024-01-06 10:01"),
    ("E1", "B", "sent", "2024-01-05 09:00"), ("E1", "B", "delivered", "2024-01-05 09:01"), ("E1", "B", "open", "2024-02-01 08:00"),
    ("E1", "C", "sent", "2024-01-05 09:00"), ("E1", "C", "bounce_hard", "2024-01-05 09:01"),
    ("E1", "D", "sent", "2024-01-05 09:00"), ("E1", "D", "bounce_soft", "2024-01-05 09:01"),
    ("E1", "E", "sent", "2024-01-05 09:00"), ("E1", "E", "delivered", "2024-01-05 09:01"),
    ("E1", "E", "click", "2024-01-05 12:00"), ("E1", "E", "unsubscribe", "2024-01-05 12:01"),
    ("E2", "A", "sent", "2024-01-20 09:00"), ("E2", "A", "bounce_hard", "2024-01-20 09:01"),
    ("E2", "B", "sent", "2024-01-20 09:00"), ("E2", "B", "bounce_hard", "2024-01-20 09:01"),
    ("E3", "A", "sent", "2024-03-02 09:00"), ("E3", "A", "delivered", "2024-03-02 09:01"),
    ("E3", "A", "open", "2024-03-02 11:00"), ("E3", "A", "complaint", "2024-03-02 11:05"),
    ("E3", "B", "sent", "2024-03-02 09:00"), ("E3", "B", "delivered", "2024-03-02 09:01"),
])
RATES = ["delivery_rate", "hard_bounce_rate", "soft_bounce_rate", "bounce_rate", "open_rate", "click_through_rate",
         "click_to_open_rate", "unsubscribe_rate", "complaint_rate"]


def test_email_metrics_per_campaign_unique_by_hand():
    m = engagement.email_metrics(EMAIL)
    assert list(m.index) == ["E1", "E2", "E3"]
    # E1: 5 sent; delivered A, B, E = 3; hard C, soft D; openers A, B and E (click implies open) = 3;
    # clickers A, E = 2; unsubscribe E = 1; no complaint. A's two opens and two clicks count once.
    e1 = m.loc["E1"]
    assert e1[["sent", "delivered", "hard_bounces", "soft_bounces", "opens", "clicks", "unsubscribes", "complaints"]].tolist() == [5, 3, 1, 1, 3, 2, 1, 0]
    expected = {"delivery_rate": 100 * 3 / 5, "hard_bounce_rate": 100 * 1 / 5, "soft_bounce_rate": 100 * 1 / 5, "bounce_rate": 100 * 2 / 5,
                "open_rate": 100 * 3 / 3, "click_through_rate": 100 * 2 / 3, "click_to_open_rate": 100 * 2 / 3,
                "unsubscribe_rate": 100 * 1 / 3, "complaint_rate": 0.0}
    assert e1[RATES].astype(float).to_dict() == pytest.approx(expected)
    assert e1["note"] == ""
    # E3: 2 sent, 2 delivered, opener A, no clicker, complaint A: open 1/2, CTR 0/2, CTOR 0/1, complaint 1/2
    e3 = m.loc["E3"]
    assert (e3["open_rate"], e3["click_through_rate"], e3["click_to_open_rate"], e3["complaint_rate"]) == pytest.approx((50.0, 0.0, 0.0, 50.0))


def test_campaign_with_zero_deliveries_has_missing_rates_not_inf():
    e2 = engagement.email_metrics(EMAIL).loc["E2"]
    # 2 sent, 2 hard bounces, 0 delivered: rates over sent exist (0% delivered, 100% hard), the rest are undefined
    assert e2["delivery_rate"] == 0.0 and e2["hard_bounce_rate"] == 100.0
    for rate in ("open_rate", "click_through_rate", "click_to_open_rate", "unsubscribe_rate", "complaint_rate"):
        assert np.isnan(e2[rate]), rate
    assert "no e-mails delivered" in e2["note"]
    assert not np.isinf(engagement.email_metrics(EMAIL)[RATES].to_numpy(float)).any()


def test_recorded_opens_only_and_total_counts():
    m = engagement.email_metrics(EMAIL, implied_opens=False).loc["E1"]
    # openers A, B only (E's click is not an open): open rate 2/3; click-to-open = opened e-mails clicked (A) 1 / openers 2 = 50
    # (E's click counts in neither: over clickers A, E the rate could pass 100%)
    assert (m["opens"], m["open_rate"], m["click_to_open_rate"]) == pytest.approx((2, 200 / 3, 50.0))
    t = engagement.email_metrics(EMAIL, unique=False).loc["E1"]
    # every row: opens = A 2 + B 1 + E's implied 1 = 4; clicks = A 2 + E 1 = 3; click-to-open stays unique: 2 / 3
    assert (t["opens"], t["clicks"], t["openers"], t["clickers"]) == (4, 3, 3, 2)
    assert (t["open_rate"], t["click_through_rate"], t["click_to_open_rate"]) == pytest.approx((400 / 3, 100.0, 200 / 3))


def test_email_metrics_by_month_keeps_the_empty_month():
    m = engagement.email_metrics(EMAIL, by="month")
    assert [str(p) for p in m.index] == ["2024-01", "2024-02", "2024-03"]
    # January = E1 + E2 (B's open on 1 February belongs to E1, sent in January): sent 7, delivered 3, hard 3
    jan = m.loc[pd.Period("2024-01", "M")]
    assert (jan["sent"], jan["delivered"], jan["hard_bounces"], jan["opens"]) == (7, 3, 3, 3)
    assert (jan["delivery_rate"], jan["hard_bounce_rate"], jan["open_rate"]) == pytest.approx((300 / 7, 300 / 7, 100.0))
    feb = m.loc[pd.Period("2024-02", "M")]
    assert feb["sent"] == 0 and np.isnan(feb["delivery_rate"]) and feb["note"] == "no e-mails sent: every rate is undefined"


def test_email_metrics_overall_and_by_list():
    total = engagement.email_metrics(EMAIL, by=None).loc["all"]
    # 9 sent, 5 delivered, openers 4 (E1: A, B, E; E3: A), clickers 2, 1 unsubscribe, 1 complaint
    assert (total["delivery_rate"], total["open_rate"], total["click_through_rate"], total["click_to_open_rate"]) == pytest.approx(
        (500 / 9, 80.0, 40.0, 50.0))
    assert (total["unsubscribe_rate"], total["complaint_rate"]) == pytest.approx((20.0, 20.0))
    both = engagement.email_metrics(EMAIL, by=["month", "campaign_id"])
    assert both.index.names == ["month", "campaign_id"] and len(both) == 3


def test_email_metrics_does_not_modify_its_input():
    before = EMAIL.copy()
    engagement.email_metrics(EMAIL, by="month", unique=False)
    pd.testing.assert_frame_equal(EMAIL, before)


def test_email_errors_name_the_problem():
    with pytest.raises(SchemaError, match=r"email_events: missing column\(s\) \['event'\]"):
        engagement.email_metrics(EMAIL.drop(columns="event"))
    typo = EMAIL.copy()
    typo.loc[2, "event"] = "opened"
    with pytest.raises(SchemaError, match=r"email_events.event: 1 of 27 rows have a value outside .*'opened' \(1\)"):
        engagement.email_metrics(typo)
    no_send = EMAIL[~((EMAIL["campaign_id"] == "E3") & (EMAIL["event"] == "sent"))]
    with pytest.raises(EngagementError, match=r"2 of 9 e-mails .* have events but no 'sent' event \(e.g. campaign_id 'E3', customer_id 'A'"):
        engagement.email_metrics(no_send)
    with pytest.raises(EngagementError, match=r"by: \['country'\] is neither 'month' nor a column"):
        engagement.email_metrics(EMAIL, by="country")


def test_the_send_check_runs_once_per_arrow_table_and_again_after_any_change(monkeypatch):
    """On Arrow-backed text (what datasets.load gives) a table that passed the send check is not checked again; an edited,
    filtered or concatenated frame has new Arrow arrays and is checked; object columns are checked every time."""
    expected = engagement.email_metrics(EMAIL)
    runs = []
    real = engagement._run_send_check
    monkeypatch.setattr(engagement, "_run_send_check", lambda t: runs.append(1) or real(t))
    arrow = EMAIL.astype({c: data.TEXT for c in ("campaign_id", "customer_id", "event")})
    pd.testing.assert_frame_equal(engagement.email_metrics(arrow), expected)
    engagement.email_metrics(arrow, by="month")
    engagement.email_fatigue(arrow)
    assert len(runs) == 1
    engagement.email_metrics(EMAIL)
    engagement.email_metrics(EMAIL)
    assert len(runs) == 3, "object columns: checked each time"
    edited = arrow.copy()
    edited.loc[2, "event"] = "opened"
    with pytest.raises(SchemaError, match="'opened'"):
        engagement.email_metrics(edited)
    no_send = arrow[~((arrow["campaign_id"] == "E3") & (arrow["event"] == "sent"))]
    with pytest.raises(EngagementError, match="have events but no 'sent' event"):
        engagement.email_metrics(no_send)
    with pytest.raises(EngagementError, match="have events but no 'sent' event"):
        orphan = arrow.iloc[[2]].assign(campaign_id=pd.array(["E9"], dtype=data.TEXT))  # an open of a campaign never sent
        engagement.email_metrics(pd.concat([arrow, orphan], ignore_index=True))
    assert len(runs) == 6


def test_flag_campaigns_by_hand():
    m = engagement.email_metrics(EMAIL)
    flags = engagement.flag_campaigns(m, min_sent=2)
    # E1: hard 20% > 2%, unsubscribes 33.33% > 0.5%; E2: hard 100% and nothing delivered; E3: complaints 50% > 0.3%
    assert flags["status"].tolist() == ["flagged", "flagged", "flagged"]
    assert flags.loc["E1", "reasons"] == "hard_bounce_rate 20.00% > 2%; unsubscribe_rate 33.33% > 0.5%"
    assert flags.loc["E2", "reasons"].startswith("hard_bounce_rate 100.00% > 2%; unsubscribe_rate undefined (nothing delivered)")
    assert flags.loc["E3", "reasons"] == "complaint_rate 50.00% > 0.3%"
    loose = engagement.flag_campaigns(m, limits={"complaint_rate": 60.0}, min_sent=3)
    # E1 complaints 0% <= 60%: ok; E2 and E3 have 2 e-mails sent < 3: too small to judge
    assert loose["status"].tolist() == ["ok", "too small", "too small"]
    assert loose.loc["E2", "reasons"] == "fewer than 3 e-mails sent"


def test_flag_campaigns_rejects_bad_limits():
    m = engagement.email_metrics(EMAIL)
    with pytest.raises(EngagementError, match=r"limits: \['spam_rate'\] are not e-mail rates"):
        engagement.flag_campaigns(m, limits={"spam_rate": 1.0})
    with pytest.raises(EngagementError, match=r"limits must be percentages between 0 and 100, got \{'open_rate': 150\}"):
        engagement.flag_campaigns(m, limits={"open_rate": 150})


# Fatigue: days of each send (09:00) and outcome; "recent" = other sends to the customer in the 30 days before (inclusive)
#   X: day 0 (0 recent), day 10 (1), day 20 (2, unsubscribed), day 45 (1: day 20; day 10 is 35 days before)
#   Y: day 0 (0), day 30 (1: exactly 30 days before counts; unsubscribed)
#   Z: day 5, hard bounce: not delivered, left out
def fatigue_events():
    start = pd.Timestamp("2024-01-01 09:00")
    rows = []
    for i, (cust, day, outcome) in enumerate([("X", 0, ""), ("X", 10, ""), ("X", 20, "unsubscribe"), ("X", 45, ""),
                                               ("Y", 0, ""), ("Y", 30, "unsubscribe"), ("Z", 5, "bounce_hard")]):
        when = start + pd.Timedelta(days=day)
        camp = f"C{day:02d}"
        rows.append((camp, cust, "sent", when))
        rows.append((camp, cust, "bounce_hard" if outcome == "bounce_hard" else "delivered", when + pd.Timedelta(minutes=1)))
        if outcome == "unsubscribe":
            rows.append((camp, cust, "unsubscribe", when + pd.Timedelta(hours=2)))
    return events(rows)


def test_email_fatigue_by_hand():
    r = engagement.email_fatigue(fatigue_events())
    t = r.table
    # 0 recent: X d0, Y d0 -> 0 of 2; 1 recent: X d10, X d45, Y d30 -> 1 of 3; 2 recent: X d20 -> 1 of 1
    assert t.index.tolist() == ["0", "1", "2"]
    assert t["delivered"].tolist() == [2, 3, 1] and t["unsubscribes"].tolist() == [0, 1, 1]
    assert t["unsubscribe_rate"].tolist() == pytest.approx([0.0, 100 / 3, 100.0])
    # least squares on x = 0,0,1,1,1,2 and y = 0,0,0,0,1,1: xbar = 5/6, Sxx = (2*25 + 3*1 + 49)/36 = 102/36,
    # Sxy = (1 - 5/6) + (2 - 5/6) = 8/6 -> slope = 48/102 per e-mail = 47.06 points
    assert r.slope == pytest.approx(100 * 48 / 102)
    assert r.ci_low < r.slope < r.ci_high and r.n == 6
    pooled = engagement.email_fatigue(fatigue_events(), max_recent=1).table
    assert pooled.index.tolist() == ["0", "1+"] and pooled.loc["1+", "unsubscribe_rate"] == pytest.approx(50.0)  # 2 of 4


def test_email_fatigue_slope_is_missing_when_x_never_varies():
    one = fatigue_events()
    one = one[one["campaign_id"] == "C00"]  # every delivered e-mail has 0 recent e-mails
    r = engagement.email_fatigue(one)
    assert np.isnan(r.slope) and r.table["delivered"].tolist() == [2]
    with pytest.raises(EngagementError, match=r"window_days must be at least 1, got 0"):
        engagement.email_fatigue(one, window_days=0)


# Product events (2024; 1 January is a Monday). Observation end 2024-02-29 (a Thursday).
#   P: 1 Jan page_view and click, 3 Jan search, 10 Feb page_view
#   Q: 2 Jan page_view, 8 Jan create_wishlist
#   R: 28 Feb click (in the incomplete last ISO week)
PRODUCT = pd.DataFrame({
    "customer_id": ["P", "P", "P", "P", "Q", "Q", "R"],
    "timestamp": pd.Series([pd.Timestamp(t) for t in ["2024-01-01 08:00", "2024-01-01 08:05", "2024-01-03 12:00", "2024-02-10 09:00",
                                                      "2024-01-02 20:00", "2024-01-08 07:00", "2024-02-28 18:00"]], dtype="datetime64[us]"),
    "event": ["page_view", "click", "search", "page_view", "page_view", "create_wishlist", "click"],
})
END = "2024-02-29"


def test_active_customers_per_day_week_month():
    daily = engagement.active_customers(PRODUCT, freq="D", observation_end=END)
    assert len(daily) == 60  # 31 January days + 29 February days, empty days included
    assert daily.loc[pd.Period("2024-01-01", "D"), "active_customers"] == 1  # P twice: one customer, two events
    assert daily.loc[pd.Period("2024-01-01", "D"), "events"] == 2
    assert daily.loc[pd.Period("2024-01-04", "D"), "active_customers"] == 0  # an empty day
    weekly = engagement.active_customers(PRODUCT, freq="W", observation_end=END)
    # complete weeks 1 Jan .. 25 Feb (the week of 29 Feb ends on 3 March): 8 weeks; R's click falls outside
    assert weekly["active_customers"].tolist() == [2, 1, 0, 0, 0, 1, 0, 0]
    monthly = engagement.active_customers(PRODUCT, freq="M", observation_end=END)
    assert monthly["active_customers"].tolist() == [2, 2]  # January P, Q; February P, R


def test_stickiness_calendar_and_rolling_by_hand():
    s = engagement.stickiness(PRODUCT, observation_end=END)
    # January: active days 1, 2, 3, 8 Jan with 1 customer each: mean DAU 4/31; MAU 2 -> 100 * (4/31) / 2
    # February: 10 and 28 Feb: mean DAU 2/29; MAU 2 (P, R)
    assert s["stickiness_pct"].tolist() == pytest.approx([100 * 4 / 31 / 2, 100 * 2 / 29 / 2])
    r = engagement.stickiness(PRODUCT, method="rolling", observation_end=END)
    # January, trailing 30 days: 1 Jan only P (1 active, DAU 1 -> 1); 2, 3, 8 Jan: DAU 1 of 2 -> 0.5; other 27 days DAU 0
    # -> mean ratio (1 + 3 * 0.5) / 31; mean trailing actives (1 + 30 * 2) / 31
    jan = r.loc[pd.Period("2024-01", "M")]
    assert (jan["stickiness_pct"], jan["mau"]) == pytest.approx((100 * 2.5 / 31, 61 / 31))
    with pytest.raises(EngagementError, match=r"method must be 'calendar' .* or 'rolling'"):
        engagement.stickiness(PRODUCT, method="weekly")


def test_stickiness_of_a_month_without_activity_is_missing_with_a_reason():
    quiet = PRODUCT[PRODUCT["timestamp"] < "2024-02-01"]
    s = engagement.stickiness(quiet, observation_end=END)
    feb = s.loc[pd.Period("2024-02", "M")]
    assert np.isnan(feb["stickiness_pct"]) and feb["note"] == "no active customers in the month"


def test_feature_adoption_by_hand():
    a = engagement.feature_adoption(PRODUCT, observation_start="2024-01-01", observation_end="2024-01-31")
    # January base: P, Q (2). page_view P, Q -> 2 (100%); click, search: P -> 50%; create_wishlist: Q -> 50%
    assert a.loc["page_view", ["users", "base", "adoption_pct"]].tolist() == [2, 2, 100.0]
    assert a.loc[["click", "search", "create_wishlist"], "adoption_pct"].tolist() == [50.0, 50.0, 50.0]
    assert a.index[0] == "page_view"
    customers = pd.DataFrame({"customer_id": ["P", "Q", "R", "S"],
                              "signup_date": pd.to_datetime(["2023-12-01", "2024-01-02", "2024-01-20", "2024-02-15"])})
    b = engagement.feature_adoption(PRODUCT, observation_start="2024-01-01", observation_end="2024-01-31", customers=customers,
                                    events=["page_view", "view_offer"])
    # base: customers signed up by 31 January = P, Q, R (3); view_offer used by nobody -> 0 users, uses per user undefined
    assert b.loc["page_view", "adoption_pct"] == pytest.approx(200 / 3)
    assert b.loc["view_offer", "users"] == 0 and np.isnan(b.loc["view_offer", "uses_per_user"])


def test_product_errors():
    with pytest.raises(EngagementError, match=r"freq must be one of \['D', 'W', 'M'\]"):
        engagement.active_customers(PRODUCT, freq="H")
    with pytest.raises(EngagementError, match=r"observation_start 2024-03-01 is after observation_end 2024-02-29"):
        engagement.active_customers(PRODUCT, observation_start="2024-03-01", observation_end=END)
    with pytest.raises(SchemaError, match=r"product_events: missing column\(s\) \['event'\]"):
        engagement.feature_adoption(PRODUCT.drop(columns="event"))


def test_email_window_keeps_whole_campaigns():
    m = engagement.email_metrics(EMAIL, observation_start="2024-01-10", observation_end="2024-01-31")
    # E1 was first sent on 5 January (before the start): left out whole; E3 after the end; E2 remains
    assert list(m.index) == ["E2"]
    early = engagement.email_metrics(EMAIL, observation_end="2024-01-31").loc["E1"]
    # B's open on 1 February is after the end: E1 has openers A and E only
    assert early["opens"] == 2
    r = engagement.email_fatigue(fatigue_events(), observation_start="2024-01-15")
    # measured: X d20 (2 recent: d0 and d10 still count), Y d30 (1), X d45 (1)
    assert r.table["delivered"].tolist() == [2, 1] and r.table.index.tolist() == ["1", "2"]
