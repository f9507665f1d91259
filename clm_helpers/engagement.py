"""Engagement: e-mail campaign metrics, e-mail fatigue, and product activity (active customers, stickiness, feature adoption).

Definitions (the same words the reports show). An **e-mail** is one campaign
sent to one customer: a (campaign_id, customer_id) pair. By default every
count is **unique per e-mail**: the number of e-mails with at least one event
of that kind (a customer who opens one campaign three times is one open of
that campaign; two campaigns opened are two opens). ``unique=False`` counts
every event row instead (total opens, total clicks).

==================== ============================================ ==============
rate (%)             numerator                                    denominator
==================== ============================================ ==============
delivery rate        delivered                                    sent
hard bounce rate     hard bounces                                 sent
soft bounce rate     soft bounces                                 sent
bounce rate          hard + soft bounces                          sent
open rate            opens (a click counts as an open)            delivered
click-through rate   clicks                                       delivered
click-to-open rate   unique clickers                              unique openers
unsubscribe rate     unsubscribes                                 delivered
complaint rate       spam complaints                              delivered
==================== ============================================ ==============

Opens are measured by a tracking pixel: Apple Mail Privacy Protection
(since September 2021) pre-loads it for every Apple Mail recipient, so real
open rates are inflated and not comparable with figures from before 2021;
clicks are the more reliable engagement signal. A click implies an open
(the recipient saw the e-mail even if images were blocked), as most e-mail
platforms count it; ``implied_opens=False`` counts only recorded opens.
Click-to-open is always unique clickers over unique openers, in both counting
modes; with ``implied_opens=False`` a clicked e-mail without a recorded open is
in neither (it is not an opened e-mail), so the rate never exceeds 100%. A group with no deliveries has its rates over delivered *missing*
(with the reason in ``note``), never infinite.

Product activity comes from ``product_events``: a customer is **active** on a
day, in an ISO week (starting Monday) or in a calendar month when they have at
least one product event in it. **Stickiness** is DAU/MAU: the mean daily
active customers in a calendar month divided by the customers active in that
month, in % (``method="calendar"``). The other convention,
``method="rolling"``, averages over the month's days each day's DAU divided
by the customers active in the trailing ``window_days`` (30) days ending that
day. **Feature adoption** is, per event name, the customers who performed it
at least once in the window as % of the customers active in the product in
the window (or, with ``customers``, of all customers signed up by its end).

Every event-level aggregation is an Ibis expression (``engine.as_table`` /
``engine.execute``); only per-group results come back to pandas.
"""

from __future__ import annotations

import collections
import weakref
from dataclasses import dataclass

import ibis
import numpy as np
import pandas as pd
from scipy import stats

from .data import parse_day, require_columns, EMAIL_EVENTS, ClmError, SchemaError, is_arrow_text
from .engine import as_table, execute

__all__ = [
    "EngagementError",
    "EMAIL_RATES",
    "DEFAULT_LIMITS",
    "email_metrics",
    "flag_campaigns",
    "FatigueResult",
    "email_fatigue",
    "active_customers",
    "stickiness",
    "feature_adoption",
    "plot_email_rates",
    "plot_fatigue",
    "plot_active_customers",
]


class EngagementError(ClmError, ValueError):
    """An engagement metric was asked for something the data or the options cannot give (bad option, inconsistent events)."""


#: Each e-mail rate: (numerator, denominator, what it means), in the words the reports show.
EMAIL_RATES: dict[str, tuple[str, str, str]] = {
    "delivery_rate": ("delivered", "sent", "E-mails accepted by the recipient's server, % of e-mails sent."),
    "hard_bounce_rate": ("hard_bounces", "sent", "E-mails rejected permanently (address invalid), % of e-mails sent."),
    "soft_bounce_rate": ("soft_bounces", "sent", "E-mails rejected temporarily (mailbox full, server down), % of e-mails sent."),
    "bounce_rate": ("hard_bounces + soft_bounces", "sent", "Hard plus soft bounces, % of e-mails sent."),
    "open_rate": ("opens", "delivered",
                  "E-mails opened (a click counts as an open), % of e-mails delivered; inflated by Apple Mail Privacy Protection since 2021."),
    "click_through_rate": ("clicks", "delivered", "E-mails with a click, % of e-mails delivered."),
    "click_to_open_rate": ("unique clickers", "unique openers", "E-mails clicked, % of e-mails opened (always unique per e-mail)."),
    "unsubscribe_rate": ("unsubscribes", "delivered", "E-mails that led to an unsubscribe, % of e-mails delivered."),
    "complaint_rate": ("complaints", "delivered", "E-mails marked as spam, % of e-mails delivered."),
}

