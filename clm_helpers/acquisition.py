"""Acquisition: new customers, customer acquisition cost (CAC), cost per lead, CAC payback and CLV:CAC per channel.

Definitions (the same words the reports show):

* **New customers** of a channel in a period: customers whose ``signup_date``
  falls in the period, by their ``acquisition_channel`` (customers without
  one count under ``(unknown)``). The other convention counts a customer as
  acquired on the day of their first purchase (refunds are not purchases;
  customers who never bought are not acquired): ``acquired="first_purchase"``
  with ``transactions``.
* **CAC** of a channel in a period: the channel's marketing spend in the
  period divided by its new customers in the same period (spend and
  sign-ups of the same period, no lag). Where a channel spent and won no one
  the CAC is *missing* (undefined), never infinite, and ``note`` says why; a
  channel with new customers and no spend has a CAC of 0.
* A channel is **paid** when it has spend above zero in the window.
  **Blended CAC**: all spend divided by all new customers, organic and
  unknown channels included. **Paid CAC**: the spend of the paid channels
  divided by the new customers from paid channels.
* **Cost per lead**: spend on the rows of ``marketing_spend`` that report a
  lead count divided by those leads (rows without a count are left out of
  both and counted in ``rows_without_leads``).
* A **month** after acquisition is 365.25 / 12 = 30.44 days: month 1 covers
  days [0, 30.44) after the sign-up day, and a customer's **first N months**
  are the N x 30.44 days from their sign-up day. They are *complete* when
  that span ends on or before the observation end.
* **Historical value** of a customer: the gross margin on their net revenue
  (purchases minus refunds) in their first N months, i.e. net revenue x
  ``gross_margin_pct`` / 100. Customers whose first N months are not complete
  have no value and are counted, not guessed; customers who never bought
  have a value of 0.
* **CAC payback period** (months): the channel's CAC divided by the monthly
  gross margin per new customer, which is the mean historical value of the
  channel's customers with complete first N months divided by N
  (``method="average"``). The other convention, ``method="cumulative"``, is
  the first month after acquisition by the end of which the channel's mean
  cumulative gross margin per customer reaches the CAC (missing when it does
  not within N months).
* **CLV:CAC** of a channel: the mean customer value (historical value, or a
  model CLV passed in) of the channel's customers that have one, divided by
  the channel's CAC over the window; 3:1 is the common benchmark. Undefined
  (missing, with a note) where the CAC is 0 or undefined. The paid row
  divides the mean value of paid-channel customers by the paid CAC; the
  blended row the mean value of all customers by the blended CAC. With
  ``acquired="first_purchase"``, only customers who bought are valued, so
  value and CAC describe the same customers.

Event-level aggregation over transactions is an Ibis expression run by
``clm_helpers.engine``; customers and marketing spend are small tables.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .data import ClmError, SchemaError
from .engine import as_table, execute

__all__ = [
    "AcquisitionError",
    "PERIODS",
    "UNKNOWN_CHANNEL",
    "BENCHMARK_CLV_CAC",
    "DAYS_PER_MONTH",
    "PAID_ROW",
    "BLENDED_ROW",
    "new_customers",
    "cac",
    "cac_totals",
    "cost_per_lead",
    "historical_value",
    "cac_payback",
    "clv_cac",
    "plot_spend_vs_customers",
    "plot_cac",
    "plot_clv_cac",
]

#: Periods a table can be cut by: pandas frequency and its name in reports ("all": the whole window as one period).
PERIODS = {"W": "ISO week (Monday to Sunday)", "M": "calendar month", "Q": "calendar quarter", "Y": "calendar year", "all": "the whole window"}
_PANDAS_FREQ = {"W": "W-SUN", "M": "M", "Q": "Q", "Y": "Y"}
#: Channel name given to customers without an acquisition channel.
UNKNOWN_CHANNEL = "(unknown)"
#: The common CLV:CAC benchmark (3:1).
BENCHMARK_CLV_CAC = 3.0
#: Days in a month after acquisition: 365.25 / 12.
DAYS_PER_MONTH = 365.25 / 12
#: Row labels of the summary rows in channel tables.
PAID_ROW = "all paid channels"
BLENDED_ROW = "all channels (blended)"
_ACQUIRED = ("signup", "first_purchase")
_PAYBACK_METHODS = ("average", "cumulative")


class AcquisitionError(ClmError, ValueError):
    """An acquisition metric was asked for something the data or the options cannot give."""


# ----------------------------------------------------------------------------- checks
def _mem(df: pd.DataFrame, columns):
    """An Ibis table of some columns of a pandas frame (``engine.as_table``: only those columns are converted; attrs are left out)."""
    return as_table(df, columns)



def _require(df, table: str, columns) -> None:
    if not isinstance(df, pd.DataFrame):
        raise AcquisitionError(f"{table}: expected a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise SchemaError(f"{table}: missing column(s) {missing}; it has {list(df.columns)}")


def _day(value, what: str) -> pd.Timestamp | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        return pd.Timestamp(value).normalize()
    except (ValueError, TypeError) as exc:
        raise AcquisitionError(f"{what} must be a date such as 2024-12-31, got {value!r}") from exc


def _check_period(period) -> None:
    if period not in PERIODS:
        raise AcquisitionError(f"period must be one of {list(PERIODS)} ({', '.join(PERIODS.values())}), got {period!r}")


def _check_months(months) -> None:
    if isinstance(months, bool) or not isinstance(months, (int, np.integer)) or months < 1:
        raise AcquisitionError(f"months must be a whole number of months, at least 1, got {months!r}")


def _check_margin(gross_margin_pct) -> float:
    try:
        g = float(gross_margin_pct)
    except (TypeError, ValueError) as exc:
        raise AcquisitionError(f"gross_margin_pct must be a number between 0 and 100, got {gross_margin_pct!r}") from exc
    if not 0 < g <= 100:
        raise AcquisitionError(f"gross_margin_pct must be above 0 and at most 100 (a percentage of net revenue), got {gross_margin_pct!r}")
    return g


def _check_ids(customers: pd.DataFrame) -> None:
    dup = customers["customer_id"].duplicated(keep=False)
    if dup.any():
        shown = ", ".join(map(repr, customers.loc[dup, "customer_id"].unique()[:3]))
        raise SchemaError(f"customers.customer_id: {int(dup.sum()):,} of {len(customers):,} rows share an identifier with another row (e.g. {shown})")


def _check_dates(df: pd.DataFrame, table: str, column: str) -> None:
    bad = df[column].isna()
    if bad.any():
        shown = ", ".join(f"row {i + 1}" for i in np.flatnonzero(bad.to_numpy())[:3])
        raise SchemaError(f"{table}.{column}: {int(bad.sum()):,} of {len(df):,} rows have no date (e.g. {shown})")


def _channels(customers: pd.DataFrame) -> pd.Series:
    """Each customer's acquisition channel as text, ``(unknown)`` where it is missing or absent."""
    if "acquisition_channel" not in customers.columns:
        return pd.Series(UNKNOWN_CHANNEL, index=customers.index, dtype=object)
    ch = customers["acquisition_channel"].astype(object)
    ch = ch.where(ch.notna() & (ch.astype(str).str.strip() != ""), UNKNOWN_CHANNEL)
    return ch.astype(str)


