"""Onboarding and activation: activation rate, time to activation and to first value, trial conversion, the onboarding funnel.

Definitions (the same words the reports show):

* **Activation window**: the ``window_days`` days (14 by default) from the
  sign-up day (day 0, from midnight). A customer's window has *elapsed* when
  it ends on or before the observation end; customers whose window has not
  elapsed are **excluded from every rate's denominator and counted**
  (``window_open``): they may still activate.
* **Activated**: every configured condition holds within the window. A
  condition is "at least k events named e" (``criteria={"page_view": 3,
  "click": 5, "create_wishlist": 1}``: 3+ page views, 5+ clicks and the key
  feature used once). **Activation time**: the moment the last condition was
  first met (the k-th event of the slowest condition).
* **Activation rate**: activated customers as % of the customers whose window
  has elapsed, per sign-up cohort (calendar month by default) and channel.
* **Time to activation**: days from the sign-up day to the activation time,
  among activated customers (at most ``window_days`` by construction).
* **Time to first value**: days from the sign-up day to the first purchase
  (refunds are not purchases) or the first key event (``key_events``),
  whichever comes first, within ``within_days`` days of sign-up; customers
  whose ``within_days`` have not elapsed are excluded and counted. The
  distribution (median, quartiles, 90th percentile) is over the customers
  who reached it; ``reached_pct`` is their share of the eligible customers.
* **Trial-to-paid conversion**: trials are subscriptions with plan
  ``"trial"``. A trial converts when the same customer starts a paid
  (non-trial) subscription on or after the trial's start and no later than
  ``grace_days`` (7) days after the trial's end. Trials that have not
  converted and are still running, or whose grace period has not elapsed at
  the observation end, are pending: excluded from the denominator and counted. The other convention,
  ``grace_days=None``, counts a paid subscription started at any time after
  the trial (ended trials are then all decided).
* **Onboarding funnel**: of the customers whose window has elapsed, those who
  reached each step within the window, each step at or after the previous
  one (``ordered=True``; ``ordered=False`` only asks that every step up to
  this one happened in the window, in any order). Conversion from the
  previous step = customers at this step as % of those at the previous one;
  drop-off = those lost, and their % of the previous step. Conversion between
  any two steps: customers at the later step as % of those at the earlier.
* **Retention by activation**: per month k after sign-up (a month is 30.44
  days; month 1 = days [0, 30.44)), the customers with a purchase in month k
  as % of those whose month k has elapsed, for activated and not activated
  customers (only customers whose activation window has elapsed), with
  Wilson 95% intervals; the lift is the difference in points, with
  Newcombe's hybrid score interval.

Event-level aggregation (product events, transactions) is an Ibis expression
run by ``clm_helpers.engine``; per-customer results are small pandas frames.
"""

from __future__ import annotations

import ibis
import numpy as np
import pandas as pd
from scipy import stats

from . import engine
from .data import ClmError, SchemaError
from .engine import as_table, execute

__all__ = [
    "OnboardingError",
    "DEFAULT_CRITERIA",
    "DEFAULT_STEPS",
    "DAYS_PER_MONTH",
    "activation",
    "activation_rate",
    "time_to_first_value",
    "time_summary",
    "trial_conversion",
    "funnel",
    "step_conversion",
    "retention_by_activation",
    "activation_lift",
    "plot_activation_rate",
    "plot_time_distribution",
    "plot_funnel",
    "plot_retention_by_activation",
]

#: Default activation criteria: at least this many events of each name within the window.
DEFAULT_CRITERIA = {"page_view": 3, "click": 5, "create_wishlist": 1}
#: Default onboarding funnel steps (product event names), in order.
DEFAULT_STEPS = ("onboarding_start", "profile_completed", "first_search", "first_add_to_cart")
#: Days in a month after sign-up: 365.25 / 12.
DAYS_PER_MONTH = 365.25 / 12
UNKNOWN = "(unknown)"
_PANDAS_FREQ = {"W": "W-SUN", "M": "M", "Q": "Q", "Y": "Y"}
PERIODS = {"W": "ISO week (Monday to Sunday)", "M": "calendar month", "Q": "calendar quarter", "Y": "calendar year", "all": "the whole window"}


class OnboardingError(ClmError, ValueError):
    """An onboarding metric was asked for something the data or the options cannot give."""


# ----------------------------------------------------------------------------- checks
def _mem(df: pd.DataFrame, columns):
    """An Ibis table of some columns of a pandas frame (``engine.as_table``: only those columns are converted; attrs are left out)."""
    return as_table(df, columns)



