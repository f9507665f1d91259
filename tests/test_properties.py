"""Numbers that stay honest (issue #7): properties of the metric functions, checked on generated inputs (hypothesis).

Rates stay within 0-100%, NPS within -100..100, intervals contain their point
estimate, cohort matrices that must be non-increasing are, CAC is never
infinite, RFM summaries are consistent, and no result depends on the order of
the input rows. Every test is deterministic (``derandomize=True``: the same
examples on every run) with a bounded number of examples and no example
database written into the working tree.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clm_helpers import acquisition, clv, datasets, engagement, onboarding, retention, survey
from clm_helpers.data import EMAIL_EVENTS, SURVEY_SCALES

PROPERTY = settings(derandomize=True, max_examples=60, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FEW = settings(PROPERTY, max_examples=20)  # properties that run the Ibis engine several times per example
TOL = 1e-9
START = pd.Timestamp("2024-01-01")


def shuffled(df: pd.DataFrame, seed: int) -> pd.DataFrame:
    return df.sample(frac=1.0, random_state=seed).reset_index(drop=True)


def within(values, low, high) -> bool:
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    return bool(np.isfinite(v).all() and (v >= low - TOL).all() and (v <= high + TOL).all())


# ----------------------------------------------------------------------------- surveys


def answers(survey_type: str):
    low, high = SURVEY_SCALES[survey_type]
    return st.lists(st.one_of(st.integers(low, high), st.integers(low, high), st.none()), max_size=80)


@PROPERTY
@given(scores=answers("nps"), level=st.sampled_from([0.8, 0.9, 0.95, 0.99]))
def test_nps_lies_in_minus_100_to_100_and_its_interval_contains_it(scores, level):
    r = survey.nps(scores, level=level)
    assert r.n + r.missing == len(scores)
    assert r.shares["promoters"] + r.shares["passives"] + r.shares["detractors"] == r.n
    if r.n == 0:
        assert np.isnan(r.value)
        return
    assert within([r.value, r.ci_low, r.ci_high], -100, 100)
    assert r.ci_low - TOL <= r.value <= r.ci_high + TOL


@PROPERTY
@given(scores=answers("csat"), level=st.sampled_from([0.8, 0.95, 0.99]))
def test_csat_top2_is_a_percentage_and_its_wilson_interval_contains_it(scores, level):
    r = survey.csat(scores, level=level)
    if r.n == 0:
        assert np.isnan(r.value)
        return
    assert within([r.value, r.ci_low, r.ci_high], 0, 100)
    assert r.ci_low - TOL <= r.value <= r.ci_high + TOL


@PROPERTY
@given(survey_type=st.sampled_from(["csat", "ces"]), data=st.data())
def test_mean_scores_stay_on_the_scale_and_their_interval_contains_them(survey_type, data):
    scores = data.draw(answers(survey_type))
    low, high = SURVEY_SCALES[survey_type]
    r = survey.ces(scores) if survey_type == "ces" else survey.csat(scores, method="mean")
    if r.n == 0:
        assert np.isnan(r.value)
        return
    assert low <= r.value <= high
    if r.n > 1:
        assert r.ci_low - TOL <= r.value <= r.ci_high + TOL


@PROPERTY
@given(scores=answers("nps"), seed=st.integers(0, 2**16))
def test_survey_results_do_not_depend_on_answer_order(scores, seed):
    order = np.random.default_rng(seed).permutation(len(scores))
    again = [scores[i] for i in order]
    csat_scores = [None if v is None else 1 + v % 5 for v in scores]
    csat_again = [csat_scores[i] for i in order]
    for a, b in ((survey.nps(scores), survey.nps(again)), (survey.csat(csat_scores), survey.csat(csat_again))):
        assert (a.n, a.missing, a.shares) == (b.n, b.missing, b.shares)
        np.testing.assert_allclose([a.value, a.ci_low, a.ci_high], [b.value, b.ci_low, b.ci_high], equal_nan=True)


# ----------------------------------------------------------------------------- e-mail


@st.composite
def email_events(draw, consistent: bool = True):
    """E-mail events as a platform exports them: every e-mail is sent; it bounces or is delivered, and then may be opened, clicked, ..."""
    n_campaigns = draw(st.integers(1, 3))
    n_customers = draw(st.integers(1, 6))
    rows = []
    for k in range(n_campaigns):
        day = START + pd.Timedelta(days=7 * k)
        for c in range(n_customers):
            if not draw(st.booleans()) and c > 0:
                continue  # not every customer gets every campaign
            email = [("sent", 0)]
            fate = draw(st.sampled_from(["delivered", "delivered", "bounce_hard", "bounce_soft"]))
            if fate != "delivered":
                email.append((fate, 0))
            else:
                if consistent or draw(st.booleans()):
                    email.append(("delivered", 0))
                for event in ("open", "click", "unsubscribe", "complaint"):
                    email += [(event, 1 + i) for i in range(draw(st.integers(0, 2)))]
            rows += [(f"K{k}", f"C{c}", event, day + pd.Timedelta(hours=h)) for event, h in email]
    df = pd.DataFrame(rows, columns=["campaign_id", "customer_id", "event", "timestamp"])
    return datasets.from_frames(email_events=df).email_events


RATES = [c for c in engagement.EMAIL_RATES]


@FEW
@given(events=email_events(), by=st.sampled_from(["campaign_id", None, "month"]), implied=st.booleans())
def test_email_rates_are_percentages_never_infinite(events, by, implied):
    m = engagement.email_metrics(events, by=by, implied_opens=implied)
    for rate in RATES:
        assert within(m[rate], 0, 100), (rate, m[rate].tolist())


@FEW
@given(events=email_events(), seed=st.integers(0, 2**16))
def test_email_metrics_do_not_depend_on_row_order(events, seed):
    a = engagement.email_metrics(events)
    b = engagement.email_metrics(shuffled(events, seed))
    pd.testing.assert_frame_equal(a, b)


# ----------------------------------------------------------------------------- product activity


@st.composite
def product_events(draw):
    n = draw(st.integers(1, 40))
    rows = [(f"C{draw(st.integers(0, 7))}", START + pd.Timedelta(days=draw(st.integers(0, 89)), hours=draw(st.integers(0, 23))),
             draw(st.sampled_from(["page_view", "click", "search"]))) for _ in range(n)]
    df = pd.DataFrame(rows, columns=["customer_id", "timestamp", "event"])
    return datasets.from_frames(product_events=df).product_events


@FEW
@given(events=product_events(), method=st.sampled_from(["calendar", "rolling"]))
def test_stickiness_and_adoption_are_percentages(events, method):
    s = engagement.stickiness(events, method=method)
    assert within(s["stickiness_pct"], 0, 100)
    a = engagement.feature_adoption(events)
    assert within(a["adoption_pct"], 0, 100)
    assert (a["users"] <= a["base"]).all()


@FEW
@given(events=product_events(), seed=st.integers(0, 2**16))
def test_activity_does_not_depend_on_row_order(events, seed):
    again = shuffled(events, seed)
    for freq in ("D", "M"):
        pd.testing.assert_frame_equal(engagement.active_customers(events, freq=freq), engagement.active_customers(again, freq=freq))
    pd.testing.assert_frame_equal(engagement.feature_adoption(events), engagement.feature_adoption(again))


@st.composite
def signups_and_events(draw):
    n = draw(st.integers(1, 8))
    customers = pd.DataFrame({"customer_id": [f"C{i}" for i in range(n)],
                              "signup_date": [START + pd.Timedelta(days=draw(st.integers(0, 59)), hours=draw(st.integers(0, 23)))
                                              for _ in range(n)]})
    rows = [(f"C{draw(st.integers(0, n - 1))}", START + pd.Timedelta(days=draw(st.integers(0, 89)), hours=draw(st.integers(0, 23))),
             draw(st.sampled_from(["view", "wish", "other"]))) for _ in range(draw(st.integers(1, 40)))]
    rows.append(("C0", START, "view"))  # every criterion's event occurs at least once (a missing one is an error)
    rows.append(("C0", START, "wish"))
    events = pd.DataFrame(rows, columns=["customer_id", "timestamp", "event"])
    return customers, events


@FEW
@given(tables=signups_and_events(), window=st.sampled_from([1, 7, 20]), days=st.tuples(st.integers(0, 89), st.integers(0, 89)),
       by=st.sampled_from([None, "cohort"]))
def test_activation_rate_as_of_equals_a_table_computed_to_that_day(tables, window, days, by):
    """One activation table to a later day gives an earlier day's rates exactly (the overview's two windows)."""
    customers, events = tables
    criteria = {"view": 2, "wish": 1}
    early, late = START + pd.Timedelta(days=min(days)), START + pd.Timedelta(days=max(days))
    whole = onboarding.activation(customers, events, criteria=criteria, window_days=window, observation_end=late)
    direct = onboarding.activation(customers, events, criteria=criteria, window_days=window, observation_end=early)
    pd.testing.assert_frame_equal(onboarding.activation_rate(whole, by=by, as_of=early), onboarding.activation_rate(direct, by=by))


# ----------------------------------------------------------------------------- transactions, cohorts, RFM


@st.composite
def transactions(draw, max_rows: int = 40):
    n = draw(st.integers(1, max_rows))
    rows = []
    for _ in range(n):
        day = draw(st.integers(0, 364))
        amount = draw(st.one_of(st.integers(1, 200), st.integers(1, 200), st.just(0), st.integers(-50, -1)))
        rows.append((f"C{draw(st.integers(0, 9))}", START + pd.Timedelta(days=day), float(amount)))
    df = pd.DataFrame(rows, columns=["customer_id", "timestamp", "amount"])
    return datasets.from_frames(transactions=df).transactions


END = "2024-12-31"


def _has_purchase(tx: pd.DataFrame) -> bool:
    return bool((tx["amount"] >= 0).any())


@FEW
@given(tx=transactions(), period=st.sampled_from(["M", "Q"]))
def test_classic_retention_is_a_percentage_and_starts_at_100(tx, period):
    if not _has_purchase(tx):
        return
    m = retention.cohort_matrix(tx, period=period, observation_end=END)
    assert within(m.to_numpy(), 0, 100)
    sizes = retention.cohort_matrix(tx, period=period, observation_end=END, normalize=False)[0]
    assert (m.loc[sizes > 0, 0] == 100).all()


@FEW
@given(tx=transactions(), period=st.sampled_from(["M", "Q"]))
def test_rolling_retention_never_increases_with_time_since_acquisition(tx, period):
    """Rolling retention counts customers who bought in period k or later: it can only fall as k grows."""
    if not _has_purchase(tx):
        return
    m = retention.cohort_matrix(tx, period=period, method="rolling", observation_end=END, normalize=False)
    values = m.to_numpy()
    for row in values:
        seen = row[~np.isnan(row)]
        assert (np.diff(seen) <= 0).all(), row
    classic = retention.cohort_matrix(tx, period=period, observation_end=END, normalize=False).to_numpy()
    assert (np.nan_to_num(values) >= np.nan_to_num(classic)).all()  # bought in k or later >= bought in k
    curve = retention.retention_curve(m)
    assert within(curve["retention_pct"], 0, 100)


@FEW
@given(tx=transactions(), seed=st.integers(0, 2**16), value=st.sampled_from(["customers", "revenue"]))
def test_cohort_matrix_does_not_depend_on_row_order(tx, seed, value):
    if not _has_purchase(tx):
        return
    a = retention.cohort_matrix(tx, value=value, observation_end=END)
    b = retention.cohort_matrix(shuffled(tx, seed), value=value, observation_end=END)
    pd.testing.assert_frame_equal(a, b)


@FEW
@given(tx=transactions(), unit=st.sampled_from(["D", "W"]))
def test_rfm_summary_is_consistent(tx, unit):
    s = clv.rfm_summary(tx, observation_end=END, time_unit=unit)
    assert (s["frequency"] >= 0).all() and (s["frequency"] == np.floor(s["frequency"])).all()
    assert ((s["recency"] >= 0) & (s["recency"] <= s["T"] + TOL)).all()
    assert (s["monetary_value"] >= 0).all() and np.isfinite(s.to_numpy()).all()
    assert ((s["frequency"] == 0) <= (s["recency"] == 0)).all()  # no repeat purchase: recency 0
    buyers = set(tx.loc[tx["amount"] >= 0, "customer_id"])
    assert set(s.index) == buyers  # refund-only customers are left out


@FEW
@given(tx=transactions(), seed=st.integers(0, 2**16))
def test_rfm_summary_does_not_depend_on_row_order(tx, seed):
    a = clv.rfm_summary(tx, observation_end=END)
    b = clv.rfm_summary(shuffled(tx, seed), observation_end=END)
    pd.testing.assert_frame_equal(a, b)
    assert a.attrs == b.attrs


@FEW
@given(tx=transactions(), window=st.sampled_from([30, 90, 180]))
def test_inactivity_churn_rates_are_percentages(tx, window):
    if not _has_purchase(tx):
        return
    out = retention.inactivity_churn(tx, observation_end=END, window_days=window)
    rate_columns = [c for c in out.columns if c.endswith("_pct") or c.endswith("rate")]
    assert rate_columns
    for c in rate_columns:
        assert within(out[c], 0, 100), c


@FEW
@given(tx=transactions(), window=st.sampled_from([10, 30, 90]), period=st.sampled_from(["W", "M", "Q"]),
       start_day=st.integers(0, 364))
def test_inactivity_churn_from_a_start_gives_the_same_periods(tx, window, period, start_day):
    """``observation_start`` reads only the purchases from ``window`` days before its period: the periods shown keep
    the figures of the whole table (the overview asks for the last two periods only)."""
    if not _has_purchase(tx):
        return
    full = retention.inactivity_churn(tx, observation_end=END, window_days=window, period=period)
    start = START + pd.Timedelta(days=start_day)
    shown = full[full.index.end_time >= start]
    if shown.empty:
        with pytest.raises(retention.RetentionError, match="observation_start"):
            retention.inactivity_churn(tx, observation_start=start, observation_end=END, window_days=window, period=period)
        return
    part = retention.inactivity_churn(tx, observation_start=start, observation_end=END, window_days=window, period=period)
    pd.testing.assert_frame_equal(part, shown)


# ----------------------------------------------------------------------------- acquisition


@st.composite
def acquisition_tables(draw):
    channels = ["search", "social", "tv"]
    n_customers = draw(st.integers(0, 15))
    customers = pd.DataFrame({
        "customer_id": [f"C{i}" for i in range(n_customers)],
        "signup_date": [START + pd.Timedelta(days=draw(st.integers(0, 89))) for _ in range(n_customers)],
        "acquisition_channel": [draw(st.sampled_from(channels + [None])) for _ in range(n_customers)],
    })
    n_spend = draw(st.integers(1, 10))
    spend = pd.DataFrame({
        "date": [START + pd.Timedelta(days=draw(st.integers(0, 89))) for _ in range(n_spend)],
        "channel": [draw(st.sampled_from(channels)) for _ in range(n_spend)],
        "spend": [float(draw(st.one_of(st.just(0), st.integers(1, 10_000)))) for _ in range(n_spend)],
    })
    ds = datasets.from_frames(customers=customers, marketing_spend=spend)
    return ds.customers, ds.marketing_spend


@FEW
@given(tables=acquisition_tables(), period=st.sampled_from(["M", "all"]))
def test_cac_is_never_infinite_or_negative(tables, period):
    customers, spend = tables
    out = acquisition.cac(customers, spend, period=period, observation_start="2024-01-01", observation_end="2024-03-31")
    cac = out["cac"].to_numpy(float)
    assert not np.isinf(cac).any()
    assert (cac[~np.isnan(cac)] >= 0).all()
    undefined = out["cac"].isna() & (out["spend"] > 0)
    assert (out.loc[undefined, "new_customers"] == 0).all()
    totals = acquisition.cac_totals(out)
    assert not np.isinf(totals.select_dtypes("number").to_numpy(float)).any()


@FEW
@given(tables=acquisition_tables(), seed=st.integers(0, 2**16))
def test_cac_does_not_depend_on_row_order(tables, seed):
    customers, spend = tables
    kw = dict(period="M", observation_start="2024-01-01", observation_end="2024-03-31")
    a = acquisition.cac(customers, spend, **kw)
    b = acquisition.cac(shuffled(customers, seed), shuffled(spend, seed + 1), **kw)
    pd.testing.assert_frame_equal(a, b)


# ----------------------------------------------------------------------------- loading


@st.composite
def timestamps_text(draw):
    n = draw(st.integers(1, 12))
    out = []
    for _ in range(n):
        t = START + pd.Timedelta(minutes=draw(st.integers(0, 60 * 24 * 30)))
        zone = draw(st.sampled_from(["", "Z", "+02:00", "-05:00", "+0530"]))
        out.append(t.strftime("%Y-%m-%d %H:%M:%S") + zone)
    return out


@PROPERTY
@given(stamps=timestamps_text(), seed=st.integers(0, 2**16))
def test_parsed_timestamps_do_not_depend_on_row_order(stamps, seed):
    """Each value is read on its own: naive as UTC, zoned converted to UTC, whatever the values around it."""
    df = pd.DataFrame({"customer_id": [f"C{i}" for i in range(len(stamps))], "timestamp": stamps, "amount": ["1"] * len(stamps)})
    a = datasets.from_frames(transactions=df).transactions.set_index("customer_id")["timestamp"]
    b = datasets.from_frames(transactions=shuffled(df, seed)).transactions.set_index("customer_id")["timestamp"]
    pd.testing.assert_series_equal(a.sort_index(), b.sort_index())
    for cid, text in zip(df["customer_id"], stamps):
        parsed = pd.Timestamp(text)
        assert a[cid] == (parsed.tz_convert("UTC").tz_localize(None) if parsed.tzinfo else parsed)


@pytest.mark.parametrize("event", EMAIL_EVENTS)
def test_every_contract_email_event_is_counted_somewhere(event):
    """The rates' numerators cover every event of the contract (no event silently ignored)."""
    counted = {e for events in engagement._COUNT_EVENTS.values() for e in ([events] if isinstance(events, str) else events)}
    assert event in counted
