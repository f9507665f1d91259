"""RFM segmentation: recency, frequency and monetary scores, named segments, and migration between two dates.

Definitions (the same words the reports show):

* A **purchase** is a transaction row with an amount of 0 or more; a refund
  (negative amount) is not a purchase. Only transactions on or before the
  observation end count. **Scored customers** are those with at least one
  purchase on or before the observation end; customers with only refunds are
  excluded and counted (``attrs["refund_only_customers"]``), and customers
  who signed up but never bought are not scored.
* **RFM recency = days since the last purchase**: days from the customer's
  last purchase day to the observation end (0: bought on the last day). It is
  *not* the CLV models' recency (``clv.rfm_summary``: time from the *first* to
  the last purchase, which grows while a customer keeps buying, whereas days
  since the last purchase shrinks); the column is called
  ``days_since_last_purchase`` so that the two are never confused.
* **RFM frequency = purchases**: the customer's purchases (transaction rows)
  in the window. The other convention, distinct purchase days, is
  ``frequency="days"`` (several orders on one day count once). Not the CLV
  models' frequency either (repeat purchase days: purchase days minus one).
* **RFM monetary = net revenue**: purchases minus refunds in the window. The
  other convention, net revenue per purchase (average order value), is
  ``monetary="mean"`` (0 for a customer with no purchase in the window).
* **Window**: all history up to the observation end by default;
  ``window_days=365`` restricts frequency and monetary to the last 365 days
  (recency always looks at all history), so a customer who last bought before
  the window has 0 purchases and 0 revenue rather than disappearing.

**Scores.** R, F and M are each scored 1 to ``bins`` (5: quintiles); higher is
better (for R: fewer days since the last purchase). With ``ties="min"`` (the
default) a customer's score is 1 + floor(bins x the share of scored customers
with a strictly worse value), at most ``bins``: equal values always get the
same score, so where many customers share a value (one purchase) the score
groups are uneven and a score can be empty. The other convention,
``ties="first"``, makes equal-sized groups: customers ordered from worst to
best value, equal values by customer_id, get 1 + floor(bins x position / n),
so two customers with the same value can get different scores (decided by
their ids). Both are deterministic: the result never depends on row order.
``reference`` scores customers against another set of customers' values
(for example an earlier snapshot's), so the thresholds stay fixed over time.
The **FM score** is the mean of F and M rounded half up (``fm="mean"``), or F
alone (``fm="frequency"``, the grid as it is usually published).

**Segments** are named regions of the R x FM grid: ``segment_map`` maps a
regular expression on the two-digit cell (R score, then FM score: ``"54"``)
to a segment name, and every cell must match exactly one pattern
(``DEFAULT_SEGMENT_MAP``: Champions, Loyal, Potential loyalists, New,
Promising, Need attention, About to sleep, At risk, Cannot lose them,
Hibernating, Lost).

Aggregation over transactions is an Ibis expression (``engine``); everything
after it works on the small per-customer frame.
"""

from __future__ import annotations

import re

import ibis
import numpy as np
import pandas as pd

from .data import ClmError, OptionError, SchemaError, parse_day, require_columns
from .engine import as_table, execute

__all__ = [
    "SegmentationError",
    "DEFAULT_SEGMENT_MAP",
    "SEGMENT_ACTIONS",
    "rfm_values",
    "rfm_scores",
    "assign_segments",
    "rfm_segments",
    "rfm_snapshots",
    "score_ranges",
    "segment_summary",
    "segment_migration",
    "segment_exports",
    "plot_rfm_grid",
    "plot_segment_shares",
    "plot_migration_matrix",
    "plot_migration_flows",
]


class SegmentationError(ClmError, ValueError):
    """An RFM segmentation was asked for something its inputs cannot give (a CLV missing for scored customers, an empty table)."""


#: Pattern on the two-digit cell (R score, then FM score, 1-5) -> segment, in the order segments are shown.
#: Every one of the 25 cells matches exactly one pattern.
DEFAULT_SEGMENT_MAP: dict[str, str] = {
    "5[4-5]": "Champions",
    "[3-4][4-5]": "Loyal",
    "[4-5][2-3]": "Potential loyalists",
    "51": "New",
    "41": "Promising",
    "33": "Need attention",
    "3[1-2]": "About to sleep",
    "[1-2][3-4]": "At risk",
    "[1-2]5": "Cannot lose them",
    "12|2[1-2]": "Hibernating",
    "11": "Lost",
}