def _require(df, table: str, columns) -> None:
    if not isinstance(df, pd.DataFrame):
        raise OnboardingError(f"{table}: expected a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise SchemaError(f"{table}: missing column(s) {missing}; it has {list(df.columns)}")


def _day(value, what: str) -> pd.Timestamp | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        return pd.Timestamp(value).normalize()
    except (ValueError, TypeError) as exc:
        raise OnboardingError(f"{what} must be a date such as 2024-12-31, got {value!r}") from exc


def _whole(value, what: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise OnboardingError(f"{what} must be a whole number, at least {minimum}, got {value!r}")
    return int(value)


def _check_period(period) -> None:
    if period not in PERIODS:
        raise OnboardingError(f"period must be one of {list(PERIODS)} ({', '.join(PERIODS.values())}), got {period!r}")


def _check_customers(customers: pd.DataFrame) -> None:
    _require(customers, "customers", ["customer_id", "signup_date"])
    dup = customers["customer_id"].duplicated(keep=False)
    if dup.any():
        shown = ", ".join(map(repr, customers.loc[dup, "customer_id"].unique()[:3]))
        raise SchemaError(f"customers.customer_id: {int(dup.sum()):,} of {len(customers):,} rows share an identifier with another row (e.g. {shown})")
    bad = customers["signup_date"].isna()
    if bad.any():
        shown = ", ".join(map(repr, customers.loc[bad, "customer_id"].head(3)))
        raise SchemaError(f"customers.signup_date: {int(bad.sum()):,} of {len(customers):,} rows have no date (e.g. customer_id {shown})")


def _end(observation_end, *frames_and_columns) -> pd.Timestamp:
    """The observation end: given, else the latest day in the given (frame, column) pairs."""
    end = _day(observation_end, "observation_end")
    if end is not None:
        return end
    days = [df[col].max() for df, col in frames_and_columns if df is not None and len(df)]
    days = [d for d in days if pd.notna(d)]
    if not days:
        raise OnboardingError("the tables are empty: give observation_end")
    return max(days).normalize()


def _base(customers: pd.DataFrame, start, end: pd.Timestamp, days: float) -> pd.DataFrame:
    """Customers signed up in [start, end]: customer_id, signup (midnight), horizon (signup + days), eligible (horizon
    elapsed), and ``row``, each one's position in ``customers``."""
    s = _day(start, "observation_start")
    if s is not None and s > end:
        raise OnboardingError(f"observation_start {s.date()} is after observation_end {end.date()}")
    signup = customers["signup_date"].dt.normalize().astype("datetime64[us]")
    keep = signup <= end
    if s is not None:
        keep &= signup >= s
    cust = customers.loc[keep]
    out = pd.DataFrame({"customer_id": cust["customer_id"].astype(str).to_numpy(), "signup": signup[keep].to_numpy()})
    out["horizon"] = out["signup"] + pd.Timedelta(days=days)
    out["eligible"] = _elapsed(out["signup"], days, end)
    out["row"] = np.flatnonzero(keep.to_numpy())
    return out


def _elapsed(signup: pd.Series, days: float, end: pd.Timestamp) -> pd.Series:
    """Whether the ``days`` after each sign-up day had all passed by the end of day ``end``."""
    return signup + pd.Timedelta(days=days) <= end + pd.Timedelta(days=1)


def _extra_columns(customers: pd.DataFrame, rows) -> pd.DataFrame:
    """The customers' descriptive columns (channel, country, ...) of the customers at positions ``rows`` (``_base``'s
    ``row``), missing channel as (unknown). By position, not by id: no index of a million text ids is built."""
    cols = [c for c in customers.columns if c not in ("customer_id", "signup_date")]
    extra = customers[cols].iloc[np.asarray(rows, dtype=np.int64)]
    if "acquisition_channel" in extra.columns:
        ch = extra["acquisition_channel"].astype(object)
        extra["acquisition_channel"] = ch.where(ch.notna() & (ch.astype(str).str.strip() != ""), UNKNOWN).astype(str)
    return extra.reset_index(drop=True)


def _numbered(base: pd.DataFrame):
    """``base`` for the engine, each customer numbered by their row (``cix``): queries group and sort that integer,
    not the text id, and their per-customer results go back to ``base`` by position (``_placed``)."""
    return _mem(base.assign(cix=np.arange(len(base), dtype=np.int64)), ["customer_id", "signup", "horizon", "cix"])


def _placed(base: pd.DataFrame, found: pd.DataFrame) -> pd.DataFrame:
    """``base`` with the columns of ``found`` (at most one row per ``cix``) placed at those rows; the other rows
    get missing values (NaT, NaN; numbers as float), as a left join on the customer would give them."""
    per = base.copy()
    rows = found["cix"].to_numpy(np.int64)
    for column in found.columns.drop("cix"):
        values = found[column]
        if values.dtype.kind == "M":
            placed = pd.Series(pd.NaT, index=per.index, dtype=values.dtype)
        elif values.dtype.kind in "iufb":
            placed = pd.Series(np.nan, index=per.index, dtype="float64")
        else:
            placed, values = pd.Series(np.nan, index=per.index, dtype=object), values.astype(object)
        placed.iloc[rows] = values.to_numpy()
        per[column] = placed
    return per


def _known_events(product_events: pd.DataFrame, names, what: str) -> None:
    """Every configured event name occurs in product_events (a typo would give 0% silently)."""
    t = _mem(product_events, ["event"])
    seen = set(execute(t.select("event").distinct())["event"].astype(str))
    absent = [n for n in names if n not in seen]
    if absent:
        shown = ", ".join(sorted(seen)[:12]) + (", ..." if len(seen) > 12 else "")
        raise OnboardingError(f"{what}: event(s) {absent} never occur in product_events.event ({len(product_events):,} rows; "
                              f"events present: {shown})")


# ----------------------------------------------------------------------------- activation


def _check_criteria(criteria) -> dict[str, int]:
    if not isinstance(criteria, dict) or not criteria:
        raise OnboardingError(f"criteria must be a non-empty dict of event name -> minimum count, e.g. {DEFAULT_CRITERIA}, got {criteria!r}")
    out = {}
    for name, k in criteria.items():
        if not isinstance(name, str) or not name.strip():
            raise OnboardingError(f"criteria: event names must be non-empty text, got {name!r}")
        out[name] = _whole(k, f"criteria[{name!r}] (the minimum count)")
    return out


def activation(customers: pd.DataFrame, product_events: pd.DataFrame, *, criteria: dict | None = None, window_days: int = 14,
               observation_start=None, observation_end=None) -> pd.DataFrame:
    """One row per customer signed up in the window: whether and when they activated.

    A customer is activated when every condition of ``criteria`` (event name
    -> minimum count; default ``DEFAULT_CRITERIA``) holds within
    ``window_days`` days of the sign-up day; the activation time is when the
    last condition was first met. ``eligible`` is False while the window has
    not elapsed at ``observation_end`` (default: the last product event day):
    such customers are excluded from rates and distributions, and counted.
    Events after ``observation_end`` are ignored. Columns: customer_id,
    signup_date, eligible, activated, activated_at, days_to_activation, one
    count per criterion (``n_<event>``), and the customers' other columns
    (acquisition_channel, country, ...; a missing channel is ``(unknown)``).
    """
    _check_customers(customers)
    _require(product_events, "product_events", ["customer_id", "timestamp", "event"])
    criteria = _check_criteria(DEFAULT_CRITERIA if criteria is None else criteria)
    window_days = _whole(window_days, "window_days")
    end = _end(observation_end, (product_events, "timestamp"))
    with engine.shared(product_events):  # the event names are checked on the table the query reads: converted once
        t = _mem(product_events, ["customer_id", "timestamp", "event"])
        _known_events(product_events, criteria, "criteria")
    base = _base(customers, observation_start, end, window_days)
    names = list(criteria)
    t = t.filter(t.event.isin(names) & (t.timestamp < ibis.literal(end + pd.Timedelta(days=1))))
    # the events numbered (0, 1, ... in criteria order) and the customers by their row in ``base``: the window below
    # sorts and the aggregation groups small integers, not text, and the result goes back to ``base`` by position, not
    # by a join on text ids (at 1M customers, 8.5M events in their windows: 11 -> 8.5 s, peak 1.48 -> 1.25 GB)
    t = t.mutate(ev=ibis.cases(*[(t.event == name, i) for i, name in enumerate(names)]).cast("int8"))
    j = t.join(_numbered(base), "customer_id")
    j = j.filter((j.timestamp >= j.signup) & (j.timestamp < j.horizon)).select("cix", "ev", "timestamp")
    j = j.mutate(rn=ibis.row_number().over(group_by=[j.cix, j.ev], order_by=j.timestamp))
    aggs = {}
    for i, (name, k) in enumerate(criteria.items()):
        aggs[f"n_{i}"] = j.count(where=j.ev == i)  # a count, not a sum of booleans (which engines widen to 128-bit)
        # the time of the k-th event (row_number counts from 0). A customer with fewer than k such events (n_i < k) is
        # not activated and their t_i is never read (``where(ok)`` below): it gets their first event's time instead of a
        # missing value, so the column has no nulls and comes back from the engine as timestamps, not Python objects
        aggs[f"t_{i}"] = ibis.coalesce(j.timestamp.min(where=(j.ev == i) & (j.rn == k - 1)), j.timestamp.min())
    per = _placed(base, execute(j.group_by("cix").aggregate(**aggs)))  # no event in the window: missing
    ok = pd.Series(True, index=per.index)
    times = []
    for i, (name, k) in enumerate(criteria.items()):
        per[f"n_{i}"] = per[f"n_{i}"].fillna(0).astype(np.int64)
        ok &= per[f"n_{i}"] >= k
        times.append(pd.to_datetime(per[f"t_{i}"], cache=False).astype("datetime64[us]"))  # cache=False: same result, no scan
    at = pd.concat(times, axis=1).max(axis=1).where(ok)
    out = pd.DataFrame({
        "customer_id": per["customer_id"],
        "signup_date": per["signup"],
        "eligible": per["eligible"].astype(bool),
        "activated": ok.astype(bool),
        "activated_at": at.astype("datetime64[us]"),
    })
    out["days_to_activation"] = (out["activated_at"] - out["signup_date"]).dt.total_seconds() / 86_400
    for i, name in enumerate(names):
        out[f"n_{name}"] = per[f"n_{i}"]
    out = pd.concat([out, _extra_columns(customers, per["row"])], axis=1)
    out.attrs.update(criteria=dict(criteria), window_days=window_days, observation_end=f"{end:%Y-%m-%d}",
                     window_open=int((~out["eligible"]).sum()))
    return out


def _groups(table: pd.DataFrame, by, period: str, date_column: str) -> tuple[pd.DataFrame, list[str]]:
    """The table with the grouping columns resolved ("cohort": the period of ``date_column``)."""
    if by is None:
        by = []
    elif isinstance(by, str):
        by = [by]
    by = list(by)
    t = table.copy()
    for col in by:
        if col == "cohort":
            t["cohort"] = t[date_column].dt.to_period(_PANDAS_FREQ[period]) if period != "all" else "all"
        elif col not in t.columns:
            raise OnboardingError(f"by: {col!r} is neither 'cohort' nor a column of the table; columns: {list(t.columns)}")
        else:
            t[col] = t[col].astype(object).where(t[col].notna(), UNKNOWN)
    if not by:
        t["group"] = "all"
        by = ["group"]
    return t, by


def _rate(num, den) -> np.ndarray:
    num, den = np.asarray(num, float), np.asarray(den, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, 100 * num / np.where(den > 0, den, 1), np.nan)


def activation_rate(activation_table: pd.DataFrame, *, by=("cohort",), period: str = "M", as_of=None) -> pd.DataFrame:
    """Activation rate per group: activated customers as % of those whose activation window has elapsed.

    ``by``: "cohort" (the sign-up period, ``period`` W, M, Q, Y or "all"),
    any column of the activation table (such as "acquisition_channel"), a
    list of these, or None (one row). Customers whose window is still open
    are excluded from the denominator and counted in ``window_open``.
    Columns: the groups, signed_up, window_open, eligible, activated,
    activation_rate, note (why a rate is missing).

    ``as_of`` (a day no later than the table's observation end) gives the
    rates as they stood at the end of that day: later sign-ups are left out,
    and a customer is eligible only if their window had elapsed by then. The
    figures equal those of an ``activation`` table computed to ``as_of``: a
    customer's activation reads only the events of their own window, and for
    an eligible customer all of them had happened by ``as_of``. (So one table
    serves two comparison windows.)
    """
    _require(activation_table, "activation table", ["signup_date", "eligible", "activated"])
    _check_period(period)
    if as_of is not None:
        activation_table = _as_of(activation_table, as_of)
    t, by = _groups(activation_table, by, period, "signup_date")
    t = t.assign(_act=t["activated"] & t["eligible"], _open=~t["eligible"])
    g = t.groupby(by, sort=True)
    out = pd.DataFrame({"signed_up": g.size(), "window_open": g["_open"].sum(), "eligible": g["eligible"].sum(), "activated": g["_act"].sum()})
    out = out.astype(np.int64)
    out["activation_rate"] = _rate(out["activated"], out["eligible"])
    out["note"] = np.where(out["eligible"] > 0, "", "every customer's activation window is still open")
    return out.reset_index()


def _as_of(activation_table: pd.DataFrame, as_of) -> pd.DataFrame:
    """The sign-ups up to ``as_of`` with their eligibility at its end (see ``activation_rate``)."""
    day = _day(as_of, "as_of")
    attrs = activation_table.attrs
    if "window_days" not in attrs or "observation_end" not in attrs:
        raise OnboardingError("as_of needs the activation table's window_days and observation_end (attrs), as activation() gives it")
    table_end = pd.Timestamp(attrs["observation_end"])
    if day > table_end:
        raise OnboardingError(f"as_of {day.date()} is after the activation table's observation_end {table_end.date()}: "
                              f"compute the table to {day.date()} or later")
    signup = activation_table["signup_date"]
    t = activation_table.loc[signup <= day]
    return t.assign(eligible=_elapsed(t["signup_date"], attrs["window_days"], day).to_numpy(bool))


# ----------------------------------------------------------------------------- time to value


def time_to_first_value(customers: pd.DataFrame, *, transactions: pd.DataFrame | None = None, product_events: pd.DataFrame | None = None,
                        key_events=("create_wishlist",), within_days: int = 30, observation_start=None, observation_end=None) -> pd.DataFrame:
    """One row per customer: the first value (first purchase or key event) within ``within_days`` of sign-up, and when.

    First value is the earliest of the first purchase (amount of 0 or more;
    refunds are not purchases) and the first event named in ``key_events``,
    on or after the sign-up day and before ``within_days`` days after it.
    ``eligible`` is False while those days have not elapsed at
    ``observation_end`` (default: the latest day in the tables given).
    Columns: customer_id, signup_date, eligible, first_value_at,
    days_to_first_value, source ("purchase" or the event), and the
    customers' other columns. Needs transactions, product_events or both.
    """
    _check_customers(customers)
    if transactions is None and product_events is None:
        raise OnboardingError("time_to_first_value needs transactions (first purchase), product_events (key events) or both")
    within_days = _whole(within_days, "within_days")
    if transactions is not None:
        _require(transactions, "transactions", ["customer_id", "timestamp", "amount"])
    if product_events is not None:
        _require(product_events, "product_events", ["customer_id", "timestamp", "event"])
        key_events = [key_events] if isinstance(key_events, str) else list(key_events)
        if not key_events:
            raise OnboardingError("key_events must name at least one product event when product_events is given")
        with engine.shared(product_events):  # the event names are checked on the table the query reads: converted once
            e = _mem(product_events, ["customer_id", "timestamp", "event"])
            _known_events(product_events, key_events, "key_events")
    end = _end(observation_end, (transactions, "timestamp"), (product_events, "timestamp"))
    base = _base(customers, observation_start, end, within_days)
    c = _numbered(base)
    limit = ibis.literal(end + pd.Timedelta(days=1))
    firsts = []
    if transactions is not None:
        t = _mem(transactions, ["customer_id", "timestamp", "amount"])
        t = t.filter((t.amount >= 0) & (t.timestamp < limit)).select("customer_id", "timestamp", source=ibis.literal("purchase"))
        firsts.append(t)
    if product_events is not None:
        e = e.filter(e.event.isin(key_events) & (e.timestamp < limit)).select("customer_id", "timestamp", source=e.event.cast("string"))
        firsts.append(e)
    ev = firsts[0] if len(firsts) == 1 else firsts[0].union(firsts[1])
    j = ev.join(c, "customer_id")
    j = j.filter((j.timestamp >= j.signup) & (j.timestamp < j.horizon)).select("cix", "timestamp", "source")
    j = j.mutate(rn=ibis.row_number().over(group_by=j.cix, order_by=[j.timestamp, j.source]))  # each one's earliest row
    per = _placed(base, execute(j.filter(j.rn == 0).select("cix", "timestamp", "source")))
    out = pd.DataFrame({
        "customer_id": per["customer_id"],
        "signup_date": per["signup"],
        "eligible": per["eligible"].astype(bool),
        "first_value_at": pd.to_datetime(per["timestamp"], cache=False).astype("datetime64[us]"),  # cache=False: same result, no scan
    })
    out["days_to_first_value"] = (out["first_value_at"] - out["signup_date"]).dt.total_seconds() / 86_400
    out["source"] = per["source"].astype(object).where(per["source"].notna(), "none")
    out = pd.concat([out, _extra_columns(customers, per["row"])], axis=1)
    out.attrs.update(within_days=within_days, observation_end=f"{end:%Y-%m-%d}", window_open=int((~out["eligible"]).sum()),
                     key_events=list(key_events) if product_events is not None else [])
    return out


def time_summary(table: pd.DataFrame, *, column: str, by=None, quantiles=(0.25, 0.5, 0.75, 0.9)) -> pd.DataFrame:
    """Distribution of a days column (time to activation, time to first value) over eligible customers, per group.

    Customers counted: those with ``eligible`` True. ``reached``: those with a
    value in ``column`` (activated, or reached first value);
    ``reached_pct``: % of the eligible. ``mean`` and the quantiles (p25,
    median, p75, p90 by default) are over the customers who reached it, in
    days; missing, with a note, where no one did. ``by``: None, a column or
    a list of columns (e.g. "acquisition_channel").
    """
    _require(table, "table", ["eligible", column])
    qs = tuple(quantiles)
    if not qs or any(not 0 < float(q) < 1 for q in qs):
        raise OnboardingError(f"quantiles must be numbers strictly between 0 and 1, got {quantiles!r}")
    t = table[table["eligible"].astype(bool)]
    t, groups = _groups(t, by, "M", "signup_date" if "signup_date" in t.columns else column)
    names = {q: ("median" if float(q) == 0.5 else f"p{round(float(q) * 100):02d}") for q in qs}
    rows = []
    for key, g in t.groupby(groups, sort=True):
        v = g[column].dropna().astype(float)
        row = dict(zip(groups, key if isinstance(key, tuple) else (key,)))
        row.update(customers=int(len(g)), reached=int(len(v)))
        row["reached_pct"] = float(_rate(len(v), len(g)))
        row["mean"] = float(v.mean()) if len(v) else np.nan
        for q in qs:
            row[names[q]] = float(v.quantile(float(q))) if len(v) else np.nan
        row["note"] = "" if len(v) else "no eligible customer reached it"
        rows.append(row)
    cols = groups + ["customers", "reached", "reached_pct", "mean"] + [names[q] for q in qs] + ["note"]
    return pd.DataFrame(rows, columns=cols)


# ----------------------------------------------------------------------------- trials


def trial_conversion(subscriptions: pd.DataFrame, *, period: str = "M", grace_days: int | None = 7, trial_plan: str = "trial",
                     observation_end=None) -> pd.DataFrame:
    """Trial-to-paid conversion per trial-start cohort: converted trials as % of decided trials.

    Trials are subscriptions whose plan is ``trial_plan``. A trial converts
    when the customer starts a paid (other plan) subscription on or after the
    trial's start and at most ``grace_days`` days after the trial's end
    (``None``: any time after the trial's start). A trial that has not
    converted is *pending* while it runs (no end date, or an end after
    ``observation_end``) or its grace period has not elapsed; pending trials
    are excluded from the denominator and counted. ``period``: cohort of the trial start (W, M, Q, Y or "all").
    Columns: cohort, trials, pending, decided, converted, conversion_rate,
    median_days_to_paid (from trial start, among converted), note.
    """
    _require(subscriptions, "subscriptions", ["customer_id", "start_date"])
    _check_period(period)
    if "plan" not in subscriptions.columns:
        raise OnboardingError("subscriptions has no plan column: trials are the rows with plan 'trial'")
    if grace_days is not None:
        grace_days = _whole(grace_days, "grace_days", minimum=0)
    end = _end(observation_end, (subscriptions, "start_date"))
    subs = pd.DataFrame({"customer_id": subscriptions["customer_id"].astype(str), "start": subscriptions["start_date"].dt.normalize(),
                         "end": subscriptions["end_date"].dt.normalize() if "end_date" in subscriptions.columns else pd.NaT,
                         "plan": subscriptions["plan"].astype(object)})
    subs = subs[subs["start"] <= end]
    is_trial = subs["plan"] == trial_plan
    trials = subs[is_trial].reset_index(drop=True)
    paid = subs[~is_trial & subs["plan"].notna()][["customer_id", "start"]].rename(columns={"start": "paid_start"})
    trials["end"] = trials["end"].where(trials["end"] <= end)  # an end after the observation end is not known yet
    if grace_days is None:
        trials["deadline"] = end  # a paid start at any time up to the observation end
        ended = trials["end"].notna()
    else:
        deadline = trials["end"] + pd.Timedelta(days=grace_days)
        ended = trials["end"].notna() & (deadline <= end)
        trials["deadline"] = deadline.fillna(end)  # still running: a paid start so far (an upgrade mid-trial) counts
    m = trials.reset_index().merge(paid, on="customer_id", how="inner")
    m = m[(m["paid_start"] >= m["start"]) & (m["paid_start"] <= m["deadline"])]
    first_paid = m.groupby("index")["paid_start"].min()
    trials["paid_start"] = first_paid.reindex(trials.index)
    trials["converted"] = trials["paid_start"].notna()
    trials["decided"] = trials["converted"] | ended
    trials["days_to_paid"] = (trials["paid_start"] - trials["start"]).dt.days.where(trials["converted"])
    trials["cohort"] = trials["start"].dt.to_period(_PANDAS_FREQ[period]) if period != "all" else "all"
    cols = ["cohort", "trials", "pending", "decided", "converted", "conversion_rate", "median_days_to_paid", "note"]
    if trials.empty:
        return pd.DataFrame(columns=cols)
    g = trials.groupby("cohort", sort=True)
    out = pd.DataFrame({"trials": g.size(), "decided": g["decided"].sum(), "converted": g["converted"].sum()}).astype(np.int64)
    out["pending"] = out["trials"] - out["decided"]
    out["conversion_rate"] = _rate(out["converted"], out["decided"])
    out["median_days_to_paid"] = g["days_to_paid"].median()
    out["note"] = np.where(out["decided"] == 0, "every trial is still pending",
                           np.where(out["converted"] == 0, "no converted trial: days to paid undefined", ""))
    out = out.reset_index()[cols]
    out.attrs.update(grace_days=grace_days, observation_end=f"{end:%Y-%m-%d}", trial_plan=trial_plan)
    return out


# ----------------------------------------------------------------------------- funnel


def funnel(customers: pd.DataFrame, product_events: pd.DataFrame, *, steps=DEFAULT_STEPS, window_days: int = 14, ordered: bool = True,
           include_signup: bool = True, observation_start=None, observation_end=None) -> pd.DataFrame:
    """The onboarding funnel: customers reaching each step within the window, conversion and drop-off per step.

    Base: customers signed up in the window whose ``window_days`` have elapsed
    at ``observation_end`` (default: the last product event day); the others
    are excluded and counted in ``attrs["window_open"]``. A customer reaches
    step k when they did steps 1..k within the window, each at or after the
    previous one (``ordered=True``) or in any order (``ordered=False``).
    ``include_signup`` puts the base ("signed up") as the first row.
    Columns (indexed by step): customers, pct_of_start (% of the first row),
    conversion_from_previous (%), drop_off (customers lost since the previous
    step), drop_off_pct (% of the previous step).
    """
    _check_customers(customers)
    _require(product_events, "product_events", ["customer_id", "timestamp", "event"])
    steps = [steps] if isinstance(steps, str) else list(steps)
    if not steps or any(not isinstance(s, str) or not s.strip() for s in steps):
        raise OnboardingError(f"steps must be a non-empty list of product event names, got {steps!r}")
    if len(set(steps)) != len(steps):
        raise OnboardingError(f"steps must not repeat an event, got {steps!r}")
    if include_signup and "signed up" in steps:
        raise OnboardingError("'signed up' is the name of the first row; rename that step or set include_signup=False")
    window_days = _whole(window_days, "window_days")
    end = _end(observation_end, (product_events, "timestamp"))
    with engine.shared(product_events):  # the event names are checked on the table the query reads: converted once
        t = _mem(product_events, ["customer_id", "timestamp", "event"])
        _known_events(product_events, steps, "steps")
    base = _base(customers, observation_start, end, window_days)
    eligible = base[base["eligible"]]
    c = _mem(eligible, ["customer_id", "signup", "horizon"])
    j = t.filter(t.event.isin(steps)).join(c, "customer_id")
    ev = j.filter((j.timestamp >= j.signup) & (j.timestamp < j.horizon))
    if ordered:
        # step k is reached at the first step-k event at or after the time step k-1 was reached
        prev = c.select("customer_id", t_prev=c.signup)
        parts = []
        for i, step in enumerate(steps):
            e = ev.filter(ev.event == step).select("customer_id", "timestamp")
            k = e.join(prev, "customer_id")
            k = k.filter(k.timestamp >= k.t_prev)
            prev = k.group_by("customer_id").aggregate(t_prev=k.timestamp.min())
            parts.append(prev.aggregate(step=ibis.literal(i), n=prev.count()))
        counts = execute(ibis.union(*parts) if len(parts) > 1 else parts[0])
        found = dict(zip(counts["step"].astype(int), counts["n"].fillna(0).astype(int)))
    else:
        flags = ev.group_by("customer_id").aggregate(**{f"s{i}": (ev.event == s).any() for i, s in enumerate(steps)})
        expr = {}
        for i in range(len(steps)):
            cond = flags["s0"]
            for q in range(1, i + 1):
                cond = cond & flags[f"s{q}"]
            expr[f"s{i}"] = cond.cast("int64").sum()
        counts = execute(flags.aggregate(**expr))
        found = {i: int(counts[f"s{i}"].iloc[0]) if pd.notna(counts[f"s{i}"].iloc[0]) else 0 for i in range(len(steps))}
    values = [found.get(i, 0) for i in range(len(steps))]
    names = (["signed up"] if include_signup else []) + steps
    if include_signup:
        values = [len(eligible)] + values
    out = pd.DataFrame({"customers": np.array(values, dtype=np.int64)}, index=pd.Index(names, name="step"))
    prev_counts = out["customers"].shift(1)
    out["pct_of_start"] = _rate(out["customers"], np.full(len(out), out["customers"].iloc[0]))
    out["conversion_from_previous"] = np.where(np.arange(len(out)) == 0, 100.0 if out["customers"].iloc[0] > 0 else np.nan,
                                               _rate(out["customers"], prev_counts.fillna(0)))
    out["drop_off"] = (prev_counts - out["customers"]).fillna(0).astype(np.int64)
    out["drop_off_pct"] = np.where(np.arange(len(out)) == 0, 0.0, _rate(out["drop_off"], prev_counts.fillna(0)))
    note = np.where(np.isnan(out["conversion_from_previous"].to_numpy(float)), "no customer at the previous step", "")
    out["note"] = note
    out.attrs.update(window_days=window_days, observation_end=f"{end:%Y-%m-%d}", ordered=bool(ordered), window_open=int((~base["eligible"]).sum()),
                     eligible=int(len(eligible)))
    return out


def step_conversion(funnel_table: pd.DataFrame, *, from_step: str | None = None, to_step: str | None = None) -> pd.DataFrame:
    """Conversion between any two steps of a funnel: customers at the later step as % of those at the earlier one.

    One row per pair (earlier, later) of steps, or only the pairs with the
    given ``from_step`` / ``to_step``. Where no customer reached the earlier
    step the conversion is missing with a note. Columns: from_step, to_step,
    from_customers, to_customers, conversion, note.
    """
    _require(funnel_table, "funnel table", ["customers"])
    steps = list(funnel_table.index)
    for name, value in (("from_step", from_step), ("to_step", to_step)):
        if value is not None and value not in steps:
            raise OnboardingError(f"{name} must be one of the funnel's steps {steps}, got {value!r}")
    if from_step is not None and to_step is not None and steps.index(from_step) >= steps.index(to_step):
        raise OnboardingError(f"to_step {to_step!r} must come after from_step {from_step!r} in the funnel {steps}")
    rows = []
    for i, a in enumerate(steps):
        for b in steps[i + 1:]:
            if (from_step is None or a == from_step) and (to_step is None or b == to_step):
                na, nb = int(funnel_table.at[a, "customers"]), int(funnel_table.at[b, "customers"])
                rows.append({"from_step": a, "to_step": b, "from_customers": na, "to_customers": nb,
                             "conversion": float(_rate(nb, na)), "note": "" if na else "no customer at the earlier step"})
    return pd.DataFrame(rows, columns=["from_step", "to_step", "from_customers", "to_customers", "conversion", "note"])


# ----------------------------------------------------------------------------- activation and retention


def _wilson(k, n, level=0.95) -> tuple[np.ndarray, np.ndarray]:
    k, n = np.asarray(k, float), np.asarray(n, float)
    z = stats.norm.ppf(0.5 + level / 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(n > 0, k / np.where(n > 0, n, 1), np.nan)
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return np.where(n > 0, centre - half, np.nan), np.where(n > 0, centre + half, np.nan)


def retention_by_activation(activation_table: pd.DataFrame, transactions: pd.DataFrame, *, months: int = 12, observation_end=None) -> pd.DataFrame:
    """Retention per month since sign-up for activated and not activated customers (activation window elapsed).

    Month k = days [(k-1) x 30.44, k x 30.44) after the sign-up day.
    Retention in month k: customers with a purchase (amount of 0 or more) in
    month k, % of the group's customers whose month k has elapsed at
    ``observation_end`` (default: the activation table's). Columns: group
    ("activated" / "not activated"), month, customers, retained,
    retention_rate, ci_low, ci_high (Wilson 95%), note.
    """
    _require(activation_table, "activation table", ["customer_id", "signup_date", "eligible", "activated"])
    _require(transactions, "transactions", ["customer_id", "timestamp", "amount"])
    months = _whole(months, "months")
    end = _day(observation_end, "observation_end") or _day(activation_table.attrs.get("observation_end"), "the activation table's observation_end")
    if end is None:
        end = _end(None, (transactions, "timestamp"))
    base = activation_table[activation_table["eligible"].astype(bool)][["customer_id", "signup_date", "activated"]].copy()
    base["customer_id"] = base["customer_id"].astype(str)
    base["signup"] = base["signup_date"].dt.normalize().astype("datetime64[us]")
    t = _mem(transactions, ["customer_id", "timestamp", "amount"])
    c = _mem(base, ["customer_id", "signup"])
    j = t.filter((t.amount >= 0) & (t.timestamp < ibis.literal(end + pd.Timedelta(days=1)))).join(c, "customer_id")
    j = j.mutate(days=(j.timestamp.epoch_seconds() - j.signup.epoch_seconds()) / 86_400.0)
    j = j.filter((j.days >= 0) & (j.days < months * DAYS_PER_MONTH))
    j = j.mutate(month=(j.days / DAYS_PER_MONTH).floor().cast("int64") + 1)
    active = execute(j.select("customer_id", "month").distinct())
    active["customer_id"] = active["customer_id"].astype(str)
    # months elapsed at the observation end, per customer: month k counts only when k <= elapsed
    base["elapsed"] = (end + pd.Timedelta(days=1) - base["signup"]).dt.total_seconds() / 86_400 / DAYS_PER_MONTH
    base["group"] = np.where(base["activated"], "activated", "not activated")
    active = active.merge(base[["customer_id", "elapsed", "group"]], on="customer_id")
    active = active[active["month"] <= active["elapsed"]]
    got = active.groupby(["group", "month"]).size()
    rows = []
    for label in ("activated", "not activated"):
        elapsed = base.loc[base["group"] == label, "elapsed"].to_numpy()
        for k in range(1, months + 1):
            rows.append({"group": label, "month": k, "customers": int((elapsed >= k).sum()), "retained": int(got.get((label, k), 0))})
    out = pd.DataFrame(rows)
    out["retention_rate"] = _rate(out["retained"], out["customers"])
    lo, hi = _wilson(out["retained"], out["customers"])
    out["ci_low"], out["ci_high"] = 100 * lo, 100 * hi
    out["note"] = np.where(out["customers"] > 0, "", "no customer whose month has elapsed")
    out.attrs.update(observation_end=f"{end:%Y-%m-%d}", months=months)
    return out


def activation_lift(curve: pd.DataFrame, *, month: int) -> pd.DataFrame:
    """Retention of activated minus not activated customers in one month, in points, with Newcombe's 95% interval.

    From ``retention_by_activation``. Newcombe (1998) method 10: the hybrid
    score interval built from the two groups' Wilson intervals. Missing, with
    a note, where either group has no customer. One row: month,
    activated_rate, not_activated_rate, lift_points, ci_low, ci_high,
    customers_activated, customers_not_activated, note.
    """
    _require(curve, "retention curve", ["group", "month", "customers", "retained"])
    month = _whole(month, "month")
    rows = curve[curve["month"] == month].set_index("group")
    if rows.empty:
        raise OnboardingError(f"month {month} is not in the retention curve (months 1-{int(curve['month'].max()) if len(curve) else 0})")
    a = rows.loc["activated"] if "activated" in rows.index else None
    b = rows.loc["not activated"] if "not activated" in rows.index else None
    na, nb = (int(a["customers"]) if a is not None else 0), (int(b["customers"]) if b is not None else 0)
    out = {"month": month, "customers_activated": na, "customers_not_activated": nb}
    if na == 0 or nb == 0:
        out.update(activated_rate=float(_rate(a["retained"], na)) if na else np.nan, not_activated_rate=float(_rate(b["retained"], nb)) if nb else np.nan,
                   lift_points=np.nan, ci_low=np.nan, ci_high=np.nan,
                   note="no activated customer whose month has elapsed" if na == 0 else "no customer without activation whose month has elapsed")
    else:
        p1, p2 = a["retained"] / na, b["retained"] / nb
        l1, u1 = _wilson(a["retained"], na)
        l2, u2 = _wilson(b["retained"], nb)
        d = p1 - p2
        lo = d - np.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
        hi = d + np.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
        out.update(activated_rate=100 * p1, not_activated_rate=100 * p2, lift_points=100 * d, ci_low=100 * float(lo), ci_high=100 * float(hi), note="")
    cols = ["month", "activated_rate", "not_activated_rate", "lift_points", "ci_low", "ci_high", "customers_activated", "customers_not_activated", "note"]
    return pd.DataFrame([out], columns=cols)


# ----------------------------------------------------------------------------- plots


def plot_activation_rate(rates: pd.DataFrame, *, by: str | None = "acquisition_channel", ax=None,
                         title: str = "Activation rate by sign-up cohort"):
    """Activation rate (%) per sign-up cohort (from ``activation_rate`` with by=["cohort", ...]), one line per ``by`` value."""
    from .plots import new_ax

    ax = new_ax(ax)
    groups = rates.groupby(by, sort=True) if by else [("all customers", rates)]
    for name, rows in groups:
        rows = rows.sort_values("cohort")
        x = rows["cohort"].dt.to_timestamp() if isinstance(rows["cohort"].dtype, pd.PeriodDtype) else rows["cohort"].astype(str)
        ax.plot(x, rows["activation_rate"].to_numpy(float), marker="o", markersize=2, label=str(name))
    ax.set(title=title, xlabel="sign-up cohort", ylabel="activated (% of eligible)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8, ncol=3)
    return ax


def plot_time_distribution(table: pd.DataFrame, *, column: str, ax=None, title: str, xlabel: str = "days since sign-up", bins: int = 30):
    """Histogram of a days column over eligible customers who reached it, with the median marked."""
    from .plots import new_ax

    ax = new_ax(ax)
    v = table.loc[table["eligible"].astype(bool), column].dropna().astype(float)
    if len(v):
        ax.hist(v, bins=bins)
        med = float(v.median())
        ax.axvline(med, color="black", linestyle="--", linewidth=1, label=f"median {med:.1f} days")
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no eligible customer reached it", ha="center", va="center", transform=ax.transAxes)
    ax.set(title=title, xlabel=xlabel, ylabel="customers")
    return ax


def plot_funnel(funnel_table: pd.DataFrame, *, ax=None, title: str = "Onboarding funnel"):
    """Horizontal bars of customers per funnel step, labelled with % of start and the drop-off from the previous step."""
    from .plots import new_ax

    ax = new_ax(ax)
    labels = [str(s) for s in funnel_table.index]
    y = funnel_table["customers"].to_numpy(float)
    ax.barh(labels, y)
    ax.invert_yaxis()
    for i, (n, pct, drop) in enumerate(zip(y, funnel_table["pct_of_start"], funnel_table["drop_off_pct"])):
        text = f"{n:,.0f} ({pct:.1f}%)" if pct == pct else f"{n:,.0f}"
        if i > 0 and drop == drop:
            text += f", lost {drop:.1f}% of previous"
        ax.annotate(text, (n, i), xytext=(4, 0), textcoords="offset points", va="center", fontsize=8)
    ax.set(title=title, xlabel="customers", ylabel="step")
    ax.set_xlim(0, max(y.max() * 1.45, 1) if len(y) else 1)
    return ax


def plot_retention_by_activation(curve: pd.DataFrame, *, ax=None, title: str = "Retention by month since sign-up: activated vs not"):
    """Retention (%) per month since sign-up for activated and not activated customers, with Wilson 95% bands."""
    from .plots import new_ax

    ax = new_ax(ax)
    for label, rows in curve.groupby("group", sort=True):
        rows = rows[rows["customers"] > 0]
        line = ax.plot(rows["month"], rows["retention_rate"], marker="o", markersize=3, label=label)[0]
        ax.fill_between(rows["month"], rows["ci_low"], rows["ci_high"], alpha=0.2, color=line.get_color())
    ax.set(title=title, xlabel="month since sign-up (30.44 days)", ylabel="customers with a purchase in the month (%)")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    return ax