def _periods_in(start: pd.Timestamp, end: pd.Timestamp, period: str):
    if period == "all":
        return [_window_label(start, end)]
    return list(pd.period_range(start, end, freq=_PANDAS_FREQ[period]))


def _window_label(start: pd.Timestamp, end: pd.Timestamp) -> str:
    return f"{start:%Y-%m-%d} to {end:%Y-%m-%d}"


def _assign_period(days: pd.Series, period: str, start: pd.Timestamp, end: pd.Timestamp) -> pd.Series:
    if period == "all":
        return pd.Series(_window_label(start, end), index=days.index, dtype=object)
    return days.dt.to_period(_PANDAS_FREQ[period])


def _in_window(days: pd.Series, start: pd.Timestamp, end: pd.Timestamp) -> pd.Series:
    return (days >= start) & (days < end + pd.Timedelta(days=1))


def _show(value) -> str:
    """A cell value for an error message: numbers as numbers, text quoted."""
    value = value.item() if isinstance(value, np.generic) else value
    return repr(value)


def _fmt_money(x: float) -> str:
    return f"{x:,.2f}"


# ----------------------------------------------------------------------------- new customers and CAC


def _acquisition_days(customers: pd.DataFrame, acquired: str, transactions) -> pd.DataFrame:
    """customer_id, channel, day (the acquisition day) of every acquired customer."""
    frame = pd.DataFrame({"customer_id": customers["customer_id"].astype(str).to_numpy(), "channel": _channels(customers).to_numpy()})
    if acquired == "signup":
        frame["day"] = customers["signup_date"].dt.normalize().to_numpy()
        return frame
    if transactions is None:
        raise AcquisitionError('acquired="first_purchase" needs the transactions table (transactions=...)')
    _require(transactions, "transactions", ["customer_id", "timestamp", "amount"])
    t = _mem(transactions, ["customer_id", "timestamp", "amount"])
    first = execute(t.filter(t.amount >= 0).group_by("customer_id").aggregate(first=t.timestamp.min()))
    first["customer_id"] = first["customer_id"].astype(str)
    out = first.merge(frame, on="customer_id", how="left")
    out["channel"] = out["channel"].fillna(UNKNOWN_CHANNEL)
    out["day"] = pd.to_datetime(out["first"], cache=False).dt.normalize()  # cache=False: same result, no scan for repeats
    return out[["customer_id", "channel", "day"]]


