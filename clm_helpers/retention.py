"""Retention and churn: cohort retention, non-contractual churn, subscription churn and revenue retention, survival curves.

Definitions (the same words the reports show):

* **Acquisition cohort**: the customers whose first purchase (refunds are not
  purchases) fell in the same calendar month (or ISO week, or quarter).
* **Customer retention** of a cohort in period k since acquisition: customers
  of the cohort with a purchase in period k, as % of the cohort (period 0 is
  100% by definition). This is *classic* (N-period) retention; the other
  convention, *rolling* (unbounded) retention, counts customers with a
  purchase in period k **or any later observed period** (``method="rolling"``).
* **Revenue retention** of a cohort in period k: the cohort's net revenue
  (purchases minus refunds) in period k as % of its net revenue in period 0.
* Cells for periods not yet complete at the observation end are missing,
  not zero; an observed period in which no one of the cohort bought is 0.
* **Non-contractual churn** (inactivity rule): a customer has churned when
  they made no purchase in the ``window_days`` days (180 by default) up to
  the observation end (days since the last purchase >= ``window_days``).
  **Period churn rate**: customers active at the start of a period (a
  purchase in the ``window_days`` days before it) who then went
  ``window_days`` days without a purchase during the period, as % of those
  active at its start. The probabilistic view, P(alive) from a BG/NBD model
  (``clv``), is compared with the rule by ``compare_churn_views``.
* **Subscriptions** (contractual): a customer is a *paying subscriber* on a
  day when one of their subscriptions has started on or before it and not
  ended on or before it (plans in ``exclude_plans``, free trials by default,
  do not count). End dates after the observation end are unknown at that
  date: the subscription counts as running. **Logo churn** in a month:
  paying subscribers on its first day who are not paying subscribers on the
  first day of the next month, as % of those on its first day (the other
  convention divides by the average of the subscribers at the start and the
  end of the month: ``denominator="average"``). A customer's **MRR** on a day
  is the sum of the ``mrr`` of their running subscriptions.
* **Gross revenue retention (GRR)**: of the MRR of the paying subscribers on
  the first day of a month, the share still paid by the same customers
  ``months`` later (12: annual, the common convention; 1: monthly), each
  customer's MRR capped at its starting value (churn and contraction count,
  expansion does not), in %. **Net revenue retention (NRR)**: the same
  customers' MRR ``months`` later, expansion included, as % of their starting
  MRR. New customers are excluded from both.
* **Survival**: Kaplan-Meier estimates (``lifelines``) of the share of
  subscriptions (or customers) not yet churned t days after their start, with
  pointwise confidence bands (Greenwood's variance on the log(-log) scale),
  and the log-rank test of equal survival across groups.

Aggregations over transactions are Ibis expressions (``engine``); the
subscriptions table and per-period results are small pandas frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import ibis
import numpy as np
import pandas as pd

from .data import parse_day, require_columns, ClmError, SchemaError
from .engine import as_table, execute

__all__ = [
    "RetentionError",
    "PERIODS",
    "PERIOD_NAMES",
    "cohort_matrix",
    "cohort_percentages",
    "retention_curve",
    "customer_churn_status",
    "inactivity_churn",
    "compare_churn_views",
    "subscription_churn",
    "revenue_retention",
    "subscription_durations",
    "customer_lifetimes",
    "kaplan_meier",
    "survival_summary",
    "LogRankResult",
    "logrank_test",
    "plot_cohort_heatmap",
    "plot_retention_curve",
    "plot_churn",
    "plot_survival",
]

PERIODS = {"W": "ISO week (Monday to Sunday)", "M": "calendar month", "Q": "calendar quarter"}
#: Short names of the periods, for labels ("months since first purchase").
PERIOD_NAMES = {"W": "week", "M": "month", "Q": "quarter"}
_PANDAS_FREQ = {"W": "W-SUN", "M": "M", "Q": "Q"}


class RetentionError(ClmError, ValueError):
    """A retention metric was asked for something the data or the options cannot give."""


# ----------------------------------------------------------------------------- helpers


_require = require_columns  # the shared input check (clm_helpers.data)
_day = parse_day


def _check_period(period: str) -> None:
    if period not in PERIODS:
        raise RetentionError(f"period must be one of {list(PERIODS)} ({', '.join(PERIODS.values())}), got {period!r}")


def _check_window(window_days) -> None:
    if not isinstance(window_days, (int, np.integer)) or window_days < 1:
        raise RetentionError(f"window_days must be a whole number of days, at least 1, got {window_days!r}")


def _period_index(ts, period: str):
    """Integer index of the period holding an Ibis timestamp: months or quarters since year 0, weeks since 1969-12-29."""
    if period == "M":
        return ts.year() * 12 + ts.month() - 1
    if period == "Q":
        return ts.year() * 4 + (ts.month() - 1) // 3
    return (ts.epoch_seconds() // 86_400 + 3) // 7  # 1970-01-01 was a Thursday: +3 makes weeks start on Monday


def _index_of(day: pd.Timestamp, period: str) -> int:
    if period == "M":
        return day.year * 12 + day.month - 1
    if period == "Q":
        return day.year * 4 + (day.month - 1) // 3
    return (day - pd.Timestamp("1969-12-29")).days // 7


def _period_of(index: int, period: str) -> pd.Period:
    if period == "M":
        return pd.Period(year=int(index) // 12, month=int(index) % 12 + 1, freq="M")
    if period == "Q":
        return pd.Period(year=int(index) // 4, quarter=int(index) % 4 + 1, freq="Q")
    return pd.Period(pd.Timestamp("1969-12-29") + pd.Timedelta(weeks=int(index)), freq="W-SUN")


def _last_complete(end: pd.Timestamp, period: str) -> int:
    """Index of the last period that ends on or before ``end``."""
    return _index_of(end + pd.Timedelta(days=1), period) - 1


def _tx_end(transactions: pd.DataFrame, observation_end) -> pd.Timestamp:
    end = _day(observation_end, "observation_end")
    if end is None:
        if transactions.empty:
            raise RetentionError("transactions: the table is empty; there is nothing to measure")
        end = transactions["timestamp"].max().normalize()
    return end


# ----------------------------------------------------------------------------- cohorts


def cohort_matrix(transactions: pd.DataFrame, *, period: str = "M", value: str = "customers", method: str = "classic",
                  normalize: bool = True, observation_end=None) -> pd.DataFrame:
    """Cohort retention matrix: rows are acquisition cohorts, columns periods since acquisition (0, 1, ...).

    transactions needs customer_id, timestamp, amount (refunds are negative:
    they are not purchases, but they count in net revenue). A customer's cohort
    is the ``period`` ("M" calendar month, "W" ISO week, "Q" quarter) of their
    first purchase. ``value="customers"``: customers of the cohort with a
    purchase in the period (``method="classic"``), or in it or any later
    observed period (``method="rolling"``); ``value="revenue"``: the cohort's
    net revenue in the period (classic only). With ``normalize`` (default) each
    row is divided by its period 0 value and shown in % (period 0 = 100%);
    otherwise counts or money. Only periods complete at ``observation_end``
    (default: the last transaction's day) are used; later cells are missing
    (NaN), never zero. Every period from the first cohort to the last complete
    one has a row: a period in which nobody made a first purchase has a cohort
    of 0 (missing percentages, reason in ``attrs["notes"]``). Customers with
    only refunds are in no cohort (counted in the notes). Computed with Ibis.
    """
    _check_period(period)
    if value not in ("customers", "revenue"):
        raise RetentionError(f"value must be 'customers' or 'revenue', got {value!r}")
    if method not in ("classic", "rolling"):
        raise RetentionError(f"method must be 'classic' (active in period k) or 'rolling' (active in period k or later), got {method!r}")
    if value == "revenue" and method == "rolling":
        raise RetentionError("method='rolling' applies to value='customers' only; revenue retention is per period (classic)")
    _require(transactions, "transactions", ["customer_id", "timestamp", "amount"])
    end = _tx_end(transactions, observation_end)
    last = _last_complete(end, period)
    t = as_table(transactions, ["customer_id", "timestamp", "amount"])
    t = t.filter(t.timestamp < ibis.literal(end + pd.Timedelta(days=1)))
    t = t.mutate(p=_period_index(t.timestamp, period))
    t = t.filter(t.p <= last)
    purchases = t.filter(t.amount >= 0)
    first = purchases.group_by("customer_id").aggregate(cohort=purchases.p.min())
    notes = []
    if value == "customers":
        buys = t.filter(t.amount >= 0).join(first, "customer_id")
        if method == "classic":
            cells = buys.group_by([buys.cohort, (buys.p - buys.cohort).name("k")]).aggregate(v=buys.customer_id.nunique())
        else:
            per = buys.group_by(["customer_id", "cohort"]).aggregate(k=(buys.p.max() - buys.cohort.max()))
            cells = per.group_by(["cohort", "k"]).aggregate(v=per.count())
    else:
        rows = t.join(first, "customer_id")
        k = ibis.greatest(rows.p - rows.cohort, 0)  # a refund dated before the first purchase counts in period 0
        cells = rows.group_by([rows.cohort, k.name("k")]).aggregate(v=rows.amount.sum())
        orphans = t.anti_join(first, "customer_id")
        n_orphans = int(execute(orphans.aggregate(n=orphans.customer_id.nunique()))["n"].iloc[0] or 0)
        if n_orphans:
            notes.append(f"{n_orphans:,} customers with refunds but no purchase are in no cohort")
    df = execute(cells)
    if df.empty:
        raise RetentionError(f"transactions: no purchase in a complete {PERIODS[period]} up to {end.date()}")
    pivot = df.pivot_table(index="cohort", columns="k", values="v", aggfunc="sum")
    cohorts = range(int(pivot.index.min()), int(pivot.index.max()) + 1)
    if int(pivot.index.max()) < last:
        notes.append(f"no first purchase after {_period_of(int(pivot.index.max()), period)}: later cohorts would be empty and are not shown")
    ks = range(0, last - int(pivot.index.min()) + 1)
    pivot = pivot.reindex(index=cohorts, columns=ks).astype(float)
    if method == "rolling":  # customers whose last purchase is in period k or later
        pivot = pivot.fillna(0.0).iloc[:, ::-1].cumsum(axis=1).iloc[:, ::-1]
    observed = np.array([[c + k <= last for k in ks] for c in cohorts])
    pivot = pivot.where(observed, np.nan).where(~observed | pivot.notna(), 0.0)
    pivot.index = pd.PeriodIndex([_period_of(c, period) for c in cohorts], freq=_PANDAS_FREQ[period], name="cohort")
    pivot.columns = pd.Index(list(ks), name=f"{PERIOD_NAMES[period]}s since first purchase")
    pivot.attrs.update(value=value, method=method, normalize=False, period=period, observation_end=str(end.date()), notes=notes)
    return cohort_percentages(pivot) if normalize else pivot


def cohort_percentages(counts: pd.DataFrame) -> pd.DataFrame:
    """A cohort matrix of counts or money (``cohort_matrix(..., normalize=False)``) as % of each cohort's period 0.

    The same table as ``cohort_matrix(..., normalize=True)`` on the same
    transactions and options, without running the query again: cohorts whose
    period 0 is 0 (or, for revenue, negative) have missing percentages, and
    ``attrs["notes"]`` says which.
    """
    if not isinstance(counts, pd.DataFrame) or 0 not in counts.columns or "value" not in counts.attrs:
        raise RetentionError("counts must be a cohort_matrix(..., normalize=False) with a period-0 column")
    if counts.attrs.get("normalize"):
        raise RetentionError("counts already holds percentages")
    value = counts.attrs["value"]
    notes = list(counts.attrs.get("notes", []))
    sizes = counts[0]
    empty = sizes.index[sizes.fillna(0) == 0]
    if len(empty):
        what = "no first purchase" if value == "customers" else "no positive net revenue in period 0"
        notes.append(f"{len(empty)} cohort(s) with {what}: {', '.join(str(c) for c in empty[:5])}"
                     f"{' ...' if len(empty) > 5 else ''} (percentages missing)")
    if value == "revenue":
        nonpos = sizes.index[sizes < 0]
        if len(nonpos):
            notes.append(f"{len(nonpos)} cohort(s) with negative net revenue in period 0 (percentages missing)")
    out = 100 * counts.div(sizes.where(sizes > 0), axis=0)
    out.attrs = {**counts.attrs, "normalize": True, "notes": notes}
    return out


def retention_curve(counts: pd.DataFrame) -> pd.DataFrame:
    """Retention by period since acquisition over all cohorts, weighted by cohort size.

    ``counts`` is a ``cohort_matrix`` with ``normalize=False``. For each
    period k: retained = sum over the cohorts observed at k of their value in
    period k; base = the same cohorts' period 0 value; retention_pct =
    retained / base x 100 (missing when the base is 0). Only cohorts old enough
    to have period k complete count at k, so young cohorts do not pull the
    curve down.
    """
    if not isinstance(counts, pd.DataFrame) or 0 not in counts.columns:
        raise RetentionError("counts must be a cohort_matrix(..., normalize=False) with a period-0 column")
    if counts.attrs.get("normalize"):
        raise RetentionError("counts holds percentages; pass cohort_matrix(..., normalize=False)")
    size = counts[0].fillna(0.0)
    rows = []
    for k in counts.columns:
        seen = counts[k].notna()
        base = float(size[seen].sum())
        retained = float(counts.loc[seen, k].sum())
        rows.append({"periods_since": k, "cohorts": int(seen.sum()), "base": base, "retained": retained,
                     "retention_pct": 100 * retained / base if base > 0 else np.nan})
    return pd.DataFrame(rows).set_index("periods_since")


# ----------------------------------------------------------------------------- non-contractual churn


def customer_churn_status(transactions: pd.DataFrame, *, observation_end=None, window_days: int = 180) -> pd.DataFrame:
    """Per customer with a purchase by ``observation_end``: first and last purchase day, purchase days, days since the last, churned.

    churned: no purchase in the ``window_days`` days up to ``observation_end``
    (default: the last transaction's day), i.e. days_since_last >=
    window_days. Refunds are not purchases. Computed with Ibis.
    """
    _check_window(window_days)
    _require(transactions, "transactions", ["customer_id", "timestamp", "amount"])
    end = _tx_end(transactions, observation_end)
    t = as_table(transactions, ["customer_id", "timestamp", "amount"])
    t = t.filter((t.timestamp < ibis.literal(end + pd.Timedelta(days=1))) & (t.amount >= 0))
    day = t.timestamp.truncate("D")
    df = execute(t.group_by("customer_id").aggregate(first_purchase=day.min(), last_purchase=day.max(), purchase_days=day.nunique()))
    df = df.set_index("customer_id").sort_index()
    for c in ("first_purchase", "last_purchase"):
        df[c] = pd.to_datetime(df[c], cache=False).astype("datetime64[us]")  # cache=False: no scan for repeated values (same result)
    df["purchase_days"] = df["purchase_days"].astype("int64")
    df["days_since_last"] = (end - df["last_purchase"]).dt.days.astype("int64")
    df["churned"] = df["days_since_last"] >= window_days
    df.attrs.update(observation_end=str(end.date()), window_days=window_days)
    return df


def _purchases(transactions: pd.DataFrame, end: pd.Timestamp):
    """The purchases (refunds left out) up to ``end``, as an engine table."""
    t = as_table(transactions, ["customer_id", "timestamp", "amount"])
    return t.filter((t.timestamp < ibis.literal(end + pd.Timedelta(days=1))) & (t.amount >= 0))


def _streaks(t, window_days: int, since: pd.Timestamp | None = None):
    """Per purchase day of ``t`` (``_purchases``): ``stop``, the day the activity it starts ends (the next purchase day,
    or day + window: a lapse), ``lapses`` (no purchase within the window after it) and ``begin``, the first day of the
    unbroken activity it belongs to. With ``since``, purchases before that day are not read (``begin`` is then never
    earlier than ``since``)."""
    if since is not None:
        t = t.filter(t.timestamp >= ibis.literal(since))
    act = t.select(customer_id=t.customer_id, day=t.timestamp.truncate("D")).distinct()
    w = ibis.window(group_by=act.customer_id, order_by=act.day)
    nxt, prev = act.day.lead().over(w), act.day.lag().over(w)
    reach = act.day + ibis.interval(days=window_days)
    fresh = prev.isnull() | (prev + ibis.interval(days=window_days) < act.day)  # the customer had lapsed before this purchase
    act = act.mutate(stop=ibis.ifelse(nxt.isnull() | (nxt > reach), reach, nxt), lapses=nxt.isnull() | (nxt > reach),
                     fresh_day=ibis.ifelse(fresh, act.day, ibis.null("timestamp")))
    upto = ibis.window(group_by=act.customer_id, order_by=act.day, rows=(None, 0))
    return act.mutate(begin=act.fresh_day.max().over(upto))


def inactivity_churn(transactions: pd.DataFrame, *, observation_start=None, observation_end=None, window_days: int = 180,
                     period: str = "M") -> pd.DataFrame:
    """Period churn rate by the inactivity rule, per complete period.

    active_start: customers with a purchase in the ``window_days`` days
    before the period's first day. churned: those of them who reached
    ``window_days`` days without a purchase during the period (some may buy
    again later). churn_pct = churned / active_start x 100, missing (with a
    note) when no one was active at the start. active_end: customers with a
    purchase in the ``window_days`` days up to the period's last day. Periods
    from the first purchase (or from the one holding ``observation_start``)
    to the last complete one at ``observation_end``.

    With ``observation_start`` only the purchases from ``window_days`` days
    before its period's first day are read, and the figures of the periods
    shown are the same as without it: an activity that stopped before that
    day ends before the first period shown, and a customer active at a
    period's start has a purchase in the window before it.
    """
    _check_window(window_days)
    _check_period(period)
    _require(transactions, "transactions", ["customer_id", "timestamp", "amount"])
    end = _tx_end(transactions, observation_end)
    last = _last_complete(end, period)
    start = _day(observation_start, "observation_start")
    first_shown = None if start is None else _index_of(start, period)
    if first_shown is not None and first_shown > last:
        raise RetentionError(f"observation_start {start.date()} is in no complete {PERIODS[period]} up to {end.date()}")
    since = None if first_shown is None else _period_of(first_shown, period).start_time.normalize() - pd.Timedelta(days=window_days)
    purchases = _purchases(transactions, end)
    s = _streaks(purchases, window_days, since)
    lapse = s.filter(s.lapses)
    # churned in period p: the lapse falls in p and the unbroken activity it ends began before p (active at its start)
    lapse = lapse.mutate(p=_period_index(lapse.stop, period), p_begin=_period_index(lapse.begin, period))
    lapse = lapse.filter(lapse.p_begin < lapse.p)
    # the three counts in one query, so the engine works out the streaks once: part 0 activity starts per day,
    # 1 activity stops per day, 2 churned per period (day and p are placeholders where they do not apply)
    no_day, no_p = ibis.literal(pd.Timestamp("1970-01-01")), ibis.literal(0).cast("int64")
    queries = [
        s.group_by("day").aggregate(n=s.count()).select(part=ibis.literal(0), day="day", p=no_p, n="n"),
        s.group_by(s.stop.name("day")).aggregate(n=s.count()).select(part=ibis.literal(1), day="day", p=no_p, n="n"),
        lapse.group_by("p").aggregate(n=lapse.count()).select(part=ibis.literal(2), day=no_day, p=lapse.p.cast("int64"), n="n"),
    ]
    if since is not None:  # 3: the first purchase day of the whole table (the periods start there, as without a start)
        queries.append(purchases.aggregate(day=purchases.timestamp.truncate("D").min(), n=purchases.count())
                       .filter(ibis._.n > 0).select(part=ibis.literal(3), day="day", p=no_p, n="n"))
    parts = execute(ibis.union(*queries, distinct=False))
    starts = parts.loc[parts["part"] == 0, ["day", "n"]].sort_values("day", kind="stable").reset_index(drop=True)
    stops = parts.loc[parts["part"] == 1, ["day", "n"]].sort_values("day", kind="stable").reset_index(drop=True)
    lapsed = parts.loc[parts["part"] == 2, ["p", "n"]].rename(columns={"n": "churned"}).reset_index(drop=True)
    first_day = parts.loc[parts["part"] == (0 if since is None else 3), "day"]
    if first_day.empty:
        raise RetentionError(f"transactions: no purchase on or before {end.date()}")
    first_p = _index_of(pd.Timestamp(first_day.min()), period)
    if last < first_p:
        raise RetentionError(f"transactions: no complete {PERIODS[period]} between the first purchase and {end.date()}")
    if first_shown is not None:
        first_p = max(first_p, first_shown)
    periods = [_period_of(i, period) for i in range(first_p, last + 1)]
    day_first = periods[0].start_time if starts.empty else min(pd.Timestamp(starts["day"].min()), periods[0].start_time)
    days = pd.date_range(day_first, periods[-1].end_time.normalize() + pd.Timedelta(days=1), freq="D")
    level = (pd.Series(starts["n"].to_numpy(), index=pd.to_datetime(starts["day"])).groupby(level=0).sum()
             .sub(pd.Series(stops["n"].to_numpy(), index=pd.to_datetime(stops["day"])).groupby(level=0).sum(), fill_value=0)
             .reindex(days, fill_value=0).cumsum())  # customers active on each day
    lapsed = lapsed.set_index("p").reindex(range(first_p, last + 1), fill_value=0)
    rows = []
    for i, p in zip(range(first_p, last + 1), periods):
        before = p.start_time.normalize() - pd.Timedelta(days=1)
        active_start = int(level.get(before, 0))
        churned = int(lapsed.loc[i, "churned"])
        rows.append({"period": p, "active_start": active_start, "churned": churned,
                     "churn_pct": 100 * churned / active_start if active_start else np.nan,
                     "active_end": int(level.get(p.end_time.normalize(), 0)),
                     "note": "" if active_start else "no customer active at the start"})
    out = pd.DataFrame(rows).set_index("period")
    out.index = pd.PeriodIndex(out.index, freq=_PANDAS_FREQ[period], name="period")
    out.attrs.update(window_days=window_days, observation_end=str(end.date()))
    return out


def compare_churn_views(status: pd.DataFrame, p_alive: pd.Series, *, threshold: float = 0.5) -> pd.DataFrame:
    """The inactivity rule against the probabilistic view, P(alive) from a purchase model.

    ``status`` comes from ``customer_churn_status``; ``p_alive`` is a Series
    by customer_id (``clv.predict_customers(...)["p_alive"]``). One row per
    rule status (churned / active) and a total: customers, mean_p_alive,
    expected_inactive = sum of (1 - P(alive)) (the customers the model
    expects to have left), below_threshold = customers with P(alive) below
    ``threshold`` and below_threshold_pct (% of the row). Customers without
    a P(alive) are counted in ``no_p_alive``, never dropped silently.
    """
    if not 0 < threshold < 1:
        raise RetentionError(f"threshold must be a probability between 0 and 1, got {threshold}")
    _require(status, "status (from customer_churn_status)", ["churned"])
    p = pd.Series(p_alive, dtype=float).reindex(status.index)
    bad = p.notna() & ((p < 0) | (p > 1))
    if bad.any():
        ex = ", ".join(f"{i!r}: {v:.3g}" for i, v in p[bad].head(3).items())
        raise RetentionError(f"p_alive: {int(bad.sum()):,} of {len(p):,} values are outside 0-1 (e.g. {ex})")
    label = pd.Series(np.where(status["churned"].to_numpy(bool), "churned (inactivity rule)", "active (inactivity rule)"), index=status.index)
    frame = pd.DataFrame({"rule": label, "p": p})
    rows = []
    for name, g in [*frame.groupby("rule", sort=False), ("all", frame)]:
        known = g["p"].dropna()
        rows.append({"status": name, "customers": len(g), "no_p_alive": int(g["p"].isna().sum()),
                     "mean_p_alive": known.mean() if len(known) else np.nan,
                     "expected_inactive": float((1 - known).sum()),
                     "below_threshold": int((known < threshold).sum()),
                     "below_threshold_pct": 100 * (known < threshold).sum() / len(known) if len(known) else np.nan})
    out = pd.DataFrame(rows).set_index("status")
    order = [r for r in ("churned (inactivity rule)", "active (inactivity rule)", "all") if r in out.index]
    out = out.loc[order]
    out.attrs["threshold"] = threshold
    return out


# ----------------------------------------------------------------------------- subscriptions


def _paid_subscriptions(subscriptions: pd.DataFrame, observation_end, exclude_plans) -> tuple[pd.DataFrame, pd.Timestamp, list[str]]:
    """Paid subscriptions started by the end, end dates after it treated as unknown; the end; notes."""
    _require(subscriptions, "subscriptions", ["customer_id", "start_date"])
    subs = subscriptions.copy()
    if "end_date" not in subs.columns:
        subs["end_date"] = pd.NaT
    bad = subs["end_date"].notna() & (subs["end_date"] < subs["start_date"])
    if bad.any():
        ex = subs.loc[bad].head(3)
        shown = "; ".join(f"customer_id {r.customer_id!r}: {r.start_date:%Y-%m-%d} -> {r.end_date:%Y-%m-%d}" for r in ex.itertuples())
        raise SchemaError(f"subscriptions.end_date: {int(bad.sum()):,} of {len(subs):,} rows end before they start (e.g. {shown})")
    notes = []
    if exclude_plans and "plan" in subs.columns:
        drop = subs["plan"].isin(list(exclude_plans))
        if drop.any():
            notes.append(f"{int(drop.sum()):,} subscriptions on plan(s) {sorted(set(subs.loc[drop, 'plan']))} left out (not paid)")
        subs = subs.loc[~drop]
    end = _day(observation_end, "observation_end")
    if end is None:
        if subs.empty:
            raise RetentionError("subscriptions: no paid subscription to measure")
        end = max(subs["start_date"].max(), subs["end_date"].max() if subs["end_date"].notna().any() else subs["start_date"].max()).normalize()
    later = subs["start_date"] > end
    if later.any():
        notes.append(f"{int(later.sum()):,} subscriptions starting after {end.date()} left out")
    subs = subs.loc[~later].copy()
    if "mrr" in subs.columns and subs["mrr"].isna().any():
        notes.append(f"{int(subs['mrr'].isna().sum()):,} subscriptions have no mrr: counted as paying, with an MRR of 0")
    censored = subs["end_date"] > end
    if censored.any():
        notes.append(f"{int(censored.sum()):,} end dates after {end.date()} treated as still running")
    subs.loc[censored, "end_date"] = pd.NaT
    if subs.empty:
        raise RetentionError(f"subscriptions: no paid subscription started on or before {end.date()}")
    return subs, end, notes


def _snapshots(subs: pd.DataFrame, days: pd.DatetimeIndex, with_mrr: bool) -> tuple[pd.Index, np.ndarray]:
    """Customers x days: each customer's MRR (or 1 when paying, without mrr) on each day; 0 when not a paying subscriber."""
    codes, customers = pd.factorize(subs["customer_id"], sort=True)
    start = subs["start_date"].to_numpy("datetime64[us]")
    stop = subs["end_date"].to_numpy("datetime64[us]")
    running = np.isnat(stop)
    value = subs["mrr"].fillna(0.0).to_numpy(float) if with_mrr else np.ones(len(subs))
    out = np.zeros((len(customers), len(days)))
    paying = np.zeros((len(customers), len(days)), dtype=bool)
    for j, d in enumerate(days.to_numpy("datetime64[us]")):
        on = (start <= d) & (running | (stop > d))
        out[:, j] = np.bincount(codes[on], weights=value[on], minlength=len(customers))
        paying[:, j] = np.bincount(codes[on], minlength=len(customers)) > 0
    return pd.Index(customers), np.where(paying, out, np.nan) if with_mrr else paying.astype(float)


def _month_days(subs: pd.DataFrame, end: pd.Timestamp) -> pd.PeriodIndex:
    first = pd.Period(subs["start_date"].min(), freq="M")
    last = pd.Period(end + pd.Timedelta(days=1), freq="M") - 1  # the last month complete at the end
    if last < first:
        raise RetentionError(f"subscriptions: no complete calendar month between the first start and {end.date()}")
    return pd.period_range(first, last, freq="M")


def subscription_churn(subscriptions: pd.DataFrame, *, observation_end=None, exclude_plans=("trial",), denominator: str = "start") -> pd.DataFrame:
    """Per complete calendar month: paying subscribers, logo churn, and the MRR movements (when subscriptions has mrr).

    customers_start / customers_end: paying subscribers on the month's first
    day / on the next month's first day. churned: customers_start who are not
    paying on the next month's first day; new: paying then but not at the
    start (reactivations included). logo_churn_pct = churned /
    customers_start x 100 (``denominator="average"``: / the mean of start and
    end). With mrr: mrr_start, new_mrr, expansion_mrr, contraction_mrr,
    churned_mrr, mrr_end (mrr_start + new + expansion - contraction - churned
    = mrr_end) and mrr_churn_pct = (churned + contraction) / mrr_start x 100
    (gross MRR churn). Months from the first start to the last month complete
    at ``observation_end`` (default: the latest start or end date). Rows on
    plans in ``exclude_plans`` (trials) are left out; ``attrs["notes"]`` says
    how many rows were left out and why.
    """
    if denominator not in ("start", "average"):
        raise RetentionError(f"denominator must be 'start' (subscribers at the start of the month) or 'average', got {denominator!r}")
    subs, end, notes = _paid_subscriptions(subscriptions, observation_end, exclude_plans)
    with_mrr = "mrr" in subs.columns
    months = _month_days(subs, end)
    days = pd.DatetimeIndex([m.start_time for m in months] + [(months[-1] + 1).start_time])
    _, snap = _snapshots(subs, days, with_mrr)
    paying = ~np.isnan(snap) if with_mrr else snap > 0
    rows = []
    for j, m in enumerate(months):
        a, b = paying[:, j], paying[:, j + 1]
        row = {"month": m, "customers_start": int(a.sum()), "new": int((b & ~a).sum()), "churned": int((a & ~b).sum()),
               "customers_end": int(b.sum())}
        base = row["customers_start"] if denominator == "start" else (row["customers_start"] + row["customers_end"]) / 2
        row["logo_churn_pct"] = 100 * row["churned"] / base if base else np.nan
        if with_mrr:
            x, y = np.nan_to_num(snap[:, j]), np.nan_to_num(snap[:, j + 1])
            both = a & b
            row.update(mrr_start=x.sum(), new_mrr=y[b & ~a].sum(), expansion_mrr=np.clip(y - x, 0, None)[both].sum(),
                       contraction_mrr=np.clip(x - y, 0, None)[both].sum(), churned_mrr=x[a & ~b].sum(), mrr_end=y.sum())
            row["mrr_churn_pct"] = 100 * (row["churned_mrr"] + row["contraction_mrr"]) / row["mrr_start"] if row["mrr_start"] > 0 else np.nan
        row["note"] = "" if base else "no paying subscriber at the start"
        rows.append(row)
    out = pd.DataFrame(rows).set_index("month")
    out.index = pd.PeriodIndex(out.index, freq="M", name="month")
    out.attrs.update(notes=notes, observation_end=str(end.date()), denominator=denominator)
    return out


def revenue_retention(subscriptions: pd.DataFrame, *, months: int = 12, observation_end=None, exclude_plans=("trial",)) -> pd.DataFrame:
    """Gross and net revenue retention (GRR, NRR, %) of the paying subscribers on each month's first day, ``months`` later.

    For each start month m whose end point (first day of month m + ``months``)
    is on or before the day after ``observation_end``: customers = paying
    subscribers on m's first day; mrr_start = their MRR then; mrr_end = the
    same customers' MRR ``months`` later (0 for those who left); retained_mrr
    = sum of min(end, start) per customer; grr_pct = retained_mrr / mrr_start
    x 100; nrr_pct = mrr_end / mrr_start x 100; expansion, contraction and
    churned MRR between the two days. New customers are excluded. Needs the
    mrr column.
    """
    if not isinstance(months, (int, np.integer)) or months < 1:
        raise RetentionError(f"months must be a whole number of months, at least 1, got {months!r}")
    _require(subscriptions, "subscriptions", ["customer_id", "start_date", "mrr"])
    subs, end, notes = _paid_subscriptions(subscriptions, observation_end, exclude_plans)
    all_months = _month_days(subs, end)
    days = pd.DatetimeIndex([m.start_time for m in all_months] + [(all_months[-1] + 1).start_time])
    _, snap = _snapshots(subs, days, True)
    paying = ~np.isnan(snap)
    values = np.nan_to_num(snap)
    rows = []
    for j in range(len(days) - months):
        a = paying[:, j]
        x, y = values[a, j], values[a, j + months]
        start = x.sum()
        row = {"month": all_months[j], "to": str((all_months[j] + months).start_time.date()), "customers": int(a.sum()),
               "mrr_start": start, "mrr_end": y.sum(), "retained_mrr": np.minimum(x, y).sum(),
               "expansion_mrr": np.clip(y - x, 0, None)[paying[a, j + months]].sum(),
               "contraction_mrr": np.clip(x - y, 0, None)[paying[a, j + months]].sum(),
               "churned_mrr": x[~paying[a, j + months]].sum()}
        row["grr_pct"] = 100 * row["retained_mrr"] / start if start > 0 else np.nan
        row["nrr_pct"] = 100 * row["mrr_end"] / start if start > 0 else np.nan
        row["note"] = "" if start > 0 else "no MRR at the start"
        rows.append(row)
    cols = ["to", "customers", "mrr_start", "mrr_end", "retained_mrr", "expansion_mrr", "contraction_mrr", "churned_mrr", "grr_pct", "nrr_pct", "note"]
    out = pd.DataFrame(rows, columns=["month", *cols]).set_index("month")
    out.index = pd.PeriodIndex(out.index, freq="M", name="month")
    out.attrs.update(notes=notes, months=months, observation_end=str(end.date()))
    return out


# ----------------------------------------------------------------------------- survival


_CUSTOMER_ATTRIBUTES = ("acquisition_channel", "country", "region", "age_band", "plan")


def _attach_customers(frame: pd.DataFrame, customers: pd.DataFrame | None, prefix_plan: bool) -> pd.DataFrame:
    if customers is None:
        return frame
    _require(customers, "customers", ["customer_id"])
    cols = [c for c in _CUSTOMER_ATTRIBUTES if c in customers.columns]
    attrs = customers.set_index("customer_id")[cols]
    if prefix_plan and "plan" in attrs.columns:
        attrs = attrs.rename(columns={"plan": "customer_plan"})
    return frame.join(attrs, on="customer_id")


def subscription_durations(subscriptions: pd.DataFrame, *, observation_end=None, customers: pd.DataFrame | None = None,
                           exclude_plans=("trial",)) -> pd.DataFrame:
    """One row per paid subscription started by ``observation_end``: duration_days and churned, for survival analysis.

    duration_days: from start_date to end_date when it ended on or before
    ``observation_end`` (churned = True), else to ``observation_end``
    (churned = False: censored). Keeps plan and mrr; with ``customers``, adds
    the customer's acquisition_channel, country, region and age band (and the
    customers table's plan as customer_plan).
    """
    subs, end, notes = _paid_subscriptions(subscriptions, observation_end, exclude_plans)
    stop = subs["end_date"].fillna(end)
    out = pd.DataFrame({"customer_id": subs["customer_id"].to_numpy(), "start_date": subs["start_date"].to_numpy(),
                        "duration_days": (stop - subs["start_date"]).dt.days.to_numpy("int64"),
                        "churned": subs["end_date"].notna().to_numpy()})
    for c in ("plan", "mrr"):
        if c in subs.columns:
            out[c] = subs[c].to_numpy()
    out = _attach_customers(out, customers, prefix_plan=True)
    out.attrs.update(notes=notes, observation_end=str(end.date()), unit="subscription")
    return out


def customer_lifetimes(transactions: pd.DataFrame, *, observation_end=None, window_days: int = 180, churn_at: str = "last_purchase",
                       customers: pd.DataFrame | None = None, status: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per customer with a purchase: duration_days and churned (by the inactivity rule), for survival analysis.

    A customer has churned when they made no purchase in the ``window_days``
    days up to ``observation_end``. ``churn_at="last_purchase"`` (default):
    the lifetime is first to last purchase day, and a customer not (yet)
    churned is known to be alive up to their last purchase (censored there).
    ``churn_at="declared"``: churn happens when it is declared, window_days
    after the last purchase, and a customer not churned is censored at
    ``observation_end``. With ``customers``, adds acquisition_channel,
    country, region, age_band and plan. ``status``: the
    ``customer_churn_status`` of the same transactions, observation end and
    window, when it is already at hand (it is computed here otherwise).
    """
    if churn_at not in ("last_purchase", "declared"):
        raise RetentionError(f"churn_at must be 'last_purchase' or 'declared', got {churn_at!r}")
    if status is None:
        status = customer_churn_status(transactions, observation_end=observation_end, window_days=window_days)
    else:
        _require(status, "status (from customer_churn_status)", ["first_purchase", "last_purchase", "churned"])
        end = str(_tx_end(transactions, observation_end).date())
        if status.attrs.get("window_days") != window_days or status.attrs.get("observation_end") != end:
            raise RetentionError(f"status is for window_days={status.attrs.get('window_days')!r} at {status.attrs.get('observation_end')}; "
                                 f"these lifetimes are for window_days={window_days!r} at {end}")
    end = pd.Timestamp(status.attrs["observation_end"])
    if churn_at == "last_purchase":
        stop = status["last_purchase"]
    else:
        stop = (status["last_purchase"] + pd.Timedelta(days=window_days)).where(status["churned"], end)
    out = pd.DataFrame({"customer_id": status.index.to_numpy(), "start_date": status["first_purchase"].to_numpy(),
                        "duration_days": (stop - status["first_purchase"]).dt.days.to_numpy("int64"),
                        "churned": status["churned"].to_numpy()})
    out = _attach_customers(out, customers, prefix_plan=False)
    out.attrs.update(observation_end=str(end.date()), window_days=window_days, churn_at=churn_at, unit="customer")
    return out


def _durations(durations: pd.DataFrame, by, duration: str, event: str) -> tuple[pd.DataFrame, str | None]:
    _require(durations, "durations", [duration, event] + ([by] if by else []))
    d = pd.to_numeric(durations[duration], errors="coerce")
    bad = d.isna() | (d < 0) | ~np.isfinite(d.fillna(0))
    if bad.any():
        ex = ", ".join(repr(v) for v in durations.loc[bad, duration].head(3))
        raise RetentionError(f"durations.{duration}: {int(bad.sum()):,} of {len(d):,} rows are missing, negative or not numbers (e.g. {ex})")
    e = durations[event]
    if not (pd.api.types.is_bool_dtype(e) or set(pd.unique(e.dropna())) <= {0, 1}) or e.isna().any():
        raise RetentionError(f"durations.{event}: must be True/False (churned or censored) on every row")
    frame = pd.DataFrame({"duration": d.astype(float), "event": e.astype(bool)})
    if by:
        frame["group"] = durations[by].astype(object).where(durations[by].notna(), "(missing)").astype(str)
    return frame, by


def kaplan_meier(durations: pd.DataFrame, *, by: str | None = None, level: float = 0.95, duration: str = "duration_days",
                 event: str = "churned") -> pd.DataFrame:
    """Kaplan-Meier survival curve(s), with pointwise confidence bands, via ``lifelines``.

    ``durations`` has one row per subscription or customer (from
    ``subscription_durations`` or ``customer_lifetimes``): ``duration`` (days,
    0 or more) and ``event`` (True = churned, False = censored). Returns one
    row per group and time: at_risk, churned, censored, survival_pct (share not
    yet churned, %) and ci_low/ci_high (``level``; lifelines' default:
    Greenwood's variance on the log(-log) scale). ``by`` names a column to
    split on (missing values form a group "(missing)").
    """
    from lifelines import KaplanMeierFitter

    if not 0 < level < 1:
        raise RetentionError(f"level must be between 0 and 1, got {level}")
    frame, by = _durations(durations, by, duration, event)
    if frame.empty:
        raise RetentionError("durations: no rows; nothing to estimate")
    groups = frame.groupby("group", sort=True) if by else [("all", frame)]
    parts = []
    for name, g in groups:
        kmf = KaplanMeierFitter(alpha=1 - level).fit(g["duration"], g["event"])
        table = kmf.event_table
        ci = kmf.confidence_interval_survival_function_
        part = pd.DataFrame({
            "group": name,
            "time": table.index.to_numpy(float),
            "at_risk": table["at_risk"].to_numpy("int64"),
            "churned": table["observed"].to_numpy("int64"),
            "censored": table["censored"].to_numpy("int64"),
            "survival_pct": 100 * kmf.survival_function_.iloc[:, 0].reindex(table.index).to_numpy(float),
            "ci_low": 100 * ci.iloc[:, 0].reindex(table.index).to_numpy(float),
            "ci_high": 100 * ci.iloc[:, 1].reindex(table.index).to_numpy(float),
        })
        parts.append(part)
    out = pd.concat(parts, ignore_index=True)
    out.attrs.update(by=by, level=level)
    return out


def survival_summary(durations: pd.DataFrame, *, by: str | None = None, at=(30, 90, 180, 365), level: float = 0.95,
                     duration: str = "duration_days", event: str = "churned", curves: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per group: rows, churned, median survival (days) and the Kaplan-Meier survival (%) at the days in ``at``.

    median_days is the first time survival falls to 50% or below; it is
    missing, with the reason in note, when survival never falls that low in
    the data ("not reached"). survival_<t>d is missing when t is beyond the
    group's longest observed duration ("not observed"). ``curves``: the
    ``kaplan_meier`` result for the same durations, ``by`` and ``level``,
    when it is already at hand (it is fitted here otherwise).
    """
    if curves is None:
        curves = kaplan_meier(durations, by=by, level=level, duration=duration, event=event)
    elif curves.attrs.get("by") != by or curves.attrs.get("level") != level:
        raise RetentionError(f"curves were fitted with by={curves.attrs.get('by')!r}, level={curves.attrs.get('level')!r}; "
                             f"this summary asks for by={by!r}, level={level!r}")
    frame, _ = _durations(durations, by, duration, event)
    sizes = frame.groupby("group").agg(rows=("event", "size"), churned=("event", "sum")) if by else \
        pd.DataFrame({"rows": [len(frame)], "churned": [int(frame["event"].sum())]}, index=pd.Index(["all"], name="group"))
    longest = frame.groupby("group")["duration"].max() if by else pd.Series({"all": frame["duration"].max()})
    rows = []
    for name, c in curves.groupby("group", sort=True):
        row = {"group": name, "rows": int(sizes.loc[name, "rows"]), "churned": int(sizes.loc[name, "churned"])}
        below = c.loc[c["survival_pct"] <= 50, "time"]
        row["median_days"] = float(below.iloc[0]) if len(below) else np.nan
        notes = [] if len(below) else ["median not reached"]
        for t in at:
            if t > longest[name]:
                row[f"survival_{t}d"] = np.nan
                notes.append(f"{t}d not observed")
            else:
                before = c.loc[c["time"] <= t, "survival_pct"]
                row[f"survival_{t}d"] = float(before.iloc[-1]) if len(before) else 100.0
        row["note"] = "; ".join(notes)
        rows.append(row)
    return pd.DataFrame(rows).set_index("group")


@dataclass(frozen=True)
class LogRankResult:
    """The log-rank test of equal survival across groups: chi-square statistic, degrees of freedom, p-value."""

    statistic: float
    df: int
    p_value: float
    groups: tuple[str, ...]
    n: int

    def as_dict(self) -> dict:
        return {"statistic": self.statistic, "df": self.df, "p_value": self.p_value, "groups": len(self.groups), "n": self.n}


def logrank_test(durations: pd.DataFrame, *, by: str, duration: str = "duration_days", event: str = "churned") -> LogRankResult:
    """Log-rank test (Mantel 1966; ``lifelines.statistics.multivariate_logrank_test``) that every group of ``by`` has the same survival.

    Returns the chi-square statistic with (groups - 1) degrees of freedom and
    its p-value. Needs at least two groups with at least one row each.
    """
    from lifelines.statistics import multivariate_logrank_test

    frame, _ = _durations(durations, by, duration, event)
    groups = tuple(sorted(frame["group"].unique()))
    if len(groups) < 2:
        raise RetentionError(f"logrank_test: {by} has {len(groups)} group(s) ({', '.join(groups) or 'none'}); the test compares two or more")
    res = multivariate_logrank_test(frame["duration"], frame["group"], frame["event"])
    return LogRankResult(statistic=float(res.test_statistic), df=len(groups) - 1, p_value=float(res.p_value), groups=groups, n=len(frame))


# ----------------------------------------------------------------------------- plots


def plot_cohort_heatmap(matrix: pd.DataFrame, *, ax=None, title: str | None = None, annotate: bool | None = None):
    """A cohort matrix as a heatmap (cohorts down, periods since acquisition across); missing cells are blank."""
    import seaborn as sns

    import matplotlib.pyplot as plt

    if ax is None:  # one row per cohort: size the figure to the matrix
        ax = plt.subplots(figsize=(min(16, max(9, 0.35 * matrix.shape[1] + 3)), min(14, max(4, 0.28 * matrix.shape[0] + 2))))[1]
    pct = matrix.attrs.get("normalize", True)
    what = {"customers": "customers retained", "revenue": "revenue retained"}.get(matrix.attrs.get("value"), "value")
    if annotate is None:
        annotate = matrix.shape[1] <= 18 and matrix.shape[0] <= 24
    shown = matrix.copy()
    shown.index = shown.index.astype(str)
    sns.heatmap(shown, ax=ax, cmap="Blues", annot=annotate, fmt=".0f", annot_kws={"fontsize": 7},
                vmin=0, vmax=100 if pct else None, mask=shown.isna(),
                cbar_kws={"label": f"{what} ({'% of period 0' if pct else 'count' if what.startswith('customers') else 'currency'})"})
    ax.grid(False)
    ax.set(title=title or f"Cohort retention: {what}" + (" (% of period 0)" if pct else ""),
           xlabel=str(matrix.columns.name or "periods since first purchase"), ylabel="acquisition cohort")
    return ax


def plot_retention_curve(curves: dict[str, pd.DataFrame], *, ax=None, title: str = "Retention by period since first purchase",
                         xlabel: str = "periods since first purchase"):
    """One or more ``retention_curve`` results ({label: curve}) as lines, in % of period 0."""
    from .plots import new_ax

    ax = new_ax(ax)
    for label, curve in curves.items():
        ax.plot(curve.index, curve["retention_pct"], marker="o", markersize=3, label=label)
    ax.set(title=title, xlabel=xlabel, ylabel="% of period 0")
    ax.set_ylim(0, 105)
    ax.legend(fontsize=8)
    return ax


def plot_churn(series: pd.Series, *, ax=None, title: str, ylabel: str = "churn (%)"):
    """A churn or retention rate per period (PeriodIndex) as a line; missing periods are gaps."""
    from .plots import new_ax

    ax = new_ax(ax)
    ax.plot(series.index.to_timestamp(), series.to_numpy(float), marker="o", markersize=3)
    ax.set(title=title, xlabel=f"{PERIOD_NAMES.get(series.index.freqstr[0], 'period')} (start)", ylabel=ylabel)
    ax.set_ylim(bottom=0)
    return ax


def plot_survival(curves: pd.DataFrame, *, ax=None, title: str = "Survival (Kaplan-Meier)", xlabel: str = "days since start",
                  max_groups: int = 8):
    """Kaplan-Meier curves from ``kaplan_meier`` as steps with their confidence bands (the ``max_groups`` largest groups)."""
    from .plots import new_ax

    ax = new_ax(ax)
    sizes = curves.groupby("group")["at_risk"].max().sort_values(ascending=False)
    for name in sizes.index[:max_groups]:
        c = curves[curves["group"] == name]
        x = np.concatenate([[0.0], c["time"].to_numpy(float)])
        y = np.concatenate([[100.0], c["survival_pct"].to_numpy(float)])
        lo = np.concatenate([[100.0], c["ci_low"].to_numpy(float)])
        hi = np.concatenate([[100.0], c["ci_high"].to_numpy(float)])
        line = ax.step(x, y, where="post", label=f"{name} (n={int(sizes[name]):,})")[0]
        ax.fill_between(x, lo, hi, step="post", alpha=0.15, color=line.get_color())
    level = curves.attrs.get("level", 0.95)
    ax.set(title=f"{title}, {level:.0%} bands", xlabel=xlabel, ylabel="not yet churned (%)")
    ax.set_ylim(0, 102)
    ax.legend(fontsize=8)
    return ax
