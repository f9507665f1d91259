"""The synthetic company: deterministic, coherent across tables, and its ground truth recoverable in principle."""

import numpy as np
import pandas as pd
import pytest
from scipy import special

from clm_helpers.data import SCHEMAS, validate_table
from clm_helpers.synthetic import CHANNELS, COUNTRIES, simulate_company

N = 4_000


@pytest.fixture(scope="module")
def company():
    return simulate_company(N, seed=11)


def test_same_seed_same_tables_other_seed_other_tables(company):
    tables, truth = company
    again, truth_again = simulate_company(N, seed=11)
    for name in tables:
        pd.testing.assert_frame_equal(tables[name], again[name], obj=name)
    assert truth == truth_again
    other, _ = simulate_company(N, seed=12)
    assert not tables["transactions"]["amount"].equals(other["transactions"]["amount"])


def test_every_table_meets_its_contract_exactly(company):
    tables, _ = company
    for name, df in tables.items():
        contract = [c.name for c in SCHEMAS[name].columns]
        assert sorted(df.columns) == sorted(contract), name
        clean, notes = validate_table(name, df)
        assert len(clean) == len(df), name
        for col in SCHEMAS[name].columns:
            if col.kind in ("timestamp", "date"):
                assert df[col.name].dtype == "datetime64[us]", (name, col.name)


def test_tables_are_coherent(company):
    tables, truth = company
    customers = tables["customers"].set_index("customer_id")
    end = pd.Timestamp(truth["end"]) + pd.Timedelta(days=1)
    for name in ("transactions", "email_events", "product_events", "surveys", "subscriptions"):
        df = tables[name]
        time_col = SCHEMAS[name].time_column
        assert df["customer_id"].isin(customers.index).all(), name
        assert (df[time_col].dt.normalize() >= df["customer_id"].map(customers["signup_date"])).all(), name
        assert (df[time_col] < end).all(), name
    assert tables["transactions"]["transaction_id"].is_unique
    assert tables["surveys"]["response_id"].is_unique
    subs = tables["subscriptions"]
    assert (subs["end_date"].isna() | (subs["end_date"] >= subs["start_date"])).all()


def test_email_events_follow_the_order_of_a_send(company):
    tables, _ = company
    ev = tables["email_events"]
    per_send = ev.assign(one=1).pivot_table(index=["campaign_id", "customer_id"], columns="event", values="one", aggfunc="sum", fill_value=0)
    assert (per_send["sent"] == 1).all()
    outcome = per_send["delivered"] + per_send["bounce_hard"] + per_send["bounce_soft"]
    assert (outcome == 1).all()  # every send is delivered or bounced, once
    assert (per_send["open"] <= per_send["delivered"]).all()
    assert (per_send["click"] <= per_send["open"]).all()
    assert (per_send.get("unsubscribe", 0) <= per_send["delivered"]).all()


def test_channel_shares_match_what_was_asked(company):
    tables, _ = company
    shares = tables["customers"]["acquisition_channel"].value_counts(normalize=True)
    for channel, cfg in CHANNELS.items():
        se = np.sqrt(cfg["share"] * (1 - cfg["share"]) / N)
        assert abs(shares[channel] - cfg["share"]) < 4 * se, channel


def test_mean_order_value_per_channel_matches_gamma_gamma(company):
    tables, _ = company
    tx = tables["transactions"].merge(tables["customers"][["customer_id", "acquisition_channel"]], on="customer_id")
    orders = tx[tx["amount"] > 0]
    for channel, cfg in CHANNELS.items():
        spend = orders.loc[orders["acquisition_channel"] == channel]
        expected = cfg["p"] * cfg["gamma"] / (cfg["q"] - 1)  # E[Z] = p gamma / (q - 1)
        per_customer = spend.groupby("customer_id")["amount"].mean()
        # spend varies mostly between customers (nu), so the standard error is the one of per-customer means
        se = per_customer.std() / np.sqrt(len(per_customer))
        assert abs(per_customer.mean() - expected) < 4 * se + 0.02 * expected, (channel, per_customer.mean(), expected)


def bgnbd_expected_repeats(t, r, alpha, a, b):
    """E[X(t)] of the BG/NBD model, Fader, Hardie & Lee (2005) eq. 9."""
    z = t / (alpha + t)
    return (a + b - 1) / (a - 1) * (1 - ((alpha / (alpha + t)) ** r) * special.hyp2f1(r, b, a + b - 1, z))


def test_repeat_purchases_match_the_bgnbd_expectation(company):
    tables, truth = company
    tx = tables["transactions"][tables["transactions"]["amount"] >= 0]
    tx = tx.merge(tables["customers"][["customer_id", "acquisition_channel"]], on="customer_id")
    end = pd.Timestamp(truth["end"]) + pd.Timedelta(days=1)
    first = tx.groupby("customer_id")["timestamp"].min()
    # customers who bought in the first year: at least two years observed after the first order
    early = first[first < pd.Timestamp(truth["start"]) + pd.Timedelta(days=365)]
    for channel, cfg in CHANNELS.items():
        ids = early.index[early.index.isin(tx.loc[tx["acquisition_channel"] == channel, "customer_id"])]
        t = ((end - early[ids]).dt.total_seconds() / 86_400).to_numpy()
        repeats = tx[tx["customer_id"].isin(ids)].groupby("customer_id").size().reindex(ids).to_numpy() - 1
        expected = bgnbd_expected_repeats(t, cfg["r"], cfg["alpha"], cfg["a"], cfg["b"]).mean()
        se = repeats.std() / np.sqrt(len(repeats))
        assert abs(repeats.mean() - expected) < 4 * se, (channel, repeats.mean(), expected)