def _window(customers_days: pd.Series, spend_days: pd.Series | None, observation_start, observation_end) -> tuple[pd.Timestamp, pd.Timestamp]:
    """The window: the given dates, else the first and last day of marketing_spend (else of the acquisitions)."""
    start, end = _day(observation_start, "observation_start"), _day(observation_end, "observation_end")
    ref = spend_days if spend_days is not None and len(spend_days) else customers_days
    if (start is None or end is None) and not len(ref):
        raise AcquisitionError("customers and marketing_spend are both empty: give observation_start and observation_end")
    start = start if start is not None else ref.min().normalize()
    end = end if end is not None else ref.max().normalize()
    if start > end:
        raise AcquisitionError(f"observation_start {start.date()} is after observation_end {end.date()}")
    return start, end


def new_customers(customers: pd.DataFrame, *, period: str = "M", observation_start=None, observation_end=None,
                  acquired: str = "signup", transactions: pd.DataFrame | None = None) -> pd.DataFrame:
    """New customers per channel and period: one row per channel and period of the window, zeros included.

    New customers of a channel in a period: customers whose sign-up day falls
    in the period, by acquisition channel (``(unknown)`` where missing);
    ``acquired="first_purchase"`` counts them on their first purchase day
    instead (needs ``transactions``). The window defaults to the first and
    last acquisition day. Columns: channel, period, new_customers.
    """
    _require(customers, "customers", ["customer_id", "signup_date"])
    _check_period(period)
    if acquired not in _ACQUIRED:
        raise AcquisitionError(f"acquired must be one of {list(_ACQUIRED)}, got {acquired!r}")
    _check_ids(customers)
    _check_dates(customers, "customers", "signup_date")
    acq = _acquisition_days(customers, acquired, transactions)
    start, end = _window(acq["day"], None, observation_start, observation_end)
    return _count_new(acq, start, end, period)


def _count_new(acq: pd.DataFrame, start, end, period: str, channels=()) -> pd.DataFrame:
    inside = acq[_in_window(acq["day"], start, end)]
    counts = inside.groupby(["channel", _assign_period(inside["day"], period, start, end).rename("period")]).size()
    all_channels = sorted(set(acq["channel"]) | set(channels))
    grid = pd.MultiIndex.from_product([all_channels, _periods_in(start, end, period)], names=["channel", "period"])
    out = counts.reindex(grid, fill_value=0).rename("new_customers").reset_index()
    out["new_customers"] = out["new_customers"].astype(np.int64)
    return out


def cac(customers: pd.DataFrame, marketing_spend: pd.DataFrame, *, period: str = "M", observation_start=None, observation_end=None,
        acquired: str = "signup", transactions: pd.DataFrame | None = None) -> pd.DataFrame:
    """Customer acquisition cost: one row per channel and period with spend, new customers and CAC.

    CAC of a channel in a period = the channel's marketing spend in the
    period / its new customers in the same period (no lag). Where a channel
    spent and won no one, ``cac`` is missing (not infinite) and ``note`` says
    so; with no spend it is 0. ``paid`` marks channels with spend above zero
    in the window. ``period``: W, M (default), Q, Y or "all" (the whole
    window, one row per channel). The window defaults to the first and last
    day of ``marketing_spend``. New customers: see ``new_customers``
    (``acquired``). Every channel of either table appears in every period,
    empty periods included.
    Columns: channel, period, paid, spend, new_customers, cac, note.
    """
    _require(customers, "customers", ["customer_id", "signup_date"])
    _require(marketing_spend, "marketing_spend", ["date", "channel", "spend"])
    _check_period(period)
    if acquired not in _ACQUIRED:
        raise AcquisitionError(f"acquired must be one of {list(_ACQUIRED)}, got {acquired!r}")
    _check_ids(customers)
    _check_dates(customers, "customers", "signup_date")
    _check_dates(marketing_spend, "marketing_spend", "date")
    spend = pd.DataFrame({"day": marketing_spend["date"].dt.normalize(), "channel": marketing_spend["channel"].astype(str),
                          "spend": pd.to_numeric(marketing_spend["spend"], errors="coerce").astype(float)})
    bad = ~np.isfinite(spend["spend"].to_numpy()) | (spend["spend"] < 0).to_numpy()
    if bad.any():
        shown = "; ".join(f"row {i + 1}: {_show(marketing_spend['spend'].iloc[i])}" for i in np.flatnonzero(bad)[:3])
        raise SchemaError(f"marketing_spend.spend: {int(bad.sum()):,} of {len(spend):,} rows are not a number of zero or more (e.g. {shown})")
    acq = _acquisition_days(customers, acquired, transactions)
    start, end = _window(acq["day"], spend["day"], observation_start, observation_end)
    spend = spend[_in_window(spend["day"], start, end)]
    spent = spend.groupby(["channel", _assign_period(spend["day"], period, start, end).rename("period")])["spend"].sum()
    out = _count_new(acq, start, end, period, channels=spend["channel"].unique())
    out["spend"] = spent.reindex(pd.MultiIndex.from_frame(out[["channel", "period"]]), fill_value=0.0).to_numpy()
    paid = set(spend.loc[spend["spend"] > 0, "channel"])
    out["paid"] = out["channel"].isin(paid)
    out = out[["channel", "period", "paid", "spend", "new_customers"]]
    out["cac"], out["note"] = _ratio(out["spend"], out["new_customers"])
    out.attrs.update(observation_start=f"{start:%Y-%m-%d}", observation_end=f"{end:%Y-%m-%d}", period=period, acquired=acquired)
    return out.reset_index(drop=True)