#: What each default segment is, and the usual campaign for it.
SEGMENT_ACTIONS: dict[str, str] = {
    "Champions": "bought recently, buy often and spend the most: reward them, ask for reviews and referrals, offer early access",
    "Loyal": "buy often and spend well: upsell higher-value products, invite them to the loyalty programme",
    "Potential loyalists": "recent customers with average frequency: offer membership or a second-category recommendation",
    "New": "bought very recently, once: onboard them and make the second purchase easy",
    "Promising": "recent but low spend: build the relationship with targeted content, a small incentive",
    "Need attention": "average on all three: reactivate with a limited-time offer based on past purchases",
    "About to sleep": "below average recency and frequency: share popular products and a discount before they lapse",
    "At risk": "used to buy often and spend well, but not lately: send personalised win-back e-mails and renewals",
    "Cannot lose them": "were among the best customers and have not come back: win them back with a personal contact, ask what went wrong",
    "Hibernating": "last purchase long ago, low frequency and spend: offer other relevant products and special discounts, at low cost",
    "Lost": "lowest on all three: try one low-cost reactivation, otherwise stop spending on them",
}

_FREQUENCY = ("orders", "days")
_MONETARY = ("total", "mean")
_TIES = ("min", "first")
_FM = ("mean", "frequency")
VALUE_COLUMNS = ("days_since_last_purchase", "purchases", "monetary")


# ----------------------------------------------------------------------------- options


def _choice(value, allowed, name):
    if value not in allowed:
        raise OptionError(f"{name} must be one of {list(allowed)}, got {value!r}")


def _bins(bins) -> int:
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or not 2 <= bins <= 9:
        raise OptionError(f"bins must be a whole number from 2 to 9 (5 gives quintiles), got {bins!r}")
    return int(bins)


def _examples(values, limit: int = 3) -> str:
    return ", ".join(str(v) for v in list(values)[:limit])


# ----------------------------------------------------------------------------- values