def test_membership_churn_matches_the_shifted_beta_geometric_mean(company):
    tables, truth = company
    subs = tables["subscriptions"]
    paid = subs[subs["plan"] != "trial"]
    for plan, cfg in truth["plans"].items():
        s = paid[paid["plan"] == plan]
        # first-month churn of subscriptions that started at least a month before the end
        old = s[s["start_date"] < pd.Timestamp(truth["end"]) - pd.DateOffset(months=1)]
        churned_first_month = (old["end_date"] <= old["start_date"] + pd.DateOffset(months=1)).mean()
        mean = cfg["alpha"] / (cfg["alpha"] + cfg["beta"])  # P(churn at the first renewal) = E[theta]
        se = np.sqrt(mean * (1 - mean) / len(old))
        assert abs(churned_first_month - mean) < 4 * se, (plan, churned_first_month, mean)


def test_built_in_relationships_hold(company):
    tables, truth = company
    tx = tables["transactions"][tables["transactions"]["amount"] >= 0]
    orders = tx.groupby("customer_id").size()
    customers = tables["customers"].set_index("customer_id")
    # detractors buy less often than promoters (their dropout probability is higher)
    nps = tables["surveys"][(tables["surveys"]["survey"] == "nps") & tables["surveys"]["score"].notna()]
    latest = nps.sort_values("timestamp").groupby("customer_id")["score"].first()
    promoters, detractors = latest.index[latest >= 9], latest.index[latest <= 6]
    assert orders.reindex(promoters).mean() > 1.3 * orders.reindex(detractors).mean()
    # countries differ in NPS: DE below BR
    by_country = latest.groupby(customers["country"].reindex(latest.index)).apply(lambda s: (s >= 9).mean() - (s <= 6).mean())
    assert by_country["BR"] > by_country["DE"] + 0.1
    # activation (3+ page views, 5+ clicks, 1 wishlist in 14 days) predicts repeat buying
    pe = tables["product_events"].merge(customers["signup_date"], left_on="customer_id", right_index=True)
    early = pe[pe["timestamp"] < pe["signup_date"] + pd.Timedelta(days=14)]
    counts = early.pivot_table(index="customer_id", columns="event", values="timestamp", aggfunc="size", fill_value=0)
    activated = (counts["page_view"] >= 3) & (counts["click"] >= 5) & (counts["create_wishlist"] >= 1)
    repeat = (orders.reindex(customers.index).fillna(0) >= 2)
    assert repeat[activated[activated].index].mean() > repeat[activated[~activated].index].mean() + 0.1
    # e-mail fatigue: the more e-mails a customer got in the previous 30 days, the likelier a delivery ends in an unsubscribe
    ev = tables["email_events"]
    sends = ev[ev["event"] == "sent"].sort_values(["customer_id", "timestamp"])
    times = sends["timestamp"].to_numpy()
    starts = np.r_[0, np.flatnonzero(sends["customer_id"].to_numpy()[1:] != sends["customer_id"].to_numpy()[:-1]) + 1]
    recent = np.empty(len(sends), dtype=int)
    for lo, hi in zip(starts, np.r_[starts[1:], len(sends)]):
        t = times[lo:hi]
        recent[lo:hi] = np.arange(hi - lo) - np.searchsorted(t, t - np.timedelta64(30, "D"))
    unsubscribed = sends.set_index(["campaign_id", "customer_id"]).index.isin(
        ev[ev["event"] == "unsubscribe"].set_index(["campaign_id", "customer_id"]).index)
    assert unsubscribed[recent >= 2].mean() > 2 * unsubscribed[recent == 0].mean()
    # paid_social customers are worth less than referral customers
    value = tx.merge(customers["acquisition_channel"], left_on="customer_id", right_index=True).groupby("acquisition_channel")["amount"].sum()
    per_customer = value / customers["acquisition_channel"].value_counts()
    assert per_customer["referral"] > 1.5 * per_customer["paid_social"]


def test_spend_gives_the_target_cac_per_channel(company):
    tables, _ = company
    spend = tables["marketing_spend"].groupby("channel")["spend"].sum()
    new = tables["customers"]["acquisition_channel"].value_counts()
    for channel in ("paid_search", "paid_social", "affiliate", "referral"):
        cac = spend[channel] / new[channel]
        assert abs(cac / CHANNELS[channel]["cac"] - 1) < 0.15, (channel, cac)
    assert "organic" not in spend.index


def test_refunds_and_zero_amounts_are_present_and_counted(company):
    tables, truth = company
    tx = tables["transactions"]
    assert (tx["amount"] < 0).sum() == truth["realised"]["refunds"] > 0
    assert (tx["amount"] == 0).sum() == truth["realised"]["zero_amount_orders"]


def test_one_customer_and_bad_size():
    tables, _ = simulate_company(1, seed=3)
    assert len(tables["customers"]) == 1
    with pytest.raises(ValueError, match="n_customers must be at least 1, got 0"):
        simulate_company(0)