def _ratio(spend: pd.Series, customers: pd.Series) -> tuple[pd.Series, pd.Series]:
    """spend / customers with the missing cases named: (values, notes)."""
    s, n = spend.to_numpy(float), customers.to_numpy(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        value = np.where(n > 0, s / np.where(n > 0, n, 1), np.nan)
    note = np.where(n > 0, np.where(s > 0, "", "no spend"),
                    np.where(s > 0, [f"spent {_fmt_money(x)} and won no new customer: CAC undefined" for x in s],
                             "no spend and no new customer"))
    return pd.Series(value, index=spend.index), pd.Series(note, index=spend.index, dtype=object)


def cac_totals(cac_table: pd.DataFrame) -> pd.DataFrame:
    """Blended and paid CAC per period, from a ``cac`` table.

    Blended CAC = all spend / all new customers (organic and unknown channels
    included). Paid CAC = spend of the paid channels / new customers from
    paid channels. ``organic_share_pct``: new customers from channels without
    spend, % of all new customers. Undefined ratios are missing with a note.
    Columns: spend, new_customers, blended_cac, paid_spend, paid_new_customers,
    paid_cac, organic_share_pct, note; indexed by period.
    """
    _require(cac_table, "cac table", ["channel", "period", "paid", "spend", "new_customers"])
    t = cac_table.assign(paid_spend=cac_table["spend"].where(cac_table["paid"], 0.0),
                         paid_new=cac_table["new_customers"].where(cac_table["paid"], 0))
    g = t.groupby("period", sort=True)
    out = pd.DataFrame({"spend": g["spend"].sum(), "new_customers": g["new_customers"].sum().astype(np.int64),
                        "paid_spend": g["paid_spend"].sum(), "paid_new_customers": g["paid_new"].sum().astype(np.int64)})
    out["blended_cac"], blended_note = _ratio(out["spend"], out["new_customers"])
    out["paid_cac"], paid_note = _ratio(out["paid_spend"], out["paid_new_customers"])
    unpaid = out["new_customers"] - out["paid_new_customers"]
    out["organic_share_pct"] = np.where(out["new_customers"] > 0, 100 * unpaid / out["new_customers"].clip(lower=1), np.nan)
    notes = [", ".join(x for x in (f"blended: {b}" if b else "", f"paid: {p}" if p else "") if x) for b, p in zip(blended_note, paid_note)]
    out["note"] = notes
    return out[["spend", "new_customers", "blended_cac", "paid_spend", "paid_new_customers", "paid_cac", "organic_share_pct", "note"]]


def cost_per_lead(marketing_spend: pd.DataFrame, *, period: str = "M", observation_start=None, observation_end=None) -> pd.DataFrame:
    """Cost per lead per channel and period: spend on rows with a lead count / those leads.

    Rows without a lead count are left out of both and counted in
    ``rows_without_leads``; where the leads are 0 the cost per lead is missing
    with a note. The window defaults to the first and last day of
    ``marketing_spend``. Columns: channel, period, spend, leads,
    cost_per_lead, rows_without_leads, note.
    """
    _require(marketing_spend, "marketing_spend", ["date", "channel", "spend"])
    if "leads" not in marketing_spend.columns:
        raise AcquisitionError("marketing_spend has no leads column: cost per lead needs marketing_spend.leads (leads per row)")
    _check_period(period)
    _check_dates(marketing_spend, "marketing_spend", "date")
    leads = pd.to_numeric(marketing_spend["leads"], errors="coerce").astype(float)
    bad = (marketing_spend["leads"].notna() & leads.isna()) | (leads < 0) | np.isinf(leads)
    if bad.any():
        shown = "; ".join(f"row {i + 1}: {_show(marketing_spend['leads'].iloc[i])}" for i in np.flatnonzero(bad.to_numpy())[:3])
        raise SchemaError(f"marketing_spend.leads: {int(bad.sum()):,} of {len(leads):,} rows are not a count of zero or more (e.g. {shown})")
    ms = pd.DataFrame({"day": marketing_spend["date"].dt.normalize(), "channel": marketing_spend["channel"].astype(str),
                       "spend": marketing_spend["spend"].astype(float), "leads": leads})
    start, end = _window(ms["day"], ms["day"], observation_start, observation_end)
    ms = ms[_in_window(ms["day"], start, end)]
    ms = ms.assign(period=_assign_period(ms["day"], period, start, end), has=ms["leads"].notna())
    grid = pd.MultiIndex.from_product([sorted(ms["channel"].unique()), _periods_in(start, end, period)], names=["channel", "period"])
    with_leads = ms[ms["has"]].groupby(["channel", "period"])[["spend", "leads"]].sum().reindex(grid, fill_value=0.0)
    without = ms[~ms["has"]].groupby(["channel", "period"]).size().reindex(grid, fill_value=0)
    out = with_leads.reset_index()
    out["rows_without_leads"] = without.to_numpy().astype(np.int64)
    value, _ = _ratio(out["spend"], out["leads"])
    out["cost_per_lead"] = value
    base = np.where(out["leads"] > 0, "", np.where(out["spend"] > 0, "spend and no lead: cost per lead undefined", "no spend and no lead"))
    extra = [f"{k:,} row(s) without a lead count left out" if k else "" for k in out["rows_without_leads"]]
    out["note"] = ["; ".join(x for x in (b, e) if x) for b, e in zip(base, extra)]
    return out[["channel", "period", "spend", "leads", "cost_per_lead", "rows_without_leads", "note"]]


# ----------------------------------------------------------------------------- value per customer


def _margin_by_month(customers: pd.DataFrame, transactions: pd.DataFrame, months: int, end: pd.Timestamp) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(customers with a complete first ``months`` months: customer_id, channel; their net revenue per month k = 1..months)."""
    cust = pd.DataFrame({"customer_id": customers["customer_id"].astype(str).to_numpy(), "channel": _channels(customers).to_numpy(),
                         "signup": customers["signup_date"].dt.normalize().astype("datetime64[us]").to_numpy()})
    horizon = pd.Timedelta(days=months * DAYS_PER_MONTH)
    complete = cust[cust["signup"] + horizon <= end + pd.Timedelta(days=1)]
    if complete.empty:
        return complete[["customer_id", "channel"]], pd.DataFrame({"customer_id": [], "month": [], "net_revenue": []})
    t = _mem(transactions, ["customer_id", "timestamp", "amount"])
    c = _mem(complete, ["customer_id", "signup"])
    j = t.join(c, "customer_id")
    days = (j.timestamp.epoch_seconds() - j.signup.epoch_seconds()) / 86_400.0
    j = j.mutate(days=days)
    j = j.filter((j.days >= 0) & (j.days < months * DAYS_PER_MONTH))
    j = j.mutate(month=(j.days / DAYS_PER_MONTH).floor().cast("int64") + 1)
    per = execute(j.group_by(["customer_id", "month"]).aggregate(net_revenue=j.amount.sum()))
    per["customer_id"] = per["customer_id"].astype(str)
    return complete[["customer_id", "channel"]].reset_index(drop=True), per


def _tx_end(transactions: pd.DataFrame, observation_end) -> pd.Timestamp:
    end = _day(observation_end, "observation_end")
    if end is None:
        if transactions.empty:
            raise AcquisitionError("transactions: the table is empty; give observation_end")
        end = transactions["timestamp"].max().normalize()
    return end


def historical_value(customers: pd.DataFrame, transactions: pd.DataFrame, *, gross_margin_pct: float, months: int = 12,
                     observation_end=None) -> pd.Series:
    """Each customer's historical value: gross margin on their net revenue in their first ``months`` months.

    Value = (purchases minus refunds in the ``months`` x 30.44 days from the
    sign-up day) x ``gross_margin_pct`` / 100. Customers whose first months
    end after ``observation_end`` (default: the last transaction day) are not
    complete: they get no value, and their number is in
    ``attrs["excluded_incomplete"]``. Customers who never bought are worth 0.
    Returns a Series named ``value`` indexed by customer_id.
    """
    _require(customers, "customers", ["customer_id", "signup_date"])
    _require(transactions, "transactions", ["customer_id", "timestamp", "amount"])
    _check_months(months)
    g = _check_margin(gross_margin_pct)
    _check_ids(customers)
    _check_dates(customers, "customers", "signup_date")
    end = _tx_end(transactions, observation_end)
    complete, per = _margin_by_month(customers, transactions, months, end)
    revenue = per.groupby("customer_id")["net_revenue"].sum() if len(per) else pd.Series(dtype=float)
    value = revenue.reindex(complete["customer_id"], fill_value=0.0).astype(float) * g / 100
    value.index.name = "customer_id"
    value.name = "value"
    value.attrs.update(months=int(months), gross_margin_pct=g, observation_end=f"{end:%Y-%m-%d}", excluded_incomplete=int(len(customers) - len(complete)),
                       definition=f"gross margin ({g:g}% of net revenue) in the first {months} months after sign-up")
    return value


def _channel_cac(cac_table: pd.DataFrame) -> pd.DataFrame:
    """CAC per channel over every row of a cac table, plus the paid and blended rows (spend, new_customers, cac, note)."""
    _require(cac_table, "cac table", ["channel", "paid", "spend", "new_customers"])
    g = cac_table.groupby("channel", sort=True)
    per = pd.DataFrame({"paid": g["paid"].any(), "spend": g["spend"].sum(), "new_customers": g["new_customers"].sum()})
    paid = per[per["paid"]]
    per.loc[PAID_ROW] = [True, paid["spend"].sum(), paid["new_customers"].sum()]
    per.loc[BLENDED_ROW] = [False, per["spend"].iloc[:-1].sum(), per["new_customers"].iloc[:-1].sum()]
    per["paid"] = per["paid"].astype(bool)
    per["new_customers"] = per["new_customers"].astype(np.int64)
    per["cac"], per["note"] = _ratio(per["spend"], per["new_customers"])
    per.index.name = "channel"
    return per


def _buyers(transactions: pd.DataFrame) -> pd.Index:
    """Customers with at least one purchase (amount of 0 or more; refunds are not purchases)."""
    t = _mem(transactions, ["customer_id", "amount"])
    return pd.Index(execute(t.filter(t.amount >= 0).select("customer_id").distinct())["customer_id"].astype(str))


def _channel_members(customers: pd.DataFrame, per: pd.DataFrame, cac_table: pd.DataFrame, transactions) -> dict[str, pd.Index]:
    """Customer ids of each row of a channel table (the summary rows: paid channels, all).

    Customers who signed up after the end of the CAC table's window are not members (they did not exist yet).
    When the CAC table counts customers on their first purchase, only customers who bought are members, so
    value and CAC describe the same customers.
    """
    keep = pd.Series(True, index=customers.index)
    end = _day(cac_table.attrs.get("observation_end"), "the CAC table's observation_end")
    if end is not None:
        keep &= customers["signup_date"].dt.normalize() <= end
    if cac_table.attrs.get("acquired") == "first_purchase":
        if transactions is None:
            raise AcquisitionError('the CAC table counts customers on their first purchase (acquired="first_purchase"): '
                                   "pass transactions= so the same customers are valued")
        keep = customers["customer_id"].astype(str).isin(_buyers(transactions))
    ids = pd.Series(customers.loc[keep, "customer_id"].astype(str).to_numpy(), index=_channels(customers)[keep].to_numpy())
    members = {ch: pd.Index(ids[ids.index == ch].to_numpy()) for ch in per.index if ch not in (PAID_ROW, BLENDED_ROW)}
    paid_channels = [ch for ch in members if per.at[ch, "paid"]]
    members[PAID_ROW] = pd.Index(ids[ids.index.isin(paid_channels)].to_numpy())
    members[BLENDED_ROW] = pd.Index(ids.to_numpy())
    return members


def cac_payback(cac_table: pd.DataFrame, customers: pd.DataFrame, transactions: pd.DataFrame, *, gross_margin_pct: float,
                months: int = 12, observation_end=None, method: str = "average") -> pd.DataFrame:
    """CAC payback period in months per channel (and for all paid channels and blended).

    ``method="average"``: CAC / monthly gross margin per new customer, where
    the monthly margin is the mean gross margin (``gross_margin_pct`` of net
    revenue) of the channel's customers over their first ``months`` months,
    divided by ``months``; customers whose first months are not complete at
    ``observation_end`` are excluded (counted in ``customers_incomplete``).
    ``method="cumulative"``: the first month after acquisition by whose end
    the mean cumulative margin per customer reaches the CAC (missing when not
    within ``months``). CAC per channel: all spend / all new customers of the
    ``cac_table`` rows; when it counts customers on their first purchase, only
    customers who bought are valued. A CAC of 0 pays back at once (0
    months); an undefined CAC or a margin of 0 or less gives a missing
    payback with a note.
    Columns: paid, cac, customers_valued, customers_incomplete,
    monthly_margin, payback_months, note; indexed by channel.
    """
    _require(customers, "customers", ["customer_id", "signup_date"])
    _require(transactions, "transactions", ["customer_id", "timestamp", "amount"])
    _check_months(months)
    g = _check_margin(gross_margin_pct)
    if method not in _PAYBACK_METHODS:
        raise AcquisitionError(f"method must be one of {list(_PAYBACK_METHODS)}, got {method!r}")
    _check_ids(customers)
    _check_dates(customers, "customers", "signup_date")
    per = _channel_cac(cac_table)
    end = _tx_end(transactions, observation_end)
    complete, by_month = _margin_by_month(customers, transactions, months, end)
    members = _channel_members(customers, per, cac_table, transactions)
    complete_ids = pd.Index(complete["customer_id"])
    # mean gross margin per customer in each month 1..months, per row of the table
    margin = by_month.assign(margin=by_month["net_revenue"] * g / 100).pivot_table(index="customer_id", columns="month", values="margin", aggfunc="sum")
    margin = margin.reindex(columns=range(1, months + 1), fill_value=0.0).fillna(0.0)
    rows = []
    for ch in per.index:
        valued = members[ch].intersection(complete_ids)
        curve = margin.reindex(valued, fill_value=0.0).mean(axis=0) if len(valued) else pd.Series(np.nan, index=range(1, months + 1))
        monthly = float(curve.sum() / months) if len(valued) else np.nan
        c, cac_note = per.at[ch, "cac"], per.at[ch, "note"]
        payback, note = np.nan, ""
        if len(valued) == 0:
            note = f"no customer with {months} complete months: margin unknown"
        elif np.isnan(c):
            note = cac_note
        elif c == 0:
            payback, note = 0.0, "no acquisition spend: nothing to pay back"
        elif method == "average":
            if monthly > 0:
                payback = c / monthly
            else:
                note = "gross margin per customer is not above 0: never pays back"
        else:
            reached = np.flatnonzero(curve.cumsum().to_numpy() >= c)
            if reached.size:
                payback = float(reached[0] + 1)
            else:
                note = f"not paid back within {months} months"
        rows.append({"channel": ch, "paid": bool(per.at[ch, "paid"]), "cac": c, "customers_valued": int(len(valued)),
                     "customers_incomplete": int(len(members[ch]) - len(valued)), "monthly_margin": monthly,
                     "payback_months": payback, "note": note})
    out = pd.DataFrame(rows).set_index("channel")
    out.attrs.update(method=method, months=int(months), gross_margin_pct=g, observation_end=f"{end:%Y-%m-%d}")
    return out


def clv_cac(cac_table: pd.DataFrame, values: pd.Series, customers: pd.DataFrame, *, benchmark: float = BENCHMARK_CLV_CAC,
            transactions: pd.DataFrame | None = None) -> pd.DataFrame:
    """CLV:CAC per channel, for all paid channels and blended, against the benchmark (3:1).

    CLV:CAC = mean value of the channel's customers that have one (``values``:
    a per-customer value Series indexed by customer_id, such as
    ``historical_value`` or a model CLV in margin terms) / the channel's CAC
    (all spend / all new customers of the ``cac_table`` rows). Customers
    without a value are excluded and counted (``customers_without_value``);
    customers who signed up after the window of ``cac_table`` are left out.
    The paid row uses the paid-channel customers and the paid CAC; the
    blended row all customers and the blended CAC. Where the CAC is 0 or
    undefined, or no customer has a value, CLV:CAC is missing with a note.
    When ``cac_table`` counts customers on their first purchase
    (``acquired="first_purchase"``), only customers who bought are valued,
    and ``transactions`` is needed to know who did.
    Columns: paid, cac, customers, customers_valued, customers_without_value,
    mean_value, clv_cac, vs_benchmark, note; indexed by channel.
    """
    _require(customers, "customers", ["customer_id", "signup_date"])
    if not isinstance(values, pd.Series):
        raise AcquisitionError(f"values must be a pandas Series of values indexed by customer_id, got {type(values).__name__}")
    if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        raise AcquisitionError(f"values must be numbers, got dtype {values.dtype}")
    try:
        bench = float(benchmark)
    except (TypeError, ValueError) as exc:
        raise AcquisitionError(f"benchmark must be a positive number (3 for 3:1), got {benchmark!r}") from exc
    if not bench > 0 or not np.isfinite(bench):
        raise AcquisitionError(f"benchmark must be a positive number (3 for 3:1), got {benchmark!r}")
    _check_ids(customers)
    v = values.astype(float)
    v.index = v.index.astype(str)
    inf = np.isinf(v.to_numpy())
    if inf.any():
        raise AcquisitionError(f"values: {int(inf.sum()):,} of {len(v):,} customers have an infinite value (e.g. {', '.join(map(repr, v.index[inf][:3]))})")
    if v.index.duplicated().any():
        dup = v.index[v.index.duplicated()].unique()
        raise AcquisitionError(f"values: {len(dup):,} customer_id(s) appear more than once (e.g. {', '.join(map(repr, dup[:3]))})")
    known = pd.Index(customers["customer_id"].astype(str))
    unknown = ~v.index.isin(known)
    if unknown.any():
        raise AcquisitionError(f"values: {int(unknown.sum()):,} of {len(v):,} customer_ids are not in customers "
                               f"(e.g. {', '.join(map(repr, v.index[unknown][:3]))}); value the customers of the same dataset")
    v = v.dropna()  # a missing value is no value: counted below with the customers without one
    per = _channel_cac(cac_table)
    members = _channel_members(customers, per, cac_table, transactions)
    rows = []
    for ch in per.index:
        ids = members[ch]
        got = v.reindex(ids.intersection(v.index))
        mean = float(got.mean()) if len(got) else np.nan
        c, note = per.at[ch, "cac"], ""
        ratio = np.nan
        if len(ids) == 0:
            note = "no customer acquired through this channel"
        elif len(got) == 0:
            note = "no customer of this channel has a value"
        elif np.isnan(c):
            note = per.at[ch, "note"]
        elif c == 0:
            note = "no acquisition spend: CLV:CAC undefined (CAC is 0)"
        else:
            ratio = mean / c
        status = "undefined" if np.isnan(ratio) else (f"at or above {bench:g}:1" if ratio >= bench else f"below {bench:g}:1")
        rows.append({"channel": ch, "paid": bool(per.at[ch, "paid"]), "cac": c, "customers": int(len(ids)), "customers_valued": int(len(got)),
                     "customers_without_value": int(len(ids) - len(got)), "mean_value": mean, "clv_cac": ratio,
                     "vs_benchmark": status, "note": note})
    out = pd.DataFrame(rows).set_index("channel")
    out.attrs.update(benchmark=bench)
    return out


# ----------------------------------------------------------------------------- plots


def plot_spend_vs_customers(cac_table: pd.DataFrame, *, ax=None, title: str = "Spend and new customers per channel"):
    """Two panels over time: spend per channel (top) and new customers per channel (bottom), from a ``cac`` table.

    ``ax``: a pair of axes (created, sharing the time axis, when None). Returns the pair.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    top, bottom = ax[0], ax[1]
    colours = plt.rcParams["axes.prop_cycle"].by_key().get("color", ["C0"])
    for i, (ch, rows) in enumerate(cac_table.groupby("channel", sort=True)):
        rows = rows.sort_values("period")
        x = rows["period"].dt.to_timestamp() if isinstance(rows["period"].dtype, pd.PeriodDtype) else rows["period"].astype(str)
        colour = colours[i % len(colours)]  # one colour per channel in both panels
        if rows["paid"].any():
            top.plot(x, rows["spend"].to_numpy(float), marker="o", markersize=2, label=ch, color=colour)
        bottom.plot(x, rows["new_customers"].to_numpy(float), marker="o", markersize=2, label=ch, color=colour,
                    linestyle="-" if rows["paid"].any() else "--")
    period = cac_table.attrs.get("period", "M")
    unit = {"W": "week", "M": "month", "Q": "quarter", "Y": "year"}.get(period, "period")
    top.set(title=title, ylabel=f"spend per {unit} (currency)")
    bottom.set(xlabel=unit, ylabel=f"new customers per {unit}")
    top.set_ylim(bottom=0)
    bottom.set_ylim(bottom=0)
    top.legend(fontsize=8, ncol=2)
    bottom.legend(fontsize=8, ncol=3, title="dashed: no spend", title_fontsize=8)
    return ax


