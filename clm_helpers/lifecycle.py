"""Lifecycle stages: where each customer stands in each period, and how the base moves between stages.

Stages follow the lifecycle charts of product analytics tools (Amplitude's
"Lifecycle", Mixpanel's "Retention > lifecycle"), computed from activity
events (purchases by default; product events work the same way):

* **new**: first active period ever is this period;
* **returning**: active this period and the previous one;
* **resurrecting**: active this period, not the previous one, but active before;
* **dormant**: active the previous period, not this one;
* **inactive**: last active 2 or more periods ago, fewer than ``churn_after``;
* **churned**: no activity for ``churn_after`` periods or more (the
  parameterised inactivity window of non-contractual churn);
* **at_risk**: an overlay from the CLV models: a customer who is not new and
  not churned whose probability of being alive is below ``at_risk_below``.

A customer enters the lifecycle with their first activity; customers who
signed up but never acted are not in it (the metrics mountain counts them).
Periods are calendar months ("M") or ISO weeks starting Monday ("W"); only
complete periods up to ``observation_end`` are used, so the last period is
never a partial one.

The per-period counts and per-customer stages are Ibis expressions (run on
DuckDB here, on Spark unchanged); only per-period counts and one row per
customer come back to pandas.
"""

from __future__ import annotations

import ibis
import numpy as np
import pandas as pd

from .data import OptionError
from .engine import as_table, execute

__all__ = [
    "STAGES",
    "ACTIVE_STAGES",
    "period_bounds",
    "stage_counts",
    "customer_stages",
    "transition_matrix",
    "metrics_mountain",
    "lifecycle_score",
    "plot_lifecycle",
    "plot_transition_matrix",
    "plot_mountain",
]

ACTIVE_STAGES = ("new", "returning", "resurrecting")
STAGES = ("new", "returning", "resurrecting", "dormant", "inactive", "at_risk", "churned")

#: Health of each stage, 0-1, used by ``lifecycle_score`` when no P(alive) is given.
STAGE_HEALTH = {"new": 1.0, "returning": 1.0, "resurrecting": 0.8, "dormant": 0.5, "inactive": 0.25, "at_risk": 0.2, "churned": 0.0}


def _check_period(period: str) -> None:
    if period not in ("M", "W"):
        raise OptionError(f"period must be 'M' (calendar month) or 'W' (ISO week), got {period!r}")


def _period_index(ts, period: str):
    """Integer index of the period containing an Ibis timestamp: months since year 0, or weeks since 1969-12-29."""
    if period == "M":
        return ts.year() * 12 + ts.month() - 1
    days = ts.epoch_seconds() // 86_400
    return (days + 3) // 7  # 1970-01-01 was a Thursday: +3 makes weeks start on Monday