def rfm_values(transactions, *, observation_end=None, window_days: int | None = None, frequency: str = "orders",
               monetary: str = "total") -> pd.DataFrame:
    """One row per scored customer: days since the last purchase, purchases and monetary value (the RFM values).

    transactions needs customer_id, timestamp, amount (the transactions
    contract; a pandas DataFrame or an Ibis table). ``observation_end``
    (a date; None: the last transaction day) is a whole day: purchases on it
    count. Columns, indexed by customer_id (sorted):

    * ``days_since_last_purchase``: RFM recency, days from the last purchase
      day to the observation end (not the CLV models' recency);
    * ``purchases``: RFM frequency, purchases in the window (transaction rows
      with an amount of 0 or more; distinct purchase days with ``frequency="days"``);
    * ``monetary``: RFM monetary, net revenue in the window (purchases minus
      refunds; per purchase with ``monetary="mean"``, 0 without a purchase);
    * ``revenue``: net revenue in the window (the sum, whatever ``monetary`` is);
    * ``first_purchase``, ``last_purchase``: days, over all history.

    ``attrs`` records the options and what was left out: ``refund_only_customers``
    (refunds but no purchase: not scored) and ``rows_after_end`` (ignored).
    """
    _choice(frequency, _FREQUENCY, "frequency")
    _choice(monetary, _MONETARY, "monetary")
    if window_days is not None and (isinstance(window_days, bool) or not isinstance(window_days, (int, np.integer)) or window_days < 1):
        raise OptionError(f"window_days must be a positive whole number of days or None (all history), got {window_days!r}")
    if isinstance(transactions, ibis.Table):
        missing = [c for c in ("customer_id", "timestamp", "amount") if c not in transactions.columns]
        if missing:
            raise SchemaError(f"transactions: missing column(s) {missing}; it has {list(transactions.columns)}")
    else:
        require_columns(transactions, "transactions", ["customer_id", "timestamp", "amount"])
        for column in ("customer_id", "timestamp", "amount"):
            empty = transactions[column].isna()
            if empty.any():
                raise SchemaError(f"transactions.{column}: {int(empty.sum()):,} of {len(transactions):,} rows are empty "
                                  f"(e.g. rows {_examples(transactions.index[empty])})")
    t = as_table(transactions, ["customer_id", "timestamp", "amount"])
    t = t.select(customer_id=t.customer_id.cast("string"), day=t.timestamp.cast("timestamp").date(), amount=t.amount.cast("float64"))
    end = parse_day(observation_end, "observation_end")
    if end is None:
        last = execute(t.aggregate(last=t.day.max()))["last"].iloc[0]
        if last is None or pd.isna(last):
            raise SegmentationError("transactions: the table is empty; there is nothing to segment")
        end = pd.Timestamp(last).normalize()
    rows_after = int(execute(t.aggregate(n=t.count(where=t.day > end.date())))["n"].iloc[0])
    t = t.filter(t.day <= end.date())
    purchase = t.amount >= 0
    if window_days is None:
        counted, revenue = purchase, t.amount.sum()
    else:
        in_window = t.day > (end - pd.Timedelta(days=int(window_days))).date()
        counted, revenue = purchase & in_window, t.amount.sum(where=in_window)
    per = execute(t.group_by("customer_id").aggregate(
        first_purchase=t.day.min(where=purchase),
        last_purchase=t.day.max(where=purchase),
        orders=t.count(where=counted),
        days=t.day.nunique(where=counted),
        revenue=revenue,
    ))
    refund_only = int(per["last_purchase"].isna().sum())
    per = per[per["last_purchase"].notna()].set_index("customer_id").sort_index()
    out = pd.DataFrame(index=per.index)
    out.index.name = "customer_id"
    out["first_purchase"] = pd.to_datetime(per["first_purchase"]).astype("datetime64[us]")
    out["last_purchase"] = pd.to_datetime(per["last_purchase"]).astype("datetime64[us]")
    out["days_since_last_purchase"] = (end - out["last_purchase"]).dt.days.astype("int64")
    out["purchases"] = per["orders" if frequency == "orders" else "days"].fillna(0).astype("int64")
    out["revenue"] = per["revenue"].fillna(0.0).astype(float)
    if monetary == "total":
        out["monetary"] = out["revenue"]
    else:
        out["monetary"] = np.where(out["purchases"] > 0, out["revenue"] / out["purchases"].clip(lower=1), 0.0)
    out.attrs.update(observation_end=str(end.date()), window_days=window_days, frequency=frequency, monetary=monetary,
                     refund_only_customers=refund_only, rows_after_end=rows_after)
    return out


# ----------------------------------------------------------------------------- scores