def _bars_with_missing(ax, series: pd.Series, notes: pd.Series, *, label_fmt: str):
    labels = [str(i) for i in series.index]
    y = series.to_numpy(float)
    shown = np.where(np.isnan(y), 0.0, y)
    summary = [label in (PAID_ROW, BLENDED_ROW) for label in labels]
    bars = ax.bar(labels, shown, color=["0.55" if s else "C0" for s in summary])  # summary rows in grey
    top = np.nanmax(shown) if len(shown) and np.isfinite(np.nanmax(shown)) else 1.0
    for bar, value, note in zip(bars, y, notes):
        text = "n/a" if np.isnan(value) else label_fmt.format(value)
        ax.annotate(text, (bar.get_x() + bar.get_width() / 2, bar.get_height() + 0.01 * max(top, 1e-9)), ha="center", va="bottom", fontsize=8)
    ax.tick_params(axis="x", labelrotation=30)
    return bars


def plot_cac(table: pd.DataFrame, *, column: str = "cac", ax=None, title: str = "Customer acquisition cost per channel",
             ylabel: str = "CAC (currency per new customer)"):
    """Bars of a per-channel column (CAC by default) from a channel table; undefined values are labelled n/a."""
    from .plots import new_ax

    ax = new_ax(ax)
    notes = table["note"] if "note" in table.columns else pd.Series("", index=table.index)
    _bars_with_missing(ax, table[column], notes, label_fmt="{:,.2f}")
    ax.set(title=title, xlabel="channel", ylabel=ylabel)
    return ax


def plot_clv_cac(table: pd.DataFrame, *, ax=None, title: str = "CLV:CAC per channel"):
    """Bars of CLV:CAC per channel (from ``clv_cac``) with the benchmark line; undefined ratios are labelled n/a."""
    from .plots import new_ax

    ax = new_ax(ax)
    bench = table.attrs.get("benchmark", BENCHMARK_CLV_CAC)
    _bars_with_missing(ax, table["clv_cac"], table["note"], label_fmt="{:.2f}")
    ax.axhline(bench, color="black", linestyle="--", linewidth=1, label=f"benchmark {bench:g}:1")
    ax.set(title=title, xlabel="channel", ylabel="CLV:CAC (value per unit of CAC)")
    ax.legend(fontsize=8)
    return ax
