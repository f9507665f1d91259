"""A synthetic company, generated deterministically from a seed, with known ground truth.

An online retailer with an app, e-mail marketing, CX surveys and a paid
membership, observed from ``start`` to ``end`` (three years by default). Every
table follows the data contracts of ``clm_helpers.data``; the generating
parameters are returned as ``truth`` (written to ``ground_truth.json`` next
to the data), so tests and notebooks can check that the models recover them.

Generating processes, in the order they are drawn:

1. **Sign-ups.** Sign-up days spread over the window with linear growth
   (the last month gets about three times the first) and a fourth-quarter
   peak (+30% in November and December). Each customer gets an acquisition
   channel (``CHANNELS[...]["share"]``), a country (``COUNTRIES``, which sets
   the region), an age band and an e-mail "segment count" of 1-3 (customers in
   more segments receive more e-mails).
2. **Purchases: BG/NBD** (Fader, Hardie & Lee 2005, "Counting your customers
   the easy way", section 2), per channel: each customer draws a purchase
   rate lambda ~ Gamma(shape r, rate alpha) per day and a dropout probability
   p ~ Beta(a, b). A share of customers never buys (``NEVER_BUY``, higher
   among those not activated); the others place a first order 0-7 days after
   sign-up, then repeat orders with exponential gaps of mean 1/lambda while
   alive; after each repeat order the customer drops out with probability p.
   This is exactly the BG/NBD story, so a BG/NBD fit per channel on the
   purchases (time from the first order) recovers (r, alpha, a, b) up to
   sampling error. Time unit: days.
3. **Spend: Gamma-Gamma** (Fader, Hardie & Lee 2005, "RFM and CLV", eq. 1-2;
   Colombo & Jiang 1999): each customer draws nu ~ Gamma(shape q, rate gamma)
   and each order's value z ~ Gamma(shape p, rate nu), so E[Z] = p gamma / (q - 1).
   Values are rounded to cents. ``ZERO_SHARE`` of orders are free (amount 0,
   e.g. a replacement) and ``REFUND_SHARE`` of orders are followed 1-20 days
   later by a refund row (a negative amount of half or all of the order).
4. **Onboarding and activation.** In the first 14 days after sign-up a
   customer steps through the funnel ``FUNNEL`` (each step reached with the
   stated probability given the previous) and browses (page views, clicks,
   the key feature ``create_wishlist``). Activation is drawn first, with a
   probability that falls with the customer's dropout p (logistic in logit p),
   so activation predicts retention while the BG/NBD truth stays exact;
   activated customers browse more and meet the default activation criteria.
5. **Ongoing app use.** ``APP_SHARE`` of customers use the app: sessions of
   1-3 events at ``SESSIONS_PER_MONTH`` while alive (until their BG/NBD
   dropout), each with a duration.
6. **E-mail.** Two campaigns a month. Each goes to a random share of the
   customers who have signed up and neither unsubscribed nor hard-bounced
   (``0.1 x segment count``). A send is hard-bounced, soft-bounced or
   delivered; a delivered e-mail is opened with a probability set by country
   and by whether the customer is still alive, clicked given an open,
   and leads to an unsubscribe with probability
   ``UNSUB_BASE + UNSUB_PER_RECENT_EMAIL x (e-mails in the previous 30 days)``
   (e-mail fatigue). Campaign ``BAD_LIST_CAMPAIGN`` used a stale list
   (hard bounces x8) and ``PUSHY_CAMPAIGN`` was aggressive (unsubscribes x5).
7. **Surveys.** A latent satisfaction per customer falls with the dropout p
   and shifts by country (``COUNTRIES[...]["satisfaction"]``); NPS (0-10),
   CSAT (1-5) and CES (1-7) answers are rounded, clipped transforms of it plus
   noise, so detractors churn more than promoters. NPS is asked after some
   orders and once a year (relationship survey); CSAT after deliveries and
   support contacts; CES after support contacts. About 1% of answers skip the
   score; comments are drawn from ``COMMENTS`` by sentiment, many empty.
8. **Membership: shifted-beta-geometric** (Fader & Hardie 2007, "How to
   project customer retention", eq. 2-3): ``MEMBER_SHARE`` of buyers start a
   membership (some after a 14-day trial, which converts at
   ``TRIAL_CONVERSION``); each subscriber draws a monthly churn probability
   theta ~ Beta(alpha, beta) per plan and renews monthly until churn or ``end``.
9. **Marketing spend.** Daily spend per paid channel and campaign: the
   channel's CAC times its expected new customers that day (its share of
   the sign-up intensity), with log-normal noise (sd ``SPEND_NOISE``); leads = new customers / the
   channel's lead-to-customer rate, Poisson. Organic has no spend.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .data import SCHEMAS

__all__ = ["simulate_company", "CHANNELS", "COUNTRIES"]

#: Per acquisition channel: share of sign-ups, target CAC, BG/NBD (r, alpha per day, a, b),
#: Gamma-Gamma (p, q, gamma), and the lead-to-customer rate.
CHANNELS: dict[str, dict] = {
    "paid_search": dict(share=0.30, cac=48.0, r=0.90, alpha=16.0, a=0.9, b=10.0, p=6.0, q=4.0, gamma=36.0, lead_rate=0.25),
    "paid_social": dict(share=0.25, cac=28.0, r=0.80, alpha=19.0, a=1.6, b=6.0, p=5.0, q=4.5, gamma=28.0, lead_rate=0.12),
    "affiliate": dict(share=0.15, cac=36.0, r=0.85, alpha=18.0, a=1.1, b=8.0, p=6.0, q=4.0, gamma=30.0, lead_rate=0.30),
    "referral": dict(share=0.10, cac=15.0, r=1.00, alpha=15.0, a=0.7, b=12.0, p=6.0, q=3.5, gamma=30.0, lead_rate=0.60),
    "organic": dict(share=0.20, cac=0.0, r=0.90, alpha=16.0, a=0.9, b=9.0, p=6.0, q=4.0, gamma=32.0, lead_rate=None),
}
PAID_CAMPAIGNS = {"paid_search": ["brand", "generic"], "paid_social": ["prospecting", "retargeting"],
                  "affiliate": ["partners"], "referral": ["refer_a_friend"]}

#: Country: share of customers, region, e-mail open rate, satisfaction shift (in latent sd).
COUNTRIES: dict[str, dict] = {
    "US": dict(share=0.40, region="North America", open_rate=0.24, satisfaction=0.15),
    "GB": dict(share=0.15, region="Europe", open_rate=0.22, satisfaction=-0.25),
    "DE": dict(share=0.15, region="Europe", open_rate=0.30, satisfaction=-0.35),
    "FR": dict(share=0.15, region="Europe", open_rate=0.20, satisfaction=0.0),
    "BR": dict(share=0.15, region="Latin America", open_rate=0.28, satisfaction=0.30),
}
AGE_BANDS = {"18-24": 0.14, "25-34": 0.30, "35-44": 0.25, "45-54": 0.18, "55+": 0.13}

NEVER_BUY = {"activated": 0.05, "not_activated": 0.22}
ACTIVATION_LOGIT = dict(intercept=-4.0, slope=-1.8)  # P(activated) = sigmoid(intercept + slope * logit(p))
ZERO_SHARE = 0.001
REFUND_SHARE = 0.015
PURCHASE_CHANNELS = {"web": 0.55, "app": 0.35, "store": 0.10}

FUNNEL = [("onboarding_start", 1.0), ("profile_completed", 0.80), ("first_search", 0.85), ("first_add_to_cart", 0.75)]
ONBOARDING_DAYS = 14
APP_SHARE = 0.6
SESSIONS_PER_MONTH = 0.6
SESSION_EVENTS = ["page_view", "search", "click", "add_to_cart", "create_wishlist", "view_offer"]

CAMPAIGNS_PER_MONTH = 2
SEND_SHARE_PER_SEGMENT = 0.10
BOUNCE = dict(hard=0.005, soft=0.02)
CLICK_GIVEN_OPEN = 0.15
UNSUB_BASE = 0.001
UNSUB_PER_RECENT_EMAIL = 0.003
COMPLAINT = 0.0005
BAD_LIST_CAMPAIGN = 17
PUSHY_CAMPAIGN = 41

NPS_AFTER_ORDER = 0.12
CSAT_AFTER_ORDER = 0.08
SUPPORT_CONTACTS_PER_YEAR = 0.25
MISSING_SCORE = 0.01
COMMENT_SHARE = 0.4
COMMENTS = {
    "negative": ["Too many emails", "App keeps crashing", "Delivery was late", "Refund took weeks", "Support never answered",
                 "Prices went up again", "Checkout is confusing"],
    "neutral": ["OK overall", "Delivery fine, packaging could be better", "Good range, average prices", "Does the job"],
    "positive": ["Fast delivery", "Great selection", "Love the app", "Support solved it in minutes", "Best prices I found",
                 "Membership is worth it"],
}

MEMBER_SHARE = 0.28
TRIAL_SHARE = 0.4
TRIAL_CONVERSION = 0.6
PLANS = {"standard": dict(share=0.65, mrr=9.99, alpha=0.7, beta=5.0), "premium": dict(share=0.35, mrr=19.99, alpha=1.0, beta=10.0)}
SPEND_NOISE = 0.25


def _pick(rng, options: dict, n: int, weight: str | None = None) -> np.ndarray:
    keys = list(options)
    probs = np.array([options[k][weight] if weight else options[k] for k in keys], dtype=float)
    return np.array(keys, dtype=object)[rng.choice(len(keys), size=n, p=probs / probs.sum())]


def _ids(prefix: str, idx: np.ndarray, width: int) -> np.ndarray:
    return np.char.add(prefix, np.char.zfill(idx.astype(str), width)).astype(object)


def _stamp(start: pd.Timestamp, days: np.ndarray) -> np.ndarray:
    """Days (float) after ``start`` as datetime64[us], to the second."""
    return (start.to_datetime64().astype("datetime64[s]") + np.round(days * 86_400).astype("timedelta64[s]")).astype("datetime64[us]")


def simulate_company(n_customers: int = 20_000, *, seed: int = 2024, start: str = "2022-01-01",
                     end: str = "2024-12-31") -> tuple[dict[str, pd.DataFrame], dict]:
    """The seven contract tables of a synthetic company, and the ground truth that generated them.

    Deterministic: the same arguments give identical tables. See the module
    docstring for every generating process.
    """
    if n_customers < 1:
        raise ValueError(f"n_customers must be at least 1, got {n_customers}")
    rng = np.random.default_rng(seed)
    t0, t1 = pd.Timestamp(start), pd.Timestamp(end)
    horizon = float((t1 - t0).days + 1)  # days observed; event times are in [0, horizon)
    width = max(6, len(str(n_customers)))

    # 1. sign-ups -------------------------------------------------------------------------
    days = np.arange(int(horizon))
    dates = t0 + pd.to_timedelta(days, unit="D")
    intensity = (1 + 2 * days / horizon) * np.where(dates.month.isin([11, 12]), 1.3, 1.0)
    signup_day = np.sort(rng.choice(days, size=n_customers, p=intensity / intensity.sum()))
    channel = _pick(rng, CHANNELS, n_customers, "share")
    country = _pick(rng, COUNTRIES, n_customers, "share")
    age_band = _pick(rng, AGE_BANDS, n_customers)
    segments = rng.integers(1, 4, size=n_customers)
    customer_id = _ids("C", np.arange(1, n_customers + 1), width)

    # 2. BG/NBD purchasing ---------------------------------------------------------------------
    par = {k: np.array([CHANNELS[c][k] for c in CHANNELS]) for k in ("r", "alpha", "a", "b", "p", "q", "gamma")}
    ch_idx = pd.Categorical(channel, categories=list(CHANNELS)).codes
    lam = rng.gamma(par["r"][ch_idx], 1.0 / par["alpha"][ch_idx])
    drop_p = rng.beta(par["a"][ch_idx], par["b"][ch_idx])
    logit_p = np.log(drop_p / (1 - drop_p))
    activated = rng.random(n_customers) < 1 / (1 + np.exp(-(ACTIVATION_LOGIT["intercept"] + ACTIVATION_LOGIT["slope"] * logit_p)))
    never = rng.random(n_customers) < np.where(activated, NEVER_BUY["activated"], NEVER_BUY["not_activated"])
    first = signup_day + rng.uniform(0, 7, n_customers)  # first order 0-7 days after sign-up
    buyer = ~never & (first < horizon)
    tx_cust, tx_time = [np.flatnonzero(buyer)], [first[buyer]]
    alive = buyer.copy()
    death = np.full(n_customers, np.inf)  # day the customer dropped out (inf: still alive at the end)
    death[~buyer] = signup_day[~buyer]
    current = first.copy()
    idx = np.flatnonzero(alive)
    while idx.size:
        current[idx] += rng.exponential(1.0 / lam[idx])
        inside = current[idx] < horizon
        idx = idx[inside]
        tx_cust.append(idx)
        tx_time.append(current[idx].copy())
        drops = rng.random(idx.size) < drop_p[idx]
        death[idx[drops]] = current[idx[drops]]
        idx = idx[~drops]
    tx_cust = np.concatenate(tx_cust)
    tx_time = np.concatenate(tx_time)
    order = np.lexsort((tx_time, tx_cust))
    tx_cust, tx_time = tx_cust[order], tx_time[order]

    # 3. Gamma-Gamma spend, zero orders, refunds ------------------------------------------------
    nu = rng.gamma(par["q"][ch_idx], 1.0 / par["gamma"][ch_idx])
    amount = np.round(rng.gamma(par["p"][ch_idx][tx_cust], 1.0 / nu[tx_cust]), 2)
    amount = np.maximum(amount, 0.01)
    zero = rng.random(amount.size) < ZERO_SHARE
    amount[zero] = 0.0
    refunded = (rng.random(amount.size) < REFUND_SHARE) & ~zero
    refund_time = tx_time[refunded] + rng.uniform(1, 20, refunded.sum())
    keep = refund_time < horizon
    refund_cust = tx_cust[refunded][keep]
    refund_amount = -np.round(amount[refunded][keep] * rng.choice([0.5, 1.0], keep.sum()), 2)
    all_cust = np.concatenate([tx_cust, refund_cust])
    all_time = np.concatenate([tx_time, refund_time[keep]])
    all_amount = np.concatenate([amount, refund_amount])
    order = np.lexsort((all_time, all_cust))
    transactions = pd.DataFrame(
        {
            "transaction_id": _ids("T", np.arange(1, all_cust.size + 1), len(str(all_cust.size)) + 1),
            "customer_id": customer_id[all_cust[order]],
            "timestamp": _stamp(t0, all_time[order]),
            "amount": all_amount[order],
            "channel": _pick(rng, PURCHASE_CHANNELS, all_cust.size),
        }
    )

    # 4. onboarding funnel and activation browsing -----------------------------------------------
    ev_cust, ev_time, ev_name, ev_session = [], [], [], []

    def add(cust, time, name, session=None):
        ev_cust.append(cust)
        ev_time.append(time)
        ev_name.append(np.broadcast_to(np.array(name, dtype=object), cust.shape) if np.ndim(name) == 0 else name)
        ev_session.append(np.full(cust.shape, -1, dtype=np.int64) if session is None else session)

    reached = np.ones(n_customers, dtype=bool)
    step_time = signup_day.astype(float)
    for step, prob in FUNNEL:
        p_step = np.clip(prob * np.where(activated, 1.1, 0.8), 0, 1)
        reached &= rng.random(n_customers) < p_step
        step_time = step_time + rng.uniform(0, 2, n_customers)
        ok = np.flatnonzero(reached & (step_time < horizon))
        add(ok, step_time[ok], step)
    for name, mean_act, mean_not in (("page_view", 5.0, 1.0), ("click", 7.0, 1.5), ("create_wishlist", 1.3, 0.1)):
        counts = rng.poisson(np.where(activated, mean_act, mean_not))
        cust = np.repeat(np.arange(n_customers), counts)
        time = signup_day[cust] + rng.uniform(0, ONBOARDING_DAYS, cust.size)
        ok = time < horizon
        add(cust[ok], time[ok], name)
    first_in_window = buyer & (first < signup_day + ONBOARDING_DAYS)
    ok = np.flatnonzero(first_in_window)
    add(ok, first[ok] + 1e-4, "first_purchase")

    # 5. ongoing app sessions while alive ------------------------------------------------------
    app_user = rng.random(n_customers) < APP_SHARE
    active_until = np.minimum(death, horizon)
    span = np.clip(active_until - (signup_day + ONBOARDING_DAYS), 0, None)
    n_sessions = rng.poisson(np.where(app_user, SESSIONS_PER_MONTH * span / 30.4, 0))
    s_cust = np.repeat(np.arange(n_customers), n_sessions)
    s_time = signup_day[s_cust] + ONBOARDING_DAYS + rng.uniform(0, 1, s_cust.size) * span[s_cust]
    s_len = rng.integers(1, 4, s_cust.size)
    session_ids = np.char.add("S", np.char.zfill(np.arange(1, s_cust.size + 1).astype(str), 8)).astype(object)
    e_sess = np.repeat(np.arange(s_cust.size), s_len)
    e_cust = s_cust[e_sess]
    e_time = s_time[e_sess] + rng.uniform(0, 600, e_sess.size) / 86_400
    keep = e_time < horizon
    add(e_cust[keep], e_time[keep], np.array(SESSION_EVENTS, dtype=object)[rng.integers(0, len(SESSION_EVENTS), keep.sum())], e_sess[keep])
    pe_cust, pe_time = np.concatenate(ev_cust), np.concatenate(ev_time)
    pe_name, pe_sess = np.concatenate(ev_name), np.concatenate(ev_session)
    del ev_cust, ev_time, ev_name, ev_session, e_sess, e_cust, e_time
    order = np.lexsort((pe_time, pe_cust))
    sess = pe_sess[order]
    product_events = pd.DataFrame(
        {
            "customer_id": customer_id[pe_cust[order]],
            "timestamp": _stamp(t0, pe_time[order]),
            "event": pe_name[order],
            "session_id": np.where(sess >= 0, session_ids[np.maximum(sess, 0)] if session_ids.size else None, None),
            "duration_s": np.round(rng.gamma(2.0, 45.0, order.size), 1),
        }
    )

    # 6. e-mail campaigns ---------------------------------------------------------------------
    months = pd.period_range(t0, t1, freq="M")
    campaign_days, names = [], []
    themes = ["Newsletter", "Sale", "New arrivals", "Member offer"]
    for m in months:
        for k in range(CAMPAIGNS_PER_MONTH):
            day = (m.start_time - t0).days + 3 + 14 * k
            if day < horizon:
                campaign_days.append(float(day) + 9 / 24)
                names.append(f"{m} {themes[(m.month + k) % len(themes)]}")
    subscribed = np.ones(n_customers, dtype=bool)
    recent = []  # (day, customer indices) of recent sends, for fatigue
    country_open = np.array([COUNTRIES[c]["open_rate"] for c in country])
    em_parts = []
    for ci, day in enumerate(campaign_days):
        eligible = np.flatnonzero(subscribed & (signup_day < day))
        sent = eligible[rng.random(eligible.size) < SEND_SHARE_PER_SEGMENT * segments[eligible]]
        recent = [(d, c) for d, c in recent if day - d <= 30]
        last30 = np.zeros(n_customers, dtype=np.int64)
        for _, c in recent:
            last30[c] += 1
        recent.append((day, sent))
        u = rng.random((sent.size, 5))
        hard_p = BOUNCE["hard"] * (8 if ci == BAD_LIST_CAMPAIGN else 1)
        hard = u[:, 0] < hard_p
        soft = ~hard & (u[:, 0] < hard_p + BOUNCE["soft"])
        delivered = ~hard & ~soft
        is_alive = death[sent] > day
        opened = delivered & (u[:, 1] < country_open[sent] * np.where(is_alive, 1.0, 0.4))
        clicked = opened & (u[:, 2] < CLICK_GIVEN_OPEN)
        unsub_p = (UNSUB_BASE + UNSUB_PER_RECENT_EMAIL * last30[sent]) * (5 if ci == PUSHY_CAMPAIGN else 1)
        unsub = delivered & (u[:, 3] < unsub_p)
        complaint = delivered & (u[:, 4] < COMPLAINT)
        subscribed[sent[hard | unsub | complaint]] = False
        for event, mask, lag in (("sent", np.ones(sent.size, bool), 0.0), ("delivered", delivered, 0.001), ("bounce_hard", hard, 0.001),
                                 ("bounce_soft", soft, 0.001), ("open", opened, 0.2), ("click", clicked, 0.25),
                                 ("unsubscribe", unsub, 0.3), ("complaint", complaint, 0.3)):
            c = sent[mask]
            em_parts.append((np.full(c.size, ci), c, np.full(c.size, event, dtype=object), day + lag + rng.uniform(0, 0.1, c.size) * (lag > 0)))
    em_c = np.concatenate([p[0] for p in em_parts]) if em_parts else np.array([], dtype=np.int64)
    em_cust = np.concatenate([p[1] for p in em_parts]) if em_parts else np.array([], dtype=np.int64)
    em_event = np.concatenate([p[2] for p in em_parts]) if em_parts else np.array([], dtype=object)
    em_time = np.concatenate([p[3] for p in em_parts]) if em_parts else np.array([], dtype=float)
    del em_parts, recent
    keep = em_time < horizon
    order = np.lexsort((em_time[keep], em_cust[keep], em_c[keep]))
    campaign_ids = _ids("E", np.arange(1, len(campaign_days) + 1), 4)
    email_events = pd.DataFrame(
        {
            "campaign_id": campaign_ids[em_c[keep][order]],
            "campaign_name": np.array(names, dtype=object)[em_c[keep][order]],
            "customer_id": customer_id[em_cust[keep][order]],
            "event": em_event[keep][order],
            "timestamp": _stamp(t0, em_time[keep][order]),
        }
    )

    # 7. surveys ----------------------------------------------------------------------------------
    shift = np.array([COUNTRIES[c]["satisfaction"] for c in country])
    z = -(logit_p - logit_p.mean()) / (logit_p.std() or 1.0) * 0.9 + shift + rng.normal(0, 0.6, n_customers)
    sv_parts = []
    pick = rng.random(tx_time.size) < NPS_AFTER_ORDER
    sv_parts.append((tx_cust[pick], tx_time[pick] + rng.uniform(1, 5, pick.sum()), "nps", "purchase"))
    pick = rng.random(tx_time.size) < CSAT_AFTER_ORDER
    sv_parts.append((tx_cust[pick], tx_time[pick] + rng.uniform(2, 8, pick.sum()), "csat", "delivery"))
    for year_start in range(0, int(horizon), 365):
        c = np.flatnonzero((signup_day < year_start + 180) & (rng.random(n_customers) < 0.15))
        sv_parts.append((c, year_start + 180 + rng.uniform(0, 30, c.size), "nps", "relationship"))
    n_support = rng.poisson(SUPPORT_CONTACTS_PER_YEAR * (horizon - signup_day) / 365)
    c = np.repeat(np.arange(n_customers), n_support)
    t = signup_day[c] + rng.uniform(0, 1, c.size) * (horizon - signup_day[c])
    both = rng.random(c.size) < 0.5
    sv_parts.append((c, t + 0.1, "csat", "support"))
    sv_parts.append((c[both], t[both] + 0.2, "ces", "support"))
    early = np.flatnonzero(rng.random(n_customers) < 0.2)
    sv_parts.append((early, signup_day[early] + ONBOARDING_DAYS + rng.uniform(0, 3, early.size), "ces", "onboarding"))
    sv_cust = np.concatenate([p[0] for p in sv_parts])
    sv_time = np.concatenate([p[1] for p in sv_parts])
    sv_kind = np.concatenate([np.full(p[0].size, p[2], dtype=object) for p in sv_parts])
    sv_touch = np.concatenate([np.full(p[0].size, p[3], dtype=object) for p in sv_parts])
    keep = sv_time < horizon
    sv_cust, sv_time, sv_kind, sv_touch = sv_cust[keep], sv_time[keep], sv_kind[keep], sv_touch[keep]
    noise = rng.normal(0, 1, sv_cust.size)
    latent = z[sv_cust] + 0.5 * noise
    score = np.select(
        [sv_kind == "nps", sv_kind == "csat"],
        [np.clip(np.round(7.6 + 1.7 * latent), 0, 10), np.clip(np.round(4.0 + 0.9 * latent), 1, 5)],
        np.clip(np.round(5.2 + 1.1 * latent), 1, 7),
    ).astype(float)
    score[rng.random(score.size) < MISSING_SCORE] = np.nan
    sentiment = np.where(latent > 0.6, "positive", np.where(latent < -0.6, "negative", "neutral"))
    comment = np.full(score.size, None, dtype=object)
    has = rng.random(score.size) < COMMENT_SHARE
    for s, texts in COMMENTS.items():
        m = has & (sentiment == s)
        comment[m] = np.array(texts, dtype=object)[rng.integers(0, len(texts), m.sum())]
    order = np.lexsort((sv_time, sv_cust))
    surveys = pd.DataFrame(
        {
            "response_id": _ids("R", np.arange(1, order.size + 1), len(str(order.size)) + 1),
            "customer_id": customer_id[sv_cust[order]],
            "timestamp": _stamp(t0, sv_time[order]),
            "survey": sv_kind[order],
            "score": score[order],
            "touchpoint": sv_touch[order],
            "comment": comment[order],
        }
    )

    # 8. membership (sBG) ----------------------------------------------------------------------
    member = np.flatnonzero(buyer & (rng.random(n_customers) < MEMBER_SHARE))
    m_start = first[member] + rng.exponential(60, member.size)
    inside = m_start < horizon - 1
    member, m_start = member[inside], m_start[inside]
    plan = _pick(rng, PLANS, member.size, "share")
    trial = rng.random(member.size) < TRIAL_SHARE
    converts = ~trial | (rng.random(member.size) < TRIAL_CONVERSION * np.where(activated[member], 1.15, 0.8))
    theta = rng.beta([PLANS[p]["alpha"] for p in plan], [PLANS[p]["beta"] for p in plan])
    months_kept = rng.geometric(theta)  # the month in which the subscriber churns (1 = after the first month)
    start_day = np.floor(m_start).astype(np.int64)
    paid_start = np.where(trial, start_day + 14, start_day)
    months_kept = np.minimum(months_kept, 240)  # beyond any window: still active at the end
    t_start = (t0.to_datetime64().astype("datetime64[D]") + start_day.astype("timedelta64[D]"))
    p_start = (t0.to_datetime64().astype("datetime64[D]") + paid_start.astype("timedelta64[D]"))
    month0 = p_start.astype("datetime64[M]")
    day_of_month = (p_start - month0).astype(np.int64)
    end_month = month0 + months_kept.astype("timedelta64[M]")
    month_len = ((end_month + np.timedelta64(1, "M")).astype("datetime64[D]") - end_month.astype("datetime64[D]")).astype(np.int64)
    p_end = end_month.astype("datetime64[D]") + np.minimum(day_of_month, month_len - 1).astype("timedelta64[D]")
    end_day = t1.to_datetime64().astype("datetime64[D]")
    trial_rows = pd.DataFrame({"c": member[trial], "start_date": t_start[trial], "end_date": t_start[trial] + np.timedelta64(14, "D"),
                               "plan": "trial", "mrr": 0.0})
    paid = converts & (p_start <= end_day)
    paid_rows = pd.DataFrame({"c": member[paid], "start_date": p_start[paid],
                              "end_date": np.where(p_end[paid] <= end_day, p_end[paid], np.datetime64("NaT")),
                              "plan": plan[paid], "mrr": np.array([PLANS[p]["mrr"] for p in plan[paid]], dtype=float)})
    subs = pd.concat([trial_rows, paid_rows], ignore_index=True)
    subs.loc[subs["end_date"] > t1, "end_date"] = pd.NaT
    subs = subs.sort_values(["c", "start_date"], kind="stable").reset_index(drop=True)
    subscriptions = pd.DataFrame(
        {
            "customer_id": customer_id[subs["c"].to_numpy()],
            "start_date": subs["start_date"].astype("datetime64[us]"),
            "end_date": subs["end_date"].astype("datetime64[us]"),
            "plan": subs["plan"].astype(object),
            "mrr": subs["mrr"].astype(float),
        }
    )
    active_plan = subscriptions[subscriptions["end_date"].isna() & (subscriptions["plan"] != "trial")].drop_duplicates("customer_id", keep="last")
    plan_at_end = pd.Series("none", index=customer_id, dtype=object)
    plan_at_end[active_plan["customer_id"].to_numpy()] = active_plan["plan"].to_numpy()

    customers = pd.DataFrame(
        {
            "customer_id": customer_id,
            "signup_date": _stamp(t0, signup_day.astype(float)),
            "acquisition_channel": channel,
            "country": country,
            "region": np.array([COUNTRIES[c]["region"] for c in country], dtype=object),
            "age_band": age_band,
            "plan": plan_at_end.to_numpy(),
        }
    )

    # 9. marketing spend ----------------------------------------------------------------------
    spend_rows = []
    new_per_day = pd.crosstab(signup_day, channel)
    for ch, camps in PAID_CAMPAIGNS.items():
        n_new = new_per_day[ch].reindex(days, fill_value=0).to_numpy() if ch in new_per_day else np.zeros(days.size)
        cfg = CHANNELS[ch]
        for k, camp in enumerate(camps):
            share = (0.6 if k == 0 else 0.4) if len(camps) == 2 else 1.0
            # spend follows the channel's expected daily volume (the sign-up intensity), so a day can
            # carry spend and win no one, and monthly spend / new customers is the CAC plus noise
            base = cfg["cac"] * n_new.sum() * intensity / intensity.sum() * share
            spend = np.round(base * rng.lognormal(-SPEND_NOISE ** 2 / 2, SPEND_NOISE, days.size), 2)
            leads = rng.poisson(n_new * share / cfg["lead_rate"])
            spend_rows.append(pd.DataFrame({"date": dates.to_numpy().astype("datetime64[us]"), "channel": ch,
                                            "campaign": f"{ch}_{camp}", "spend": spend, "leads": leads.astype(np.int64)}))
    marketing_spend = pd.concat(spend_rows, ignore_index=True).sort_values(["date", "channel", "campaign"], kind="stable").reset_index(drop=True)
    marketing_spend["leads"] = marketing_spend["leads"].astype(float)

    tables = {
        "customers": customers,
        "transactions": transactions,
        "marketing_spend": marketing_spend,
        "email_events": email_events,
        "product_events": product_events,
        "surveys": surveys,
        "subscriptions": subscriptions,
    }
    tables = {name: df[[c.name for c in SCHEMAS[name].columns]] for name, df in tables.items()}  # contract column order
    truth = {
        "generator": "clm_helpers.synthetic.simulate_company",
        "n_customers": n_customers,
        "seed": seed,
        "start": str(t0.date()),
        "end": str(t1.date()),
        "time_unit": "days",
        "channels": CHANNELS,
        "countries": COUNTRIES,
        "activation_logit": ACTIVATION_LOGIT,
        "never_buy": NEVER_BUY,
        "plans": PLANS,
        "trial_share": TRIAL_SHARE,
        "trial_conversion": TRIAL_CONVERSION,
        "email": dict(campaigns_per_month=CAMPAIGNS_PER_MONTH, send_share_per_segment=SEND_SHARE_PER_SEGMENT, bounce=BOUNCE,
                      click_given_open=CLICK_GIVEN_OPEN, unsubscribe="UNSUB_BASE + UNSUB_PER_RECENT_EMAIL * emails_in_previous_30_days",
                      unsub_base=UNSUB_BASE, unsub_per_recent_email=UNSUB_PER_RECENT_EMAIL, complaint=COMPLAINT,
                      bad_list_campaign=str(campaign_ids[BAD_LIST_CAMPAIGN]) if BAD_LIST_CAMPAIGN < len(campaign_ids) else None,
                      pushy_campaign=str(campaign_ids[PUSHY_CAMPAIGN]) if PUSHY_CAMPAIGN < len(campaign_ids) else None),
        "onboarding": dict(funnel=FUNNEL, days=ONBOARDING_DAYS, default_criteria=dict(page_view=3, click=5, create_wishlist=1)),
        "realised": {
            "customers_per_channel": {c: int((channel == c).sum()) for c in CHANNELS},
            "buyers": int(buyer.sum()),
            "activated": int(activated.sum()),
            "orders": int(tx_cust.size),
            "refunds": int(refund_cust.size),
            "zero_amount_orders": int(zero.sum()),
            "mean_order_value": round(float(amount[amount > 0].mean()), 4) if (amount > 0).any() else None,
            "members": int(member.size),
        },
    }
    return tables, truth