#: Upper limits (in %) above which ``flag_campaigns`` flags a campaign, and the delivery-rate floor.
#: Hard bounces over 2% point at a stale list; unsubscribes over 0.5% at fatigue or an off-target send;
#: complaints at 0.3% or more is where Gmail and Yahoo (bulk-sender rules, February 2024) start to block mail
#: (they ask senders to stay below 0.1%, a stricter limit that flags many campaigns on a handful of complaints).
DEFAULT_LIMITS: dict[str, float] = {"hard_bounce_rate": 2.0, "unsubscribe_rate": 0.5, "complaint_rate": 0.3}

_COUNT_EVENTS = {  # output column -> email event(s)
    "sent": ("sent",),
    "delivered": ("delivered",),
    "hard_bounces": ("bounce_hard",),
    "soft_bounces": ("bounce_soft",),
    "opens": ("open",),
    "clicks": ("click",),
    "unsubscribes": ("unsubscribe",),
    "complaints": ("complaint",),
}
_EMAIL_COLUMNS = ("campaign_id", "customer_id", "event", "timestamp")
_FREQS = {"D": "day", "W": "ISO week (Monday to Sunday)", "M": "calendar month"}


# ----------------------------------------------------------------------------- checks


_require = require_columns  # the shared input check (clm_helpers.data)
_day = parse_day


def _window(df: pd.DataFrame, column: str, start, end) -> pd.DataFrame:
    """Rows whose ``column`` falls on or after ``start`` and on or before ``end`` (whole days)."""
    s, e = _day(start, "observation_start"), _day(end, "observation_end")
    if s is not None and e is not None and s > e:
        raise EngagementError(f"observation_start {s.date()} is after observation_end {e.date()}")
    mask = pd.Series(True, index=df.index)
    if s is not None:
        mask &= df[column] >= s
    if e is not None:
        mask &= df[column] < e + pd.Timedelta(days=1)
    return df if mask.all() else df.loc[mask]


#: E-mail tables whose send check passed, as weak references to the Arrow arrays of the columns it reads.
_SENDS_CHECKED: collections.deque = collections.deque(maxlen=8)
_SEND_CHECK_COLUMNS = ("campaign_id", "customer_id", "event")


def _arrow_columns(df, columns) -> list | None:
    """The Arrow arrays behind ``columns`` of a pandas frame whose columns are all Arrow-backed text (``data.TEXT``),
    else None. Arrow arrays never change: editing, filtering or concatenating the frame gives new arrays."""
    if not isinstance(df, pd.DataFrame):
        return None
    arrays = []
    for column in columns:
        if not is_arrow_text(df[column].dtype):
            return None
        arrays.append(df[column].array.__arrow_array__())
    return arrays


def _check_sends(t, source=None) -> None:
    """Events are the contract's e-mail events, and every e-mail with an event has a 'sent' event (or rates over sent exceed 100%).

    ``source`` is the frame ``t`` was made from. When its campaign, customer
    and event columns are the very Arrow arrays of a table that passed
    already, the check is not run again: a notebook's e-mail calls on one
    table pay for it once (at 12M events, 3 s a call).
    """
    arrays = _arrow_columns(source, _SEND_CHECK_COLUMNS)
    if arrays is not None and any(all(ref() is a for ref, a in zip(refs, arrays)) for refs in _SENDS_CHECKED):
        return
    _run_send_check(t)
    if arrays is not None:
        _SENDS_CHECKED.append(tuple(weakref.ref(a) for a in arrays))


def _run_send_check(t) -> None:
    unknown = t.filter(~t.event.isin(list(EMAIL_EVENTS)) | t.event.isnull())
    pairs = t.group_by(["campaign_id", "customer_id"]).aggregate(has_sent=(t.event == "sent").any())
    orphans = pairs.filter(~pairs.has_sent)
    # both checks in one query; the details of a failed check are only looked up when it fails
    found = execute(unknown.aggregate(n_unknown=unknown.count()).cross_join(orphans.aggregate(n_orphans=orphans.count())))
    n_unknown = int(found["n_unknown"].iloc[0] or 0)
    if n_unknown:
        total = int(execute(t.aggregate(n=t.count()))["n"].iloc[0])
        values = execute(unknown.group_by("event").aggregate(n=unknown.count()).order_by(ibis.desc("n")).limit(5))
        shown = ", ".join(f"{r.event!r} ({r.n:,})" for r in values.itertuples())
        raise SchemaError(f"email_events.event: {n_unknown:,} of {total:,} rows have a value outside {list(EMAIL_EVENTS)}: {shown}")
    n = int(found["n_orphans"].iloc[0] or 0)
    if n:
        total = int(execute(pairs.aggregate(n=pairs.count()))["n"].iloc[0])
        # the first (alphabetical) event of each example e-mail: looked up only now, it costs the check a text aggregate
        with_event = t.group_by(["campaign_id", "customer_id"]).aggregate(has_sent=(t.event == "sent").any(), first_event=t.event.min())
        examples = execute(with_event.filter(~with_event.has_sent).order_by(["campaign_id", "customer_id"]).limit(3))
        shown = "; ".join(f"campaign_id {r.campaign_id!r}, customer_id {r.customer_id!r}: {r.first_event}" for r in examples.itertuples())
        raise EngagementError(
            f"email_events: {n:,} of {total:,} e-mails (campaign, customer) have events but no 'sent' event (e.g. {shown}); "
            "export the sends too, or the rates over sent are meaningless"
        )