def _period_start(index, period: str) -> pd.Timestamp:
    if period == "M":
        return pd.Timestamp(year=int(index) // 12, month=int(index) % 12 + 1, day=1)
    return pd.Timestamp("1969-12-29") + pd.Timedelta(weeks=int(index))


def _periods_of(indices: pd.Series, period: str):
    """The pandas Period of each period index, as a PeriodArray (each distinct index converted once)."""
    if len(indices) == 0:
        return []
    distinct, position = np.unique(indices.to_numpy(), return_inverse=True)
    return pd.PeriodIndex([_period_start(i, period).to_period(period) for i in distinct]).array.take(position.ravel())


def _index_of(day: pd.Timestamp, period: str) -> int:
    if period == "M":
        return day.year * 12 + day.month - 1
    return (day - pd.Timestamp("1969-12-29")).days // 7


def period_bounds(observation_end, *, period: str = "M") -> tuple[int, pd.Timestamp]:
    """The last complete period at ``observation_end`` (inclusive day): its index and its start date."""
    _check_period(period)
    end = pd.Timestamp(observation_end).normalize()
    following = end + pd.Timedelta(days=1)
    last = _index_of(following, period) - 1  # the period containing the day after the end is incomplete
    return last, _period_start(last, period)


def _activity(events: pd.DataFrame, observation_end, period: str):
    """Distinct (customer, period index) pairs with activity up to the end of the last complete period."""
    last, _ = period_bounds(observation_end, period=period)
    purchases = "amount" in events.columns
    t = as_table(events, ["customer_id", "timestamp", "amount"] if purchases else ["customer_id", "timestamp"])
    if purchases:  # purchases: refunds are not activity
        t = t.filter(t.amount >= 0)
    p = _period_index(t.timestamp, period)
    act = t.select(customer_id=t.customer_id, p=p).filter(lambda s: s.p <= last).distinct()
    return act, last


def stage_counts(events: pd.DataFrame, *, observation_end, period: str = "M") -> pd.DataFrame:
    """Customers per stage and period: new, returning, resurrecting, dormant (as a positive count), pulse ratio and churn.

    ``events`` has customer_id and timestamp (transactions: rows with a
    negative amount are refunds, not activity). One row per complete period
    from the first activity to ``observation_end``. ``pulse_ratio`` =
    (new + resurrecting) / dormant: above 1 the active base grows; missing
    where no one went dormant. ``churn_pct`` (period churn) = dormant this
    period / active the previous period x 100: the share of last period's
    buyers who did not buy again; missing for the first period.
    """
    act, last = _activity(events, observation_end, period)
    w = ibis.window(group_by=act.customer_id, order_by=act.p)
    act = act.mutate(prev=act.p.lag().over(w), nxt=act.p.lead().over(w))
    stage = ibis.cases((act.prev.isnull(), "new"), (act.prev == act.p - 1, "returning"), else_="resurrecting")
    active = act.group_by([act.p.cast("int64").name("p"), stage.name("stage")]).aggregate(customers=act.count())
    gone = act.filter((act.nxt.isnull() | (act.nxt > act.p + 1)) & (act.p < last))
    dormant = gone.group_by((gone.p + 1).cast("int64").name("p")).aggregate(customers=gone.count())
    # one query for both counts: the engine works out each customer's previous and next active period once
    found = execute(ibis.union(active, dormant.select("p", stage=ibis.literal("dormant"), customers="customers"), distinct=False))
    counts = found.pivot_table(index="p", columns="stage", values="customers", aggfunc="sum", fill_value=0)
    if counts.empty:
        return pd.DataFrame(columns=["new", "returning", "resurrecting", "dormant", "active", "pulse_ratio", "churn_pct"])
    full = range(int(counts.index.min()), last + 1)
    counts = counts.reindex(index=full, columns=["new", "returning", "resurrecting", "dormant"], fill_value=0).astype("int64")
    counts.columns.name = None
    counts["active"] = counts[list(ACTIVE_STAGES)].sum(axis=1)
    dormant_n = counts["dormant"].replace(0, np.nan)
    counts["pulse_ratio"] = ((counts["new"] + counts["resurrecting"]) / dormant_n).round(3)
    previous_active = counts["active"].shift(1).replace(0, np.nan)
    counts["churn_pct"] = (100 * counts["dormant"] / previous_active).round(2)
    counts.index = pd.PeriodIndex([_period_start(i, period) for i in counts.index], freq=period)
    counts.index.name = "period"
    return counts


def customer_stages(events: pd.DataFrame, *, observation_end, period: str = "M", at=None, churn_after: int = 3,
                    p_alive: pd.Series | None = None, at_risk_below: float = 0.3) -> pd.DataFrame:
    """Each customer's stage in one period (default: the last complete period at ``observation_end``).

    Returns one row per customer active at or before that period, with
    ``stage``, ``first_period``, ``last_active_period`` and
    ``periods_inactive`` (0 when active in it). ``churn_after`` (in periods,
    at least 2) is the inactivity window after which a customer counts as
    churned. With ``p_alive`` (a Series by customer_id, e.g. from the BG/NBD
    model), customers who are neither new nor churned and whose P(alive) is
    below ``at_risk_below`` are ``at_risk``.
    """
    if churn_after < 2:
        raise OptionError(f"churn_after must be at least 2 periods (1 period of inactivity is 'dormant'), got {churn_after}")
    act, last = _activity(events, observation_end, period)
    target = last if at is None else _index_of(pd.Period(at, freq=period).start_time, period)
    if target > last:
        raise OptionError(f"period {at} is not complete at observation_end {pd.Timestamp(observation_end):%Y-%m-%d}")
    upto = act.filter(act.p <= target)
    agg = upto.group_by("customer_id").aggregate(
        first=upto.p.min(), last=upto.p.max(), before=upto.p.max(where=upto.p < target)
    )
    df = execute(agg).set_index("customer_id").sort_index()
    k = target - df["last"]
    stage = np.select(
        [(k == 0) & (df["first"] == target), (k == 0) & (df["before"] == target - 1), k == 0, k == 1, k < churn_after],
        ["new", "returning", "resurrecting", "dormant", "inactive"],
        default="churned",
    )
    out = pd.DataFrame(
        {
            "stage": stage,
            "first_period": _periods_of(df["first"], period),
            "last_active_period": _periods_of(df["last"], period),
            "periods_inactive": k.astype("int64"),
        },
        index=df.index,
    )
    if p_alive is not None:
        p = pd.Series(p_alive).reindex(out.index)
        out["p_alive"] = p
        risky = out["stage"].isin(["returning", "resurrecting", "dormant", "inactive"]) & (p < at_risk_below)
        out.loc[risky, "stage"] = "at_risk"
    out["stage"] = pd.Categorical(out["stage"], categories=STAGES, ordered=True)
    out.attrs["period"] = str(_period_start(target, period).to_period(period))
    return out


def transition_matrix(before: pd.DataFrame, after: pd.DataFrame, *, normalize: bool = True) -> pd.DataFrame:
    """Customers moving from each stage (rows) in one period to each stage (columns) in a later one.

    ``before`` and ``after`` come from ``customer_stages`` at two periods.
    Customers who entered the lifecycle only in the later period appear in a
    row "(not yet a customer)". With ``normalize``, rows are percentages
    (each row sums to 100); otherwise counts.
    """
    joined = after[["stage"]].join(before[["stage"]].rename(columns={"stage": "from"}), how="left")
    origin = joined["from"].astype(object).where(joined["from"].notna(), "(not yet a customer)")
    rows = ["(not yet a customer)", *STAGES]
    table = pd.crosstab(pd.Categorical(origin, categories=rows), pd.Categorical(joined["stage"].astype(object), categories=list(STAGES)),
                        dropna=False)
    table.index.name, table.columns.name = "from", "to"
    table = table.loc[table.sum(axis=1) > 0]
    if normalize:
        table = table.div(table.sum(axis=1), axis=0).mul(100).round(1)
    return table


def metrics_mountain(customers: pd.DataFrame, transactions: pd.DataFrame, *, observation_end, surveys: pd.DataFrame | None = None,
                     activated: pd.Series | None = None, active_days: int = 90) -> pd.DataFrame:
    """Customers and revenue at each step from acquisition to advocacy.

    Steps (each a subset of the previous, except promoters): acquired (signed
    up by ``observation_end``), activated (where an activation flag per
    customer is given), purchased (at least one purchase), repeat (purchases
    on 2 or more distinct days), active (a purchase in the last
    ``active_days`` days), promoters (latest NPS answer 9 or 10; any customer).
    Revenue is each step's customers' net revenue (purchases minus refunds) up
    to ``observation_end``; shares are % of acquired.
    """
    end = pd.Timestamp(observation_end).normalize() + pd.Timedelta(days=1)
    base = customers.loc[customers["signup_date"] < end, "customer_id"]
    tx = as_table(transactions, ["customer_id", "timestamp", "amount"])
    tx = tx.filter(tx.timestamp < end)
    per = execute(
        tx.group_by("customer_id").aggregate(
            revenue=tx.amount.sum(),
            purchase_days=tx.timestamp.date().nunique(where=tx.amount >= 0),
            last=tx.timestamp.max(where=tx.amount >= 0),
        )
    ).set_index("customer_id")
    per = per.reindex(base)
    steps = {"acquired": pd.Series(True, index=base.to_numpy())}
    if activated is not None:
        steps["activated"] = pd.Series(activated).reindex(base).eq(True).to_numpy()
    steps["purchased"] = (per["purchase_days"].fillna(0) >= 1).to_numpy()
    steps["repeat"] = (per["purchase_days"].fillna(0) >= 2).to_numpy()
    steps["active"] = (per["last"] >= end - pd.Timedelta(days=active_days)).to_numpy()
    if surveys is not None:
        nps = surveys[(surveys["survey"] == "nps") & surveys["score"].notna() & (surveys["timestamp"] < end)]
        latest = nps.sort_values(["customer_id", "timestamp"]).groupby("customer_id")["score"].last()
        steps["promoters"] = latest.reindex(base).ge(9).to_numpy()
    revenue = per["revenue"].fillna(0.0).to_numpy()
    n0 = len(base)
    rows = []
    for step, mask in steps.items():
        mask = np.asarray(mask, dtype=bool)
        rows.append({"step": step, "customers": int(mask.sum()),
                     "share_of_acquired_pct": round(100 * mask.sum() / n0, 1) if n0 else np.nan,
                     "revenue": round(float(revenue[mask].sum()), 2)})
    return pd.DataFrame(rows).set_index("step")


def lifecycle_score(stages: pd.DataFrame, value: pd.Series, *, health_weight: float = 0.5) -> pd.DataFrame:
    """A 0-100 score per customer summarising stage health and expected future value.

    score = 100 x (health_weight x health + (1 - health_weight) x value_rank),
    where health is the customer's P(alive) when ``stages`` has it, else the
    stage's health in ``STAGE_HEALTH`` (new/returning 1, resurrecting 0.8,
    dormant 0.5, inactive 0.25, at_risk 0.2, churned 0), and value_rank is the
    percentile rank (0-1) of ``value`` (expected CLV, or historical revenue
    where no model is used) among these customers; a customer without a value
    ranks lowest.
    """
    if not 0 <= health_weight <= 1:
        raise OptionError(f"health_weight must be between 0 and 1, got {health_weight}")
    health = stages["stage"].astype(object).map(STAGE_HEALTH).astype(float)
    if "p_alive" in stages.columns:
        health = stages["p_alive"].fillna(health)
    v = pd.Series(value).reindex(stages.index)
    rank = v.rank(pct=True, method="average").fillna(0.0)
    score = 100 * (health_weight * health + (1 - health_weight) * rank)
    return pd.DataFrame({"stage": stages["stage"], "health": health.round(3), "value": v, "value_rank": rank.round(3),
                         "score": score.round(1)}).sort_values("score", ascending=False)


# ----------------------------------------------------------------------------- plots

STAGE_COLOURS = {"new": "#4c9be8", "returning": "#2e7d32", "resurrecting": "#f2a93b", "dormant": "#c0392b"}


def plot_lifecycle(counts: pd.DataFrame, *, ax=None):
    """The lifecycle chart: new, returning and resurrecting stacked above zero, dormant drawn below."""
    from .plots import new_ax

    ax = new_ax(ax)
    x = counts.index.to_timestamp()
    width = 20 if counts.index.freqstr.startswith("M") else 5
    bottom = np.zeros(len(counts))
    for stage in ACTIVE_STAGES:
        ax.bar(x, counts[stage], bottom=bottom, width=width, color=STAGE_COLOURS[stage], label=stage)
        bottom += counts[stage].to_numpy()
    ax.bar(x, -counts["dormant"], width=width, color=STAGE_COLOURS["dormant"], label="dormant")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set(title="Lifecycle: customers by stage per period (dormant below zero)", xlabel="period", ylabel="customers")
    ax.legend(loc="upper left", ncols=4, fontsize=8)
    return ax


def plot_transition_matrix(matrix: pd.DataFrame, *, ax=None, title: str = "Stage transitions (% of row)"):
    """A heatmap of a transition matrix (rows: from, columns: to)."""
    import seaborn as sns

    from .plots import new_ax

    ax = new_ax(ax)
    sns.heatmap(matrix, annot=True, fmt=".0f", cmap="Blues", cbar=False, ax=ax)
    ax.set(title=title, xlabel="stage in the later period", ylabel="stage in the earlier period")
    return ax


def plot_mountain(mountain: pd.DataFrame, *, ax=None):
    """The metrics mountain: customers at each step from acquisition to advocacy, with % of acquired."""
    from .plots import new_ax

    ax = new_ax(ax)
    bars = ax.bar(mountain.index.astype(str), mountain["customers"])
    for bar, share in zip(bars, mountain["share_of_acquired_pct"]):
        ax.annotate(f"{share:.0f}%", (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom", fontsize=9)
    ax.set(title="Metrics mountain: from acquisition to advocacy", xlabel="step", ylabel="customers")
    return ax