def _score(values: np.ndarray, ids: np.ndarray, *, bins: int, higher_is_better: bool, ties: str, reference: np.ndarray | None) -> np.ndarray:
    """Scores 1..bins of ``values`` (see the module docstring for the two tie conventions)."""
    n = len(values)
    if n == 0:
        return np.zeros(0, dtype="int64")
    if ties == "first":
        worst_first = values if higher_is_better else -values
        order = np.lexsort((ids, worst_first))  # by value (worst first), then by customer_id
        position = np.empty(n, dtype="int64")
        position[order] = np.arange(n)
        return 1 + bins * position // n
    ref = np.sort(values if reference is None else reference)
    if higher_is_better:
        worse = np.searchsorted(ref, values, side="left")  # reference values strictly below
    else:
        worse = len(ref) - np.searchsorted(ref, values, side="right")  # reference values strictly above
    return np.minimum(bins, 1 + bins * worse // len(ref)).astype("int64")


def rfm_scores(values: pd.DataFrame, *, bins: int = 5, ties: str = "min", fm: str = "mean", reference: pd.DataFrame | None = None) -> pd.DataFrame:
    """A copy of ``rfm_values`` output with ``r_score``, ``f_score``, ``m_score``, ``fm_score`` (1..bins) and ``rfm_cell``.

    R scores days since the last purchase (fewer is better), F purchases, M
    the monetary value; higher scores are better. ``ties="min"``: 1 +
    floor(bins x share of customers with a strictly worse value), equal
    values share a score; ``ties="first"``: equal-sized groups, equal values
    ordered by customer_id. ``reference`` (another ``rfm_values`` frame, e.g.
    an earlier snapshot) supplies the distribution the shares are taken from
    (``ties="min"`` only). FM score: (F + M) / 2 rounded half up
    (``fm="mean"``) or F (``fm="frequency"``). ``rfm_cell`` is the three
    digits R, F, M (``"545"``).
    """
    bins = _bins(bins)
    _choice(ties, _TIES, "ties")
    _choice(fm, _FM, "fm")
    require_columns(values, "rfm values", VALUE_COLUMNS)
    if reference is not None:
        if ties != "min":
            raise OptionError("reference thresholds need ties='min' (equal-sized groups cannot be carried over to other customers)")
        require_columns(reference, "reference rfm values", VALUE_COLUMNS)
        if reference.empty:
            raise SegmentationError("reference rfm values: no customers, so there are no thresholds to score against")
    for column in VALUE_COLUMNS:
        for name, frame in (("rfm values", values), ("reference rfm values", reference)):
            if frame is None:
                continue
            bad = ~np.isfinite(pd.to_numeric(frame[column], errors="coerce").to_numpy(float))
            if bad.any():
                raise SchemaError(f"{name}.{column}: {int(bad.sum()):,} of {len(frame):,} customers have no finite value "
                                  f"(e.g. {_examples(frame.index[bad])})")
    out = values.copy()
    ids = out.index.astype(str).to_numpy()
    for column, score, better in (("days_since_last_purchase", "r_score", False), ("purchases", "f_score", True), ("monetary", "m_score", True)):
        ref = None if reference is None else reference[column].to_numpy(float)
        out[score] = _score(out[column].to_numpy(float), ids, bins=bins, higher_is_better=better, ties=ties, reference=ref)
    out["fm_score"] = (out["f_score"] + out["m_score"] + 1) // 2 if fm == "mean" else out["f_score"]
    out["rfm_cell"] = out["r_score"].astype(str) + out["f_score"].astype(str) + out["m_score"].astype(str)
    out.attrs.update(values.attrs)
    out.attrs.update(bins=bins, ties=ties, fm=fm, thresholds="reference" if reference is not None else "own")
    return out


# ----------------------------------------------------------------------------- segments


def _check_map(segment_map, bins: int) -> tuple[dict[str, re.Pattern], list[str]]:
    """The compiled map and the segment order; every grid cell must match exactly one pattern."""
    if not isinstance(segment_map, dict) or not segment_map:
        raise OptionError(f"segment_map must be a non-empty dict {{pattern: segment name}}, got {type(segment_map).__name__}")
    compiled = {}
    for pattern, name in segment_map.items():
        if not isinstance(name, str) or not name.strip():
            raise OptionError(f"segment_map: pattern {pattern!r} maps to {name!r}; a segment name must be non-empty text")
        try:
            compiled[pattern] = re.compile(str(pattern))
        except re.error as exc:
            raise OptionError(f"segment_map: pattern {pattern!r} is not a valid regular expression ({exc})") from exc
    unmapped, doubled = [], []
    for r in range(1, bins + 1):
        for f in range(1, bins + 1):
            cell = f"{r}{f}"
            hits = [p for p, rx in compiled.items() if rx.fullmatch(cell)]
            if not hits:
                unmapped.append(cell)
            elif len(hits) > 1:
                doubled.append(f"{cell} by {' and '.join(f'{h!r} ({segment_map[h]})' for h in hits)}")
    if unmapped:
        raise OptionError(f"segment_map leaves {len(unmapped)} of {bins * bins} cells (R score, then FM score) without a segment: "
                          f"{', '.join(unmapped[:8])}{' ...' if len(unmapped) > 8 else ''}")
    if doubled:
        raise OptionError(f"segment_map matches {len(doubled)} cell(s) with more than one pattern: {'; '.join(doubled[:3])}")
    return compiled, list(dict.fromkeys(segment_map.values()))


def assign_segments(scores: pd.DataFrame, *, segment_map: dict[str, str] | None = None) -> pd.DataFrame:
    """A copy of ``rfm_scores`` output with a ``segment`` column from the R x FM grid.

    ``segment_map`` maps a regular expression on the two-digit cell (R score,
    then FM score, e.g. ``"54"``) to a segment name (default
    ``DEFAULT_SEGMENT_MAP``); every cell of the grid must match exactly one
    pattern, else ``OptionError`` names the cells. ``attrs["segments"]`` keeps
    the segments in the map's order.
    """
    require_columns(scores, "rfm scores", ["r_score", "fm_score"])
    bins = int(scores.attrs.get("bins", 5))
    segment_map = DEFAULT_SEGMENT_MAP if segment_map is None else segment_map
    compiled, order = _check_map(segment_map, bins)
    grid = {}
    for r in range(1, bins + 1):
        for f in range(1, bins + 1):
            cell = f"{r}{f}"
            grid[cell] = next(segment_map[p] for p, rx in compiled.items() if rx.fullmatch(cell))
    out = scores.copy()
    cells = out["r_score"].astype(str) + out["fm_score"].astype(str)
    unknown = ~cells.isin(list(grid))
    if unknown.any():
        raise SchemaError(f"rfm scores: {int(unknown.sum()):,} customers have scores outside 1-{bins} (e.g. {_examples(out.index[unknown])})")
    out["segment"] = cells.map(grid).astype(object)
    out.attrs.update(scores.attrs)
    out.attrs.update(segments=order, segment_grid=grid)
    return out


def rfm_segments(transactions, *, observation_end=None, window_days: int | None = None, frequency: str = "orders", monetary: str = "total",
                 bins: int = 5, ties: str = "min", fm: str = "mean", segment_map: dict[str, str] | None = None,
                 reference: pd.DataFrame | None = None) -> pd.DataFrame:
    """RFM values, scores and named segment for every scored customer: ``rfm_values`` -> ``rfm_scores`` -> ``assign_segments``.

    The options are those of the three steps (see the module docstring for
    every definition). One row per customer with a purchase on or before the
    observation end, indexed by customer_id.
    """
    values = rfm_values(transactions, observation_end=observation_end, window_days=window_days, frequency=frequency, monetary=monetary)
    scores = rfm_scores(values, bins=bins, ties=ties, fm=fm, reference=reference)
    return assign_segments(scores, segment_map=segment_map)


def rfm_snapshots(transactions, *, observation_end=None, months_before: int = 6, thresholds: str = "each",
                  **options) -> tuple[pd.DataFrame, pd.DataFrame]:
    """RFM segments at two dates, ``months_before`` months apart, for ``segment_migration``: (earlier, later).

    ``observation_end`` is the later date (None: the last transaction day);
    ``options`` are those of ``rfm_segments``. ``thresholds="each"`` scores
    each date against its own customers (a score says where a customer stood
    among the customers of that date); ``thresholds="first"`` scores the later
    date against the earlier date's values, so a move between segments is a
    change in the customer's own behaviour, not in everyone else's.
    """
    _choice(thresholds, ("each", "first"), "thresholds")
    if isinstance(months_before, bool) or not isinstance(months_before, (int, np.integer)) or months_before < 1:
        raise OptionError(f"months_before must be a positive whole number of months, got {months_before!r}")
    if "reference" in options:
        raise OptionError("rfm_snapshots sets the reference itself: choose thresholds='each' or 'first'")
    if thresholds == "first" and options.get("ties", "min") != "min":
        raise OptionError(f"thresholds='first' needs ties='min' (equal-sized groups cannot be carried over to other customers), got ties={options['ties']!r}")
    later_end = parse_day(observation_end, "observation_end")
    if later_end is None:
        later_end = pd.Timestamp(rfm_values(transactions).attrs["observation_end"])
    earlier = rfm_segments(transactions, observation_end=later_end - pd.DateOffset(months=int(months_before)), **options)
    if thresholds == "first" and earlier.empty:
        raise SegmentationError(f"no customer had bought by {earlier.attrs['observation_end']}: there are no earlier thresholds to score against")
    later = rfm_segments(transactions, observation_end=later_end, reference=earlier if thresholds == "first" else None, **options)
    return earlier, later


def score_ranges(segments: pd.DataFrame) -> pd.DataFrame:
    """Per score (1..bins) of R, F and M: the customers who got it and the range of values behind it.

    One row per score; for each of R (days since the last purchase), F
    (purchases) and M (monetary): ``customers``, ``lowest`` and ``highest``
    (the lowest and highest value with that score; missing where no customer
    got the score, which ``ties="min"`` allows).
    """
    require_columns(segments, "rfm scores", ["r_score", "f_score", "m_score", *VALUE_COLUMNS])
    bins = int(segments.attrs.get("bins", 5))
    parts = {}
    for label, score, column in (("R: days since last purchase", "r_score", "days_since_last_purchase"),
                                 ("F: purchases", "f_score", "purchases"), ("M: monetary", "m_score", "monetary")):
        g = segments.groupby(score)[column].agg(customers="size", lowest="min", highest="max")
        parts[label] = g.reindex(range(1, bins + 1)).assign(customers=lambda d: d["customers"].fillna(0).astype("int64"))
    out = pd.concat(parts, axis=1)
    out.index.name = "score"
    return out


def _segments_of(frame: pd.DataFrame, name: str) -> list[str]:
    require_columns(frame, name, ["segment"])
    order = list(frame.attrs.get("segments") or [])
    return order + sorted(set(frame["segment"].dropna()) - set(order))


def segment_summary(segments: pd.DataFrame, *, clv: pd.Series | None = None) -> pd.DataFrame:
    """Per segment: size, share of customers, net revenue and its share, mean R, F and M values, and mean CLV.

    * ``customers_pct``: the segment's customers as % of scored customers;
    * ``revenue_pct``: the segment's net revenue in the window as % of the
      net revenue of all scored customers (missing, with the reason in
      ``attrs["notes"]``, when that total is not positive);
    * ``mean_clv`` and ``clv_pct`` (with ``clv``: a CLV per customer_id, e.g.
      ``clv.customer_value(...)["clv"]``): the segment's mean CLV and its share
      of the total. Every scored customer needs a CLV.

    Segments come in the map's order; segments without customers are left
    out and listed in ``attrs["empty_segments"]``.
    """
    require_columns(segments, "rfm segments", ["segment", "revenue", *VALUE_COLUMNS])
    order = _segments_of(segments, "rfm segments")
    frame = segments[["segment", "revenue", *VALUE_COLUMNS]].copy()
    notes = []
    if clv is not None:
        values = pd.Series(clv, dtype=float)
        values.index = values.index.astype(str)
        aligned = values.reindex(frame.index.astype(str))
        missing = aligned.isna().to_numpy()
        if missing.any():
            raise SegmentationError(f"clv: {int(missing.sum()):,} of {len(frame):,} scored customers have no CLV "
                                    f"(e.g. {_examples(frame.index[missing])}); compute it for the same customers and observation end")
        frame["clv"] = aligned.to_numpy()
    agg = {"customers": ("segment", "size"), "revenue": ("revenue", "sum"),
           "mean_days_since_last_purchase": ("days_since_last_purchase", "mean"),
           "mean_purchases": ("purchases", "mean"), "mean_monetary": ("monetary", "mean")}
    if clv is not None:
        agg.update(mean_clv=("clv", "mean"), total_clv=("clv", "sum"))
    table = frame.groupby("segment").agg(**agg)
    present = [s for s in order if s in table.index]
    table = table.loc[present]
    total_customers = len(frame)
    table.insert(1, "customers_pct", 100 * table["customers"] / total_customers if total_customers else np.nan)
    total_revenue = frame["revenue"].sum()
    if total_revenue > 0:
        share = 100 * table["revenue"] / total_revenue
    else:
        share = pd.Series(np.nan, index=table.index)
        notes.append(f"revenue share is missing: the scored customers' total net revenue is {total_revenue:,.2f}, not positive")
    table.insert(table.columns.get_loc("revenue") + 1, "revenue_pct", share)
    if clv is not None:
        total_clv = frame["clv"].sum()
        table["clv_pct"] = 100 * table["total_clv"] / total_clv if total_clv > 0 else np.nan
        if total_clv <= 0:
            notes.append("CLV share is missing: the total CLV is not positive")
        table = table.drop(columns="total_clv")
    table.index.name = "segment"
    table.attrs.update(empty_segments=[s for s in order if s not in present], notes=notes, customers=total_customers)
    return table


def segment_migration(before: pd.DataFrame, after: pd.DataFrame, *, normalize: bool = False) -> pd.DataFrame:
    """Customers moving from each segment at an earlier date (rows) to each segment at a later one (columns).

    ``before`` and ``after`` come from ``rfm_segments`` at two observation
    ends. Customers scored only at the later date (first purchase in between)
    are in the row "(new customer)"; customers scored only at the earlier
    date (possible with other data or options at the two dates) are in the
    column "(not scored)". Counts, or with ``normalize`` each row as % of
    its customers (rows sum to 100). Rows and columns without customers are
    left out.
    """
    rows_order = ["(new customer)", *_segments_of(before, "before")]
    cols_order = [*_segments_of(after, "after"), "(not scored)"]
    b = before["segment"].rename("from")
    a = after["segment"].rename("to")
    b.index, a.index = b.index.astype(str), a.index.astype(str)
    joined = pd.concat([b, a], axis=1, join="outer")
    origin = joined["from"].astype(object).where(joined["from"].notna(), "(new customer)")
    target = joined["to"].astype(object).where(joined["to"].notna(), "(not scored)")
    table = pd.crosstab(pd.Categorical(origin, categories=rows_order), pd.Categorical(target, categories=cols_order), dropna=False)
    table = table.loc[table.sum(axis=1) > 0, table.sum(axis=0) > 0].astype("int64")
    table.index, table.columns = pd.Index(table.index.astype(str), name="from"), pd.Index(table.columns.astype(str), name="to")
    if normalize:
        table = table.div(table.sum(axis=1), axis=0).mul(100)
    table.attrs.update(before=before.attrs.get("observation_end"), after=after.attrs.get("observation_end"))
    return table


def segment_exports(segments: pd.DataFrame, *, only=None) -> dict[str, pd.DataFrame]:
    """One customer list per segment for campaign tools: file name (``rfm_segment_<name>.csv``) -> rows.

    Each list has customer_id, segment, the three scores and the three RFM
    values, customers sorted by id. ``only`` restricts to the named segments
    (unknown names raise ``OptionError``). Writing the files is the caller's
    choice: the lists hold real customer ids.
    """
    require_columns(segments, "rfm segments", ["segment", "r_score", "f_score", "m_score", *VALUE_COLUMNS])
    order = _segments_of(segments, "rfm segments")
    if only is not None:
        only = [only] if isinstance(only, str) else list(only)
        unknown = [s for s in only if s not in order]
        if unknown:
            raise OptionError(f"only: unknown segment(s) {unknown}; the segments are {order}")
        order = [s for s in order if s in only]
    columns = ["segment", "r_score", "f_score", "m_score", *VALUE_COLUMNS]
    lists = {}
    for name in order:
        rows = segments.loc[segments["segment"] == name, columns].sort_index().reset_index()
        if len(rows):
            slug = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "segment"
            lists[f"rfm_segment_{slug}.csv"] = rows
    return lists


# ----------------------------------------------------------------------------- plots


def plot_rfm_grid(segments: pd.DataFrame, *, ax=None, title: str = "Customers on the R x FM grid"):
    """The R x FM grid: each cell's customers (shading) and segment name; R from best (top) to worst."""
    from .plots import new_ax

    ax = new_ax(ax)
    bins = int(segments.attrs.get("bins", 5))
    grid = segments.attrs.get("segment_grid", {})
    counts = pd.crosstab(segments["r_score"], segments["fm_score"]).reindex(index=range(bins, 0, -1), columns=range(1, bins + 1), fill_value=0)
    ax.imshow(counts.to_numpy(), cmap="Blues", aspect="auto")
    top = counts.to_numpy().max() if counts.size else 0
    for i, r in enumerate(counts.index):
        for j, f in enumerate(counts.columns):
            n = int(counts.loc[r, f])
            ax.text(j, i, f"{grid.get(f'{r}{f}', '')}\n{n:,}", ha="center", va="center", fontsize=7,
                    color="white" if top and n > 0.6 * top else "black")
    ax.set_xticks(range(bins), [str(c) for c in counts.columns])
    ax.set_yticks(range(bins), [str(r) for r in counts.index])
    ax.grid(False)
    ax.set(title=title, xlabel="FM score (higher: buys more often and spends more)", ylabel="R score (higher: bought more recently)")
    return ax


def plot_segment_shares(summary: pd.DataFrame, *, ax=None, title: str = "Share of customers and of net revenue by segment"):
    """Each segment's % of customers next to its % of net revenue (and of CLV, when the summary has it)."""
    from .plots import new_ax

    ax = new_ax(ax)
    columns = [c for c in ("customers_pct", "revenue_pct", "clv_pct") if c in summary.columns]
    labels = {"customers_pct": "customers", "revenue_pct": "net revenue", "clv_pct": "CLV"}
    y = np.arange(len(summary))
    height = 0.8 / max(len(columns), 1)
    for k, column in enumerate(columns):
        ax.barh(y + k * height, summary[column].fillna(0).to_numpy(), height=height, label=labels[column])
    ax.set_yticks(y + height * (len(columns) - 1) / 2, [str(s) for s in summary.index])
    ax.invert_yaxis()
    ax.set(title=title, xlabel="% of total", ylabel="segment")
    ax.legend(loc="lower right")
    return ax


def plot_migration_matrix(matrix: pd.DataFrame, *, ax=None, title: str = "Segment migration (% of the earlier segment)"):
    """A heatmap of ``segment_migration`` output (rows: earlier segment, columns: later segment)."""
    import seaborn as sns

    from .plots import new_ax

    ax = new_ax(ax)
    sns.heatmap(matrix, annot=True, fmt=".0f", cmap="Blues", cbar=False, ax=ax, annot_kws={"fontsize": 7})
    ax.set(title=title, xlabel=f"segment on {matrix.attrs.get('after') or 'the later date'}",
           ylabel=f"segment on {matrix.attrs.get('before') or 'the earlier date'}")
    return ax


def plot_migration_flows(counts: pd.DataFrame, *, ax=None, min_share: float = 0.005, title: str = "Where customers moved"):
    """A flow (alluvial) chart of ``segment_migration`` counts: earlier segments on the left, later ones on the right.

    Band widths are customers; bands under ``min_share`` of all customers are
    not drawn (said in the title) but still count in the bars.
    """
    import matplotlib.colors as mcolors
    import seaborn as sns
    from matplotlib.patches import Rectangle

    from .plots import PALETTE, new_ax

    ax = new_ax(ax)
    m = counts.to_numpy(float)
    total = m.sum()
    if total <= 0:
        ax.set(title=f"{title}: no customers", xlabel="snapshot", ylabel="customers")
        return ax
    names = list(dict.fromkeys([*counts.index, *counts.columns]))
    segments = [n for n in names if not n.startswith("(")]  # "(new customer)" and "(not scored)" in grey
    palette = sns.color_palette(PALETTE if len(segments) <= 10 else "tab20", n_colors=len(segments))
    colours = {n: (0.6, 0.6, 0.6) for n in names} | dict(zip(segments, palette))
    gap = 0.02 * total
    left_size, right_size = m.sum(axis=1), m.sum(axis=0)
    left_top = np.concatenate([[0], np.cumsum(left_size + gap)[:-1]])
    right_top = np.concatenate([[0], np.cumsum(right_size + gap)[:-1]])
    width = 0.04
    for tops, sizes, labels, x, side in ((left_top, left_size, counts.index, 0.0, "right"), (right_top, right_size, counts.columns, 1.0, "left")):
        for top, size, label in zip(tops, sizes, labels):
            ax.add_patch(Rectangle((x - width / 2, top), width, size, color=colours[label], lw=0))
            pad = -0.03 if side == "right" else 0.03
            ax.text(x + pad, top + size / 2, f"{label} ({int(size):,})", ha=side, va="center", fontsize=7)
    xs = np.linspace(width / 2, 1 - width / 2, 50)
    s = 3 * xs ** 2 - 2 * xs ** 3
    s = (s - s[0]) / (s[-1] - s[0])
    left_offset = left_top.copy()
    right_offset = right_top.copy()
    hidden = 0
    for i, j in [(i, j) for i in range(m.shape[0]) for j in range(m.shape[1])]:
        flow = m[i, j]
        if flow <= 0:
            continue
        y0, y1 = left_offset[i], right_offset[j]
        left_offset[i] += flow
        right_offset[j] += flow
        if flow < min_share * total:
            hidden += 1
            continue
        upper = y0 + (y1 - y0) * s
        ax.fill_between(xs, upper, upper + flow, color=mcolors.to_rgba(colours[counts.index[i]], 0.45), lw=0)
    ax.set_xlim(-0.45, 1.45)
    ax.set_ylim(max(left_top[-1] + left_size[-1], right_top[-1] + right_size[-1]) + gap, -gap)
    ax.set_xticks([0, 1], [str(counts.attrs.get("before") or "earlier"), str(counts.attrs.get("after") or "later")])
    ax.set_yticks([])
    ax.grid(False)
    note = f" ({hidden} flows under {min_share:.1%} of customers not drawn)" if hidden else ""
    ax.set(title=title + note, xlabel="snapshot (observation end)", ylabel=f"customers (bar height; {int(total):,} in all)")
    return ax