# ----------------------------------------------------------------------------- e-mail


def _email_window(t, observation_start, observation_end):
    """Events on or before the end, of campaigns whose first send falls in the window (a campaign is never cut in two)."""
    s, e = _day(observation_start, "observation_start"), _day(observation_end, "observation_end")
    if s is not None and e is not None and s > e:
        raise EngagementError(f"observation_start {s.date()} is after observation_end {e.date()}")
    if e is not None:
        t = t.filter(t.timestamp < ibis.literal(e + pd.Timedelta(days=1)))
    if s is not None:
        first = t.group_by("campaign_id").aggregate(first_send=t.timestamp.min(where=t.event == "sent"))
        keep = first.filter(first.first_send >= ibis.literal(s))
        t = t.semi_join(keep, "campaign_id")
    return t


def email_metrics(email_events: pd.DataFrame, *, by="campaign_id", unique: bool = True, implied_opens: bool = True,
                  observation_start=None, observation_end=None) -> pd.DataFrame:
    """One row per group: sent, delivered, bounces, opens, clicks, unsubscribes, complaints and their rates (%).

    Definitions: see the module docstring and ``EMAIL_RATES``. ``by`` is
    ``"campaign_id"`` (default), ``"month"`` (calendar month of the campaign's
    first send; every event of a campaign counts in that month), another
    email_events column that is constant within each e-mail, such as
    ``"campaign_name"``, a list of these, or None
    (one row, ``"all"``). Counts are unique per e-mail (campaign x customer);
    ``unique=False`` counts every event row (and adds ``openers``/``clickers``,
    the unique counts click-to-open uses). ``implied_opens`` counts a click
    without a recorded open as an open. Rates with a zero denominator are
    missing (NaN) and ``note`` says why. With ``by="month"`` every month from
    the first to the last campaign has a row, months without a campaign too.
    The window keeps campaigns first sent on or after ``observation_start``
    and events on or before ``observation_end`` (whole days; None: no limit).
    Raises ``EngagementError`` when an e-mail has events but no 'sent' event.
    """
    _require(email_events, "email_events", _EMAIL_COLUMNS)
    keys = [] if by is None else [by] if isinstance(by, str) else list(by)
    bad = [k for k in keys if k != "month" and k not in email_events.columns]
    if bad:
        raise EngagementError(f"by: {bad} is neither 'month' nor a column of email_events ({list(email_events.columns)})")
    extra = [k for k in keys if k not in ("month", "campaign_id", "customer_id")]
    t = as_table(email_events, list(dict.fromkeys([*_EMAIL_COLUMNS, *extra])))
    _check_sends(t, email_events)
    t = _email_window(t, observation_start, observation_end)

    per_email = {}
    for col, events in _COUNT_EVENTS.items():
        hit = t.event.isin(list(events))
        per_email[f"any_{col}"] = hit.any()
        if not unique:  # event rows are counted only then (at 12M events the counts doubled the aggregation's memory)
            per_email[f"n_{col}"] = hit.sum()
    pairs = t.group_by(["campaign_id", "customer_id"]).aggregate(**per_email, **{k: t[k].max() for k in extra})
    if "month" in keys:
        campaigns = t.group_by("campaign_id").aggregate(
            month=ibis.coalesce(t.timestamp.min(where=t.event == "sent"), t.timestamp.min()).truncate("M")
        )
        pairs = pairs.join(campaigns, "campaign_id")
    opened = (pairs.any_opens | pairs.any_clicks) if implied_opens else pairs.any_opens
    implied = pairs.any_clicks & ~pairs.any_opens
    agg = {}
    for col in _COUNT_EVENTS:
        agg[col] = pairs[f"any_{col}"].sum() if unique else pairs[f"n_{col}"].sum()
    agg["openers"] = opened.sum()
    agg["clickers"] = pairs.any_clicks.sum()
    agg["opened_clickers"] = (pairs.any_clicks & opened).sum()  # click-to-open's numerator: clicked e-mails among the opened
    if implied_opens:  # an e-mail clicked without a recorded open adds one open
        agg["opens"] = opened.sum() if unique else pairs.n_opens.sum() + implied.sum()
    group = [pairs[k] for k in keys]
    counts = execute(pairs.group_by(group).aggregate(**agg) if keys else pairs.aggregate(**agg))
    return _finish_counts(counts, keys, unique)


def _finish_counts(counts: pd.DataFrame, keys: list[str], unique: bool) -> pd.DataFrame:
    cols = list(_COUNT_EVENTS) + ["openers", "clickers", "opened_clickers"]
    counts = counts.copy()
    for c in cols:
        counts[c] = pd.to_numeric(counts[c]).fillna(0).astype("int64")  # no e-mail in the window: one row of nulls (object)
    if "month" in keys:
        counts["month"] = pd.PeriodIndex(pd.to_datetime(counts["month"]), freq="M")
    if keys:
        counts = counts.set_index(keys).sort_index()
        if keys == ["month"] and len(counts):
            full = pd.period_range(counts.index.min(), counts.index.max(), freq="M", name="month")
            counts = counts.reindex(full, fill_value=0)
    else:
        counts.index = pd.Index(["all"], name="group")
    out = counts[list(_COUNT_EVENTS)].copy()
    if not unique:
        out["openers"], out["clickers"] = counts["openers"], counts["clickers"]
    sent = counts["sent"].astype(float).where(counts["sent"] > 0)
    delivered = counts["delivered"].astype(float).where(counts["delivered"] > 0)
    openers = counts["openers"].astype(float).where(counts["openers"] > 0)
    out["delivery_rate"] = 100 * counts["delivered"] / sent
    out["hard_bounce_rate"] = 100 * counts["hard_bounces"] / sent
    out["soft_bounce_rate"] = 100 * counts["soft_bounces"] / sent
    out["bounce_rate"] = 100 * (counts["hard_bounces"] + counts["soft_bounces"]) / sent
    out["open_rate"] = 100 * counts["opens"] / delivered
    out["click_through_rate"] = 100 * counts["clicks"] / delivered
    out["click_to_open_rate"] = 100 * counts["opened_clickers"] / openers
    out["unsubscribe_rate"] = 100 * counts["unsubscribes"] / delivered
    out["complaint_rate"] = 100 * counts["complaints"] / delivered
    note = np.select(
        [counts["sent"] == 0, counts["delivered"] == 0, counts["openers"] == 0],
        ["no e-mails sent: every rate is undefined",
         "no e-mails delivered: rates over delivered and click-to-open are undefined",
         "no e-mail opened: click-to-open is undefined"],
        default="",
    )
    out["note"] = note
    out.attrs["counting"] = "unique per e-mail (campaign x customer)" if unique else "every event row (openers and clickers unique)"
    return out


def flag_campaigns(metrics: pd.DataFrame, *, limits: dict[str, float] | None = None, min_sent: int = 100) -> pd.DataFrame:
    """Each campaign's status against upper limits on its rates: "flagged", "too small" or "ok", with the reasons.

    ``metrics`` comes from ``email_metrics``. ``limits`` maps a rate column to
    its upper limit in % (default ``DEFAULT_LIMITS``: hard bounce rate 2%,
    unsubscribe rate 0.5%, complaint rate 0.3%); a rate strictly above its
    limit flags the campaign. Campaigns with fewer than ``min_sent`` e-mails
    sent are "too small" to judge (a single unsubscribe among 50 e-mails is
    2%) and never flagged; a campaign large enough whose checked rate is
    undefined (nothing delivered) is flagged with that reason.
    """
    limits = dict(DEFAULT_LIMITS if limits is None else limits)
    unknown = sorted(set(limits) - set(EMAIL_RATES))
    if unknown:
        raise EngagementError(f"limits: {unknown} are not e-mail rates; use some of {list(EMAIL_RATES)}")
    bad = {k: v for k, v in limits.items() if not (isinstance(v, (int, float)) and 0 <= v <= 100)}
    if bad:
        raise EngagementError(f"limits must be percentages between 0 and 100, got {bad}")
    if min_sent < 0:
        raise EngagementError(f"min_sent must be 0 or more, got {min_sent}")
    _require(metrics, "metrics (from email_metrics)", ["sent", *limits])
    out = metrics[["sent", *limits]].copy()
    reasons = []
    for _, row in out.iterrows():
        why = []
        for rate, limit in limits.items():
            value = row[rate]
            if pd.isna(value):
                why.append(f"{rate} undefined (nothing delivered)" if row["sent"] else f"{rate} undefined (nothing sent)")
            elif value > limit:
                why.append(f"{rate} {value:.2f}% > {limit:g}%")
        reasons.append(why)
    small = out["sent"] < min_sent
    out["status"] = np.where(small, "too small", np.where([bool(w) for w in reasons], "flagged", "ok"))
    out["reasons"] = [f"fewer than {min_sent:,} e-mails sent" if s else "; ".join(w) for s, w in zip(small, reasons)]
    out.attrs["limits"] = limits
    return out


@dataclass(frozen=True)
class FatigueResult:
    """E-mail fatigue: unsubscribe rate by e-mails received recently, and the linear slope per extra e-mail."""

    table: pd.DataFrame
    slope: float
    ci_low: float
    ci_high: float
    p_value: float
    n: int
    window_days: int
    level: float = 0.95


def _wilson(k: np.ndarray, n: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    z = stats.norm.ppf(0.5 + level / 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / n
        centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
        half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / (1 + z**2 / n)
    return 100 * (centre - half), 100 * (centre + half)


def email_fatigue(email_events: pd.DataFrame, *, window_days: int = 30, max_recent: int = 5, level: float = 0.95,
                  observation_start=None, observation_end=None) -> FatigueResult:
    """Unsubscribe rate of delivered e-mails by how many e-mails the customer was sent in the ``window_days`` days before.

    For every delivered e-mail (campaign x customer), *recent e-mails* is the
    number of other e-mails sent to the same customer in the ``window_days``
    days before its send (its own send excluded; a send exactly
    ``window_days`` earlier counts). ``table`` has one row per number of recent
    e-mails (the last row, ``max_recent``+, pools the rest): delivered,
    unsubscribes, unsubscribe_rate = unsubscribes / delivered x 100 and its
    Wilson interval. ``slope`` is the least-squares change in unsubscribe rate,
    in percentage points, per additional recent e-mail (linear probability
    model on every delivered e-mail, uncapped counts), with a
    heteroskedasticity-robust (HC0, White 1980) interval and p-value; a
    positive slope is e-mail fatigue. It is missing when every e-mail had the
    same number of recent e-mails. Only e-mails sent between
    ``observation_start`` and ``observation_end`` are measured; earlier sends
    still count as recent e-mails.
    """
    _require(email_events, "email_events", _EMAIL_COLUMNS)
    if window_days < 1:
        raise EngagementError(f"window_days must be at least 1, got {window_days}")
    if max_recent < 1:
        raise EngagementError(f"max_recent must be at least 1, got {max_recent}")
    if not 0 < level < 1:
        raise EngagementError(f"level must be between 0 and 1, got {level}")
    t = as_table(email_events, list(_EMAIL_COLUMNS))
    _check_sends(t, email_events)
    s, e = _day(observation_start, "observation_start"), _day(observation_end, "observation_end")
    if s is not None and e is not None and s > e:
        raise EngagementError(f"observation_start {s.date()} is after observation_end {e.date()}")
    if e is not None:
        t = t.filter(t.timestamp < ibis.literal(e + pd.Timedelta(days=1)))
    emails = t.group_by(["campaign_id", "customer_id"]).aggregate(
        sent_at=t.timestamp.min(where=t.event == "sent"),
        delivered=(t.event == "delivered").any(),
        unsubscribed=(t.event == "unsubscribe").any(),
    )
    w = ibis.window(group_by=emails.customer_id, order_by=emails.sent_at, range=(-ibis.interval(days=window_days), 0))
    emails = emails.mutate(recent=emails.count().over(w) - 1)
    d = emails.filter(emails.delivered)
    if s is not None:
        d = d.filter(d.sent_at >= ibis.literal(s))
    counts = execute(d.group_by("recent").aggregate(delivered=d.count(), unsubscribes=d.unsubscribed.cast("int64").sum()))
    counts = counts.sort_values("recent").reset_index(drop=True)
    x = counts["recent"].to_numpy(float)
    n = counts["delivered"].to_numpy(float)
    k = counts["unsubscribes"].to_numpy(float)
    slope = lo = hi = p_value = np.nan
    total = n.sum()
    if total and len(counts) > 1:
        xbar = (x * n).sum() / total
        ybar = k.sum() / total
        sxx = ((x - xbar) ** 2 * n).sum()
        sxy = ((x - xbar) * (k - n * ybar)).sum()
        b = sxy / sxx
        fit = ybar + b * (x - xbar)
        # HC0: sum over e-mails of (x - xbar)^2 e^2 / sxx^2, grouped: unsubscribed (1 - fit)^2, others fit^2
        meat = ((x - xbar) ** 2 * (k * (1 - fit) ** 2 + (n - k) * fit**2)).sum()
        se = np.sqrt(meat) / sxx
        z = stats.norm.ppf(0.5 + level / 2)
        slope, lo, hi = 100 * b, 100 * (b - z * se), 100 * (b + z * se)
        p_value = float(2 * stats.norm.sf(abs(b / se))) if se > 0 else np.nan
    bucket = np.minimum(counts["recent"].to_numpy(), max_recent)
    table = counts.groupby(bucket)[["delivered", "unsubscribes"]].sum()
    table.index = pd.Index([f"{i}+" if i == max_recent else str(i) for i in table.index], name="recent_emails")
    table["unsubscribe_rate"] = 100 * table["unsubscribes"] / table["delivered"]
    low, high = _wilson(table["unsubscribes"].to_numpy(float), table["delivered"].to_numpy(float), level)
    table["ci_low"], table["ci_high"] = low, high
    return FatigueResult(table=table, slope=float(slope), ci_low=float(lo), ci_high=float(hi), p_value=float(p_value),
                         n=int(total), window_days=window_days, level=level)


# ----------------------------------------------------------------------------- product activity


def _product_table(product_events: pd.DataFrame, observation_start, observation_end, events):
    _require(product_events, "product_events", ["customer_id", "timestamp", "event"])
    df = _window(product_events[["customer_id", "timestamp", "event"]], "timestamp", observation_start, observation_end)
    if events is not None:
        events = [events] if isinstance(events, str) else list(events)
        if not events:
            raise EngagementError("events: give at least one event name, or None for every event")
        seen = set(product_events["event"].dropna().astype(str).unique())
        absent = [e for e in events if e not in seen]
        if absent:  # a typo would silently give zero actives
            shown = ", ".join(sorted(seen)[:12]) + (", ..." if len(seen) > 12 else "")
            raise EngagementError(f"events: {absent} never occur in product_events.event ({len(product_events):,} rows; "
                                  f"events present: {shown or 'none'})")
        df = df[df["event"].isin(events)]
    end = _day(observation_end, "observation_end")
    if end is None:
        end = product_events["timestamp"].max().normalize() if len(product_events) else None
    return df, end, events


def _period_key(ts, freq: str):
    if freq == "D":
        return ts.truncate("D")
    return ts.truncate("W" if freq == "W" else "M")


def _complete_periods(first: pd.Timestamp, end: pd.Timestamp, freq: str) -> pd.PeriodIndex:
    """Periods from the one containing ``first`` to the last one that ends on or before ``end``."""
    pfreq = {"D": "D", "W": "W-SUN", "M": "M"}[freq]
    last = pd.Period(end, freq=pfreq)
    if last.end_time.normalize() > end:
        last -= 1
    first_p = pd.Period(first, freq=pfreq)
    if last < first_p:
        return pd.PeriodIndex([], freq=pfreq)
    return pd.period_range(first_p, last, freq=pfreq)


def active_customers(product_events: pd.DataFrame, *, freq: str = "D", observation_start=None, observation_end=None,
                     events=None) -> pd.DataFrame:
    """Active customers per day (DAU), ISO week (WAU) or calendar month (MAU): customers with at least one product event in it.

    ``freq`` is "D", "W" (Monday to Sunday) or "M". Only periods that end on
    or before ``observation_end`` (default: the last event's day) are shown,
    so the last period is never a partial one; every period from the first
    event on has a row, periods without activity show 0. ``events`` limits
    activity to some event names (default: every event); a name that never
    occurs in product_events raises ``EngagementError`` (a typo would
    otherwise give zero actives), listing the names present. Returns
    ``active_customers`` and ``events`` (event rows) per period.
    """
    if freq not in _FREQS:
        raise EngagementError(f"freq must be one of {list(_FREQS)} (day, ISO week, calendar month), got {freq!r}")
    df, end, _ = _product_table(product_events, observation_start, observation_end, events)
    return _active_counts(df, end, observation_start, (freq,))[freq]


def _active_counts(df: pd.DataFrame, end, observation_start, freqs, t=None) -> dict[str, pd.DataFrame]:
    """``active_customers``' table for each of ``freqs``, from one query over ``t`` (the events of ``df``, converted once)."""
    out = {}
    for freq in freqs:
        pfreq = {"D": "D", "W": "W-SUN", "M": "M"}[freq]
        out[freq] = pd.DataFrame({"active_customers": pd.Series(dtype="int64"), "events": pd.Series(dtype="int64")},
                                 index=pd.PeriodIndex([], freq=pfreq, name="period"))
    if df.empty or end is None:
        return out
    if t is None:
        t = as_table(df, ["customer_id", "timestamp"])
    parts = [t.group_by(_period_key(t.timestamp, freq).name("start"))
             .aggregate(active_customers=t.customer_id.nunique(), events=t.count()) for freq in freqs]
    if len(parts) > 1:  # one query: part i holds the counts per period of freqs[i]
        found = execute(ibis.union(*[p.mutate(part=ibis.literal(i)) for i, p in enumerate(parts)], distinct=False))
    else:
        found = execute(parts[0]).assign(part=0)
    first = _day(observation_start, "observation_start") or df["timestamp"].min().normalize()
    for i, freq in enumerate(freqs):
        pfreq = {"D": "D", "W": "W-SUN", "M": "M"}[freq]
        counts = found.loc[found["part"] == i, ["start", "active_customers", "events"]]
        periods = _complete_periods(first, end, freq)
        counts.index = pd.PeriodIndex(pd.to_datetime(counts["start"]), freq=pfreq)
        table = counts[["active_customers", "events"]].reindex(periods, fill_value=0).astype("int64")
        table.index.name = "period"
        out[freq] = table
    return out


def stickiness(product_events: pd.DataFrame, *, method: str = "calendar", window_days: int = 30, observation_start=None,
               observation_end=None, events=None) -> pd.DataFrame:
    """Stickiness (DAU/MAU, %) per complete calendar month.

    ``method="calendar"`` (default): mean daily active customers over the
    month's days (days without activity count as 0) divided by the customers
    active in the calendar month, x 100. ``method="rolling"``: the mean over
    the month's days of DAU divided by the customers active in the trailing
    ``window_days`` days ending that day, x 100 (days with no one active in the
    trailing window are left out). Returns mean_dau, mau (calendar: customers
    active in the month; rolling: mean trailing-window actives), stickiness_pct
    and note (why a month's stickiness is missing).
    """
    if method not in ("calendar", "rolling"):
        raise EngagementError(f"method must be 'calendar' (DAU / calendar-month MAU) or 'rolling' (DAU / trailing-window MAU), got {method!r}")
    if window_days < 1:
        raise EngagementError(f"window_days must be at least 1, got {window_days}")
    df, end, _ = _product_table(product_events, observation_start, observation_end, events)
    t = as_table(df, ["customer_id", "timestamp"]) if len(df) and end is not None else None  # converted once for every count below
    both = _active_counts(df, end, observation_start, ("D", "M"), t)
    daily, monthly = both["D"], both["M"]  # active_customers(..., freq="D") and (..., freq="M"), from one query
    cols = ["mean_dau", "mau", "stickiness_pct", "note"]
    if monthly.empty:
        return pd.DataFrame(columns=cols, index=pd.PeriodIndex([], freq="M", name="month"))
    daily = daily[daily.index.asfreq("M") <= monthly.index.max()]
    month_of_day = daily.index.asfreq("M")
    mean_dau = daily["active_customers"].groupby(month_of_day).mean().reindex(monthly.index)
    if method == "calendar":
        mau = monthly["active_customers"].astype(float)
        ratio = 100 * mean_dau / mau.where(mau > 0)
    else:
        rolling = _rolling_actives(t, daily.index, window_days)
        day_ratio = daily["active_customers"] / rolling.where(rolling > 0)
        mau = rolling.groupby(month_of_day).mean().reindex(monthly.index)
        ratio = 100 * day_ratio.groupby(month_of_day).mean().reindex(monthly.index)
    out = pd.DataFrame({"mean_dau": mean_dau, "mau": mau, "stickiness_pct": ratio})
    out["note"] = np.where(out["stickiness_pct"].isna(), "no active customers in the month", "")
    out.index.name = "month"
    return out


def _rolling_actives(events, days: pd.PeriodIndex, window_days: int) -> pd.Series:
    """Customers with an event in the ``window_days`` days ending each day (inclusive), via non-overlapping cover intervals.

    ``events``: product events (a frame or an Ibis table) with customer_id and timestamp.
    """
    t = as_table(events, ["customer_id", "timestamp"])
    act = t.select(customer_id=t.customer_id, day=t.timestamp.truncate("D")).distinct()
    w = ibis.window(group_by=act.customer_id, order_by=act.day)
    nxt = act.day.lead().over(w)
    reach = act.day + ibis.interval(days=window_days)
    act = act.mutate(stop=ibis.ifelse(nxt.isnull() | (nxt > reach), reach, nxt))
    # starts (part 0) and stops (part 1) per day in one query: the cover intervals are worked out once
    both = execute(ibis.union(act.group_by("day").aggregate(n=act.count()).mutate(part=ibis.literal(0)),
                              act.group_by(act.stop.name("day")).aggregate(n=act.count()).mutate(part=ibis.literal(1)), distinct=False))
    starts = both.loc[both["part"] == 0, ["day", "n"]]
    stops = both.loc[both["part"] == 1, ["day", "n"]]
    delta = (pd.Series(starts["n"].to_numpy(), index=pd.to_datetime(starts["day"])).groupby(level=0).sum()
             .sub(pd.Series(stops["n"].to_numpy(), index=pd.to_datetime(stops["day"])).groupby(level=0).sum(), fill_value=0))
    if delta.empty:
        return pd.Series(0.0, index=days)
    full = pd.date_range(min(delta.index.min(), days.start_time.min()), max(delta.index.max(), days.end_time.max().normalize()), freq="D")
    level = delta.reindex(full, fill_value=0).cumsum()
    return pd.Series(level.reindex(days.start_time).to_numpy(float), index=days)


def feature_adoption(product_events: pd.DataFrame, *, observation_start=None, observation_end=None, customers: pd.DataFrame | None = None,
                     events=None) -> pd.DataFrame:
    """Per event name: customers who used it at least once in the window, as % of the base, and uses per user.

    The base is the customers with any product event in the window (default),
    or, given ``customers``, every customer who signed up on or before the
    window's end. ``events`` lists the events to report (default: every
    event seen); a listed event nobody used gets 0. Returns users, base,
    adoption_pct = users / base x 100, uses (event rows) and uses_per_user,
    sorted by users, then uses, then event name (so the order never depends on the input's).
    """
    df, end, wanted = _product_table(product_events, observation_start, observation_end, None)
    t = as_table(df, ["customer_id", "event"])
    per = execute(t.group_by("event").aggregate(users=t.customer_id.nunique(), uses=t.count())).set_index("event")
    if customers is not None:
        _require(customers, "customers", ["customer_id", "signup_date"])
        base = int((customers["signup_date"] <= end).sum()) if end is not None else len(customers)
    else:
        base = int(execute(t.aggregate(n=t.customer_id.nunique()))["n"].iloc[0] or 0)
    if events is not None:
        wanted = [events] if isinstance(events, str) else list(events)
        per = per.reindex(wanted, fill_value=0)
    out = per[["users"]].astype("int64")
    out["base"] = base
    out["adoption_pct"] = 100 * out["users"] / base if base else np.nan
    out["uses"] = per["uses"].astype("int64")
    out["uses_per_user"] = out["uses"] / out["users"].where(out["users"] > 0)
    out.index.name = "event"
    return out.sort_values(["users", "uses", "event"], ascending=[False, False, True], kind="stable")  # ties: by name


# ----------------------------------------------------------------------------- plots


def plot_email_rates(metrics: pd.DataFrame, *, rates=("open_rate", "click_through_rate", "click_to_open_rate"), ax=None,
                     title: str = "E-mail rates"):
    """E-mail rates (%) per group of ``email_metrics`` (months or campaigns on x), one line per rate."""
    from .plots import new_ax

    ax = new_ax(ax)
    x = metrics.index.to_timestamp() if isinstance(metrics.index, pd.PeriodIndex) else [str(i) for i in metrics.index]
    for rate in rates:
        num, den, _ = EMAIL_RATES[rate]
        ax.plot(x, metrics[rate].to_numpy(float), marker="o", markersize=3, label=f"{rate.replace('_', ' ')} ({num} / {den})")
    ax.set(title=title, xlabel="month" if isinstance(metrics.index, pd.PeriodIndex) else str(metrics.index.name), ylabel="rate (%)")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    return ax


def plot_fatigue(result: FatigueResult, *, ax=None):
    """Unsubscribe rate (%) with its interval by the number of e-mails received in the window before."""
    from .plots import new_ax

    ax = new_ax(ax)
    table = result.table
    y = table["unsubscribe_rate"].to_numpy(float)
    err = np.vstack([y - table["ci_low"].to_numpy(float), table["ci_high"].to_numpy(float) - y])
    ax.bar(table.index.astype(str), y, yerr=err, capsize=4)
    ax.set(title=f"E-mail fatigue: unsubscribe rate by e-mails sent in the previous {result.window_days} days",
           xlabel=f"e-mails sent to the customer in the previous {result.window_days} days", ylabel="unsubscribe rate (% of delivered)")
    return ax


def plot_active_customers(daily: pd.DataFrame, weekly: pd.DataFrame, monthly: pd.DataFrame, *, ax=None):
    """DAU, WAU and MAU (from ``active_customers``) on one time axis, each drawn over its period."""
    from .plots import new_ax

    ax = new_ax(ax)
    for label, frame in (("monthly (MAU)", monthly), ("weekly (WAU)", weekly), ("daily (DAU)", daily)):
        if len(frame):
            ax.step(frame.index.start_time, frame["active_customers"].to_numpy(), where="post", label=label, linewidth=1)
    ax.set(title="Active customers per day, ISO week and calendar month", xlabel="date", ylabel="active customers")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    return ax
