"""Probabilistic customer lifetime value: RFM summaries, BTYD models, predictions, validation.

The models, each fitted by maximum likelihood on per-customer summaries:

========== ============================================ ========================================
model      paper                                        parameters (``params_``)
========== ============================================ ========================================
bgnbd      Fader, Hardie & Lee (2005a), Marketing       r, alpha, a, b
           Science 24(2) "Counting your customers the
           easy way"
pareto_nbd Schmittlein, Morrison & Colombo (1987);      r, alpha, s, beta
           Fader & Hardie (2005) note 009
mbgnbd     Batislam, Denizel & Filiztekin (2007), IJRM  r, alpha, a, b
gamma_gamma Fader, Hardie & Lee (2005b), JMR 42 "RFM    p, q, v (v is the papers' gamma)
           and CLV"; Fader & Hardie (2013) note 025
bgbb       Fader, Hardie & Shang (2010), Marketing      alpha, beta, gamma, delta
           Science 29(6) (discrete opportunities)
sbg        Fader & Hardie (2007), J. Interactive        alpha, beta
           Marketing 21(1) "How to project customer
           retention"; DERL: Fader & Hardie (2010),
           Marketing Science 29(1)
========== ============================================ ========================================

How the fits differ from ``lifetimes`` (which this module uses only to check
itself in the tests): the summary is compressed to its distinct rows with a
``weight`` (the same likelihood on a fraction of the rows), the likelihoods
are written in log space (no overflow at hundreds of purchases), the
optimiser starts from data-driven values, and a failed fit is retried in a
documented order (see ``fit_model``) and the result records what was done
in ``fit_info_``. Parameter intervals come from the inverse Hessian of the
log-likelihood in log-parameter space; prediction intervals propagate those
by simulation (parameter uncertainty only).

All event-level aggregation (``rfm_summary``, the tracking of repeat
transactions, the subscription cohort counts) is an Ibis expression run by
``clm_helpers.engine``, so it runs unchanged on Spark. One shortcut: a pandas
DataFrame given to ``rfm_summary`` while the engine is DuckDB is summarised
in numpy (``_per_customer_arrays``: the same definitions, held equal to the
Ibis expression by tests/test_rfm_summary.py), because copying 9M rows into
DuckDB and back costs more than the aggregation.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
import warnings
from dataclasses import dataclass, field

import ibis
import numpy as np
import pandas as pd
from scipy import optimize, special

from . import engine
from .data import ClmError, is_arrow_text

__all__ = [
    "ClvError", "NotIdentifiedError", "FitError",
    "MODELS", "TIME_UNITS",
    "rfm_summary", "compress_summary", "fit_model", "fit_sbg",
    "subscription_cohort_counts", "fit_sbg_cohorts", "sbg_cohort_table",
    "predict_customers", "expected_average_value", "customer_value",
    "compare_models", "recommend_model", "repeat_transaction_tracking", "ModelComparison", "SBGCohorts",
    "holdout_split", "describe_summary", "model_parameters", "clv_deciles", "value_by_segment",
    "customers_at_risk", "mask_ids", "cohort_mean_payment", "simulate_transactions",
    "BGNBD", "ParetoNBD", "MBGNBD", "GammaGamma", "BGBB", "SBG",
]

#: Days in one unit of time of an RFM summary.
TIME_UNITS = {"D": 1.0, "W": 7.0}
#: Days in a month (the CLV horizon's unit): 365.25 / 12.
DAYS_PER_MONTH = 365.25 / 12


class ClvError(ClmError):
    """Base class of the errors the CLV module raises on purpose."""


class NotIdentifiedError(ClvError, ValueError):
    """The data cannot identify the model's parameters (say why and what data would)."""


class FitError(ClvError, RuntimeError):
    """Every documented retry failed to find a maximum of the likelihood."""


# ============================================================================ RFM summary


def _require(table, columns, name="transactions"):
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ClvError(f"{name}: missing column(s) {missing}; it has {list(table.columns)} "
                       f"(the {name} contract needs {list(columns)})")


def _day(value, what) -> pd.Timestamp:
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError) as exc:
        raise ClvError(f"{what} must be a date, got {value!r}") from exc
    if ts is pd.NaT:
        raise ClvError(f"{what} must be a date, got {value!r}")
    return ts.tz_localize(None).normalize() if ts.tzinfo else ts.normalize()


#: Money sums that differ from 0 by less than this are 0 (floating-point rounding of sums of cents).
_ROUNDING = 1e-9


def _grouped_codes(values: np.ndarray):
    """(codes, ids) when ``values`` are grouped by id in increasing id order, else None (also for missing or unorderable ids)."""
    try:
        new_id = values[1:] != values[:-1]
        heads = values[np.flatnonzero(np.concatenate(([True], new_id)))]
        # strictly increasing run heads: each id is one run (no id comes back later), and the runs are in sorted order;
        # a missing id (None, NaN, NaT, pd.NA) cannot be ordered and ends here (TypeError, or a False comparison)
        if not np.all(heads[1:] > heads[:-1]):
            return None
    except (TypeError, ValueError):
        return None
    codes = np.zeros(len(values), np.int64)
    np.cumsum(new_id, out=codes[1:])
    return codes, pd.Index(heads, dtype=values.dtype)


def _customer_codes(ids: pd.Series):
    """``pd.factorize(ids, sort=True)``: codes 0..k-1 in sorted id order, and the ids; None for missing or unorderable ids.

    A log grouped by customer in id order (the usual export, and what
    ``synthetic.simulate_company`` writes) is recognised by comparing each id
    with the one before it, without hashing every id: at 8.7M string ids,
    70 ms instead of 0.6 s (0.35 s of hashing, the rest sorting the ids and
    renumbering the codes). The first 10,000 rows are tried first, so that a
    log in another order (by time, say) does not pay for the full comparison
    before ``pd.factorize``.
    """
    if is_arrow_text(ids.dtype):
        return _arrow_codes(ids)
    values = ids.to_numpy() if isinstance(ids.dtype, np.dtype) else None  # extension arrays: pd.factorize
    if values is not None and len(values) > 1 and _grouped_codes(values[:10_000]) is not None:
        grouped = _grouped_codes(values)
        if grouped is not None:
            return grouped
    try:
        codes, uniques = pd.factorize(ids, sort=True)
    except TypeError:  # ids that cannot be ordered
        return None
    if len(codes) and codes.min() < 0:  # a missing id
        return None
    if not uniques.is_monotonic_increasing:  # mixed types (1 and "b"): pandas orders them by type, Python cannot; left to Ibis
        return None
    return codes, uniques


def _arrow_codes(ids: pd.Series):
    """``_customer_codes`` of Arrow-backed text ids (``data.TEXT``): the grouped-in-order check runs in Arrow
    (bytewise UTF-8 order, which is Python's code point order); the ids come back as Python strings, as an
    engine's results do."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = ids.array.__arrow_array__()
    if arr.null_count:
        return None
    n = len(arr)
    if n > 1 and pc.all(pc.less_equal(arr.slice(0, min(n, 10_000) - 1), arr.slice(1, min(n, 10_000) - 1))).as_py():
        head, tail = arr.slice(0, n - 1), arr.slice(1)
        if pc.all(pc.less_equal(head, tail)).as_py():
            new_id = pc.not_equal(head, tail).to_numpy(zero_copy_only=False)
            codes = np.zeros(n, np.int64)
            np.cumsum(new_id, out=codes[1:])
            heads = arr.filter(pa.chunked_array([pa.array([True]), pa.array(new_id)]))
            return codes, pd.Index(heads.to_numpy(zero_copy_only=False), dtype=object)
    codes, uniques = pd.factorize(ids, sort=True)
    return codes, pd.Index(np.asarray(uniques, dtype=object), dtype=object)


def _epoch_days(ts: np.ndarray) -> np.ndarray:
    """Whole days since 1970-01-01 (floored, as CAST(... AS DATE)) of naive datetime64 values, as int64."""
    unit, count = np.datetime_data(ts.dtype)
    if unit in ("s", "ms", "us", "ns"):  # pandas' units: one integer floor division, no datetime64 cast
        per_day = np.timedelta64(1, "D") // np.timedelta64(count, unit)
        return ts.view(np.int64) // per_day
    return ts.astype("datetime64[D]").view(np.int64)


def _segment_sum(x: np.ndarray, starts: np.ndarray, owner: np.ndarray, n: int) -> np.ndarray:
    """Sums of ``x`` over the segments that begin at ``starts`` (``owner``: each element's segment).

    Integers with ``np.add.reduceat``; floats with ``np.bincount``, which adds
    one element after the other in row order, as DuckDB's sum does within a
    group. ``np.add.reduceat`` associates float sums differently: its last
    digit differs from a row-by-row sum in about half the segments of 3 or
    more values, and the residue of a refund that cancels a purchase is what
    decides whether a customer's repeat spend is 0 (see ``_ROUNDING``).
    """
    if x.dtype.kind in "iub":
        return np.add.reduceat(x, starts, dtype=np.int64)
    return np.bincount(owner, x, n)


def _segments(sorted_keys: np.ndarray):
    """The runs of equal values in a sorted array: (where each run starts, each element's run number, run lengths)."""
    new = np.empty(len(sorted_keys), bool)
    new[0] = True
    np.not_equal(sorted_keys[1:], sorted_keys[:-1], out=new[1:])
    starts = np.flatnonzero(new)
    owner = np.cumsum(new, dtype=np.int64)
    owner -= 1
    return starts, owner, np.diff(starts, append=len(sorted_keys))


def _per_customer_arrays(transactions, obs: pd.Timestamp, cal: pd.Timestamp):
    """``rfm_summary``'s per-customer aggregates of a pandas DataFrame in numpy, as (ids, columns); None for inputs left to Ibis.

    The same definitions as the Ibis expression in ``rfm_summary``: the rows
    are in (customer, day) order (sorted once, unless the log is in that order
    already), the days are segments of that order and the customers segments
    of the days. A frame already in pandas is not copied into DuckDB and back.
    Taken only for naive datetime64 timestamps, finite numeric amounts and no
    missing customer id or timestamp; anything else (tz-aware or text
    timestamps, missing values, Ibis tables) goes through the Ibis expression.
    The ids come back sorted, the columns as numpy arrays (a DataFrame of 1M
    rows would be consolidated, filtered and sorted again by the caller).

    Each full-length pass costs 10-40 ms at 9M rows, so the columns that are
    0 without refunds, or without days after ``cal``, are not computed then
    (the usual log: purchases only, no holdout).
    """
    if not isinstance(transactions, pd.DataFrame):
        return None
    ts, amount = transactions["timestamp"], transactions["amount"]
    if (not pd.api.types.is_datetime64_dtype(ts.dtype) or not pd.api.types.is_numeric_dtype(amount.dtype)
            or pd.api.types.is_bool_dtype(amount.dtype) or len(ts) == 0 or ts.isna().any() or amount.isna().any()):
        return None
    amt = amount.to_numpy(dtype=np.float64)  # no copy for float64
    if not np.isfinite(amt).all():
        return None
    coded = _customer_codes(transactions["customer_id"])
    if coded is None:
        return None
    codes, ids = coded
    day = _epoch_days(ts.to_numpy())
    epoch = pd.Timestamp("1970-01-01")
    obs_n, cal_n = (obs - epoch).days, (cal - epoch).days
    if day.max() > obs_n:
        keep = day <= obs_n
        codes, day, amt = codes[keep], day[keep], amt[keep]
        if len(day) == 0:
            return None
    d0 = int(day.min())
    span = int(day.max()) - d0 + 1
    if span >= 100_000_000:  # the first-purchase-day key below (and the Ibis one) puts other days 1e8 days later
        return None
    holdout = d0 + span - 1 > cal_n  # any day after the calibration period
    refunds = bool((amt < 0).any())

    # one (customer, day) key; built in place: every temporary of 9M values costs its page faults too
    # (and each row-length array let go as soon as it is used: at 9M rows each is 70 MB, and the report kernels
    # run this side by side: the peak of the summary of 8.8M orders, over its input, fell from 1.2 to 0.77 GB)
    key = codes.astype(np.int64)  # a copy (codes may be the caller's)
    del codes
    key *= span
    key += day
    del day
    key -= d0
    if not (key[1:] >= key[:-1]).all():  # a sort, unless the log is in (customer, day) order already
        order = np.argsort(key, kind="stable")
        key, amt = key[order], amt[order]
        del order

    # one row per (customer, day)
    starts, day_of_row, rows = _segments(key)
    n_days_all = len(starts)
    dn = key[starts]
    del key
    cust = dn // span
    dn -= cust * span  # the day of each (customer, day), in place
    dn += d0
    if refunds:
        purchase = amt >= 0
        n_purchase_rows = np.add.reduceat(purchase, starts, dtype=np.int64)
        spend = np.bincount(day_of_row, np.where(purchase, amt, 0.0), n_days_all)
        refund = np.bincount(day_of_row, np.where(purchase, 0.0, amt), n_days_all)
        del purchase, day_of_row, amt, starts
        total = spend
        total += refund  # spend + refund, in place
        del spend
    else:  # every row a purchase: the spend is the total (the same bincount), every day a purchase day
        total = np.bincount(day_of_row, amt, n_days_all)
        n_purchase_rows = rows
        del day_of_row, amt, starts

    # one row per customer
    cstarts, owner, days_of = _segments(cust)
    customer_of = cust[cstarts]
    del cust
    n = len(cstarts)
    zeros_i, zeros_f = np.zeros(n, np.int64), np.zeros(n)
    refund_cols = {"refund_rows": zeros_i, "refund_amount": zeros_f, "refund_only_days": zeros_i}
    if refunds:  # summed first, so that their per-day arrays go before the ones below are made
        refund_cols = {"refund_rows": _segment_sum(rows - n_purchase_rows, cstarts, owner, n),
                       "refund_amount": _segment_sum(refund, cstarts, owner, n),
                       "refund_only_days": _segment_sum(n_purchase_rows == 0, cstarts, owner, n)}
        del refund
    del rows
    if not refunds and not holdout:
        # every day is a purchase day of the period: the first and last day are the segment's ends
        first, last, n_days, first_pos = dn[cstarts], dn[cstarts + days_of - 1], days_of, cstarts
        net = np.bincount(owner, total, n)
    else:
        ic = dn <= cal_n
        pc = ic & (n_purchase_rows > 0) if refunds else ic
        # the first purchase day of the period: the smallest day, with the days that are not one pushed past every day
        first_key = dn + np.where(pc, 0, 100_000_000)
        first = np.minimum.reduceat(first_key, cstarts)
        first_pos = np.flatnonzero(first_key == first[owner])  # one day a customer: days are distinct
        del first_key
        last = np.maximum.reduceat(dn * pc, cstarts)
        n_days = _segment_sum(pc, cstarts, owner, n)
        net = np.bincount(owner, np.where(ic, total, 0.0), n) if holdout else np.bincount(owner, total, n)
    cols = {
        "first": first,
        "last": last,
        "n_days": n_days,
        # repeat spend net of refunds: the period's spend and refunds less those of the first purchase day
        "net": net - total[first_pos],
        "h_days": _segment_sum(~ic & (n_purchase_rows > 0), cstarts, owner, n) if holdout else zeros_i,
        "h_rows": _segment_sum(np.where(ic, 0, n_purchase_rows), cstarts, owner, n) if holdout else zeros_i,
        "h_net": _segment_sum(np.where(ic, 0.0, total), cstarts, owner, n) if holdout else zeros_f,
        **refund_cols,
        "any_cal": _segment_sum(ic, cstarts, owner, n) if holdout else days_of,
    }
    return ids.take(customer_of).rename("customer_id"), cols


def _check_id_types(ids: pd.Series) -> None:
    """Customer ids of one type: ``1`` and ``"1"`` would be two customers (and no engine can order them together)."""
    if ids.dtype != object:
        return
    present = ids.dropna()
    kinds = present.map(lambda v: type(v).__name__)
    if kinds.nunique() > 1:
        first = present.groupby(kinds.to_numpy(), sort=True).first()  # one example of each type
        raise ClvError(f"transactions.customer_id: ids of {len(first)} types ({', '.join(first.index)}), e.g. "
                       f"{', '.join(repr(v) for v in first)}; make them all text (df['customer_id'].astype(str)) or all numbers")


@ibis.udf.agg.builtin(name="min_by")
def _min_by(arg: float, key: int) -> float:
    """The value of ``arg`` on the row with the smallest ``key`` (DuckDB and Spark SQL both have min_by)."""


def rfm_summary(transactions, *, observation_end, calibration_end=None, time_unit: str = "D") -> pd.DataFrame:
    """One row per customer: frequency, recency, T, monetary_value (and holdout columns).

    transactions needs customer_id, timestamp, amount (the transactions
    contract; a pandas DataFrame or an Ibis table, so the event-level data never
    has to fit in pandas). Timestamps are taken at day precision. An Ibis table
    is summarised by an Ibis expression (run where its data lives); a pandas
    frame with naive datetime64 timestamps, in numpy when the engine is DuckDB
    (the same definitions, without copying the frame into DuckDB and back),
    and by the expression on Spark when Spark is selected.

    * ``frequency``: repeat purchase days, as in Fader, Hardie & Lee (2005):
      the number of distinct purchase days after the first one;
    * ``recency``: time from the first to the last purchase day;
    * ``T``: time from the first purchase day to the end of the (calibration)
      period;
    * ``monetary_value``: mean spend of the repeat purchase days (0 without
      repeat purchase).

    ``time_unit`` is ``"D"`` (days) or ``"W"`` (weeks measured with day
    precision, as the CDNOW papers do: days / 7). Only purchases on or before
    ``observation_end`` count (both dates are whole days: all of that day
    belongs to the period). With ``calibration_end``, the four columns
    describe the calibration period (up to and including ``calibration_end``)
    and ``frequency_holdout`` (purchase days after it), ``monetary_value_holdout``
    and ``duration_holdout`` (in ``time_unit``) are added, for the
    customers whose first purchase falls in the calibration period.

    The output equals ``lifetimes.utils.summary_data_from_transaction_data``
    (``freq="D"``, and ``freq_multiplier=7`` for weeks) and
    ``calibration_and_holdout_data`` row for row on data without refunds. As in
    lifetimes, ``monetary_value_holdout`` is the mean amount of the holdout
    *transaction rows* (not of purchase days, unlike ``monetary_value``): the
    two differ for customers who buy twice on one holdout day.

    Refunds (negative amounts): a refund is not a purchase occasion (a day with
    only refunds adds no frequency); it is netted against the customer's
    repeat spend of the same period (every refund of the period except those on
    the first purchase day, which net against that day, not a repeat one),
    and a monetary value is never negative (clipped at 0); one within 1e-9 of
    0 (the rounding residue of refunds that cancel purchases) is 0. ``summary.attrs``
    reports what the rule touched: ``refund_rows``, ``refund_amount``,
    ``refund_only_days``, ``refund_only_customers`` (dropped: no purchase at
    all), ``clipped_monetary_value`` (customers clipped at 0).
    """
    if time_unit not in TIME_UNITS:
        raise ClvError(f"time_unit must be one of {sorted(TIME_UNITS)}, got {time_unit!r}")
    obs = _day(observation_end, "observation_end")
    cal = obs if calibration_end is None else _day(calibration_end, "calibration_end")
    if cal > obs:
        raise ClvError(f"calibration_end ({cal.date()}) is after observation_end ({obs.date()})")

    if isinstance(transactions, pd.DataFrame):
        _require(transactions, ["customer_id", "timestamp", "amount"])
    # a pandas frame on the local engine: numpy, without the trip through DuckDB; with Spark selected, Spark does it
    fast = _per_customer_arrays(transactions, obs, cal) if engine.current() == "duckdb" else None
    if fast is None and isinstance(transactions, pd.DataFrame) and "customer_id" in transactions.columns:
        _check_id_types(transactions["customer_id"])
    columns = ["customer_id", "timestamp", "amount"] if isinstance(transactions, pd.DataFrame) else None  # checked above
    t = engine.as_table(transactions if fast is None else transactions.head(0), columns)  # with fast, the expression is not run
    _require(t, ["customer_id", "timestamp", "amount"])
    t = t.select(customer_id=t.customer_id, day=t.timestamp.cast("timestamp").date(), amount=t.amount.cast("float64"))
    t = t.filter(t.day <= obs.date())
    daily = t.group_by(["customer_id", "day"]).aggregate(
        spend=t.amount.sum(where=t.amount >= 0).fill_null(0.0),
        refund=t.amount.sum(where=t.amount < 0).fill_null(0.0),
        n_purchase_rows=t.count(where=t.amount >= 0),
        n_refund_rows=t.count(where=t.amount < 0),
    )
    # one pass over the per-day table, no join: flags as 0/1 integers (sums of products run faster than FILTER
    # clauses), and the first purchase day's values with min_by over a key that puts that day first
    d = daily.mutate(
        dn=daily.day.epoch_days(),
        pc=((daily.n_purchase_rows > 0) & (daily.day <= cal.date())).cast("int64"),
        ph=((daily.n_purchase_rows > 0) & (daily.day > cal.date())).cast("int64"),
        ic=(daily.day <= cal.date()).cast("int64"),
    )
    key = d.dn + (1 - d.pc) * 100_000_000
    per_customer = d.group_by("customer_id").aggregate(
        first=key.min(),
        last=(d.dn * d.pc).max(),
        # integer sums are cast back to int64: DuckDB widens them to int128, which reaches pandas as slow Python objects
        n_days=d.count(where=d.pc == 1),
        # repeat spend net of refunds: the period's spend and refunds less those of the first purchase day
        net=((d.spend + d.refund) * d.ic).sum() - _min_by(d.spend + d.refund, key),
        h_days=d.count(where=d.ph == 1),
        h_rows=(d.n_purchase_rows * (1 - d.ic)).sum().cast("int64"),
        h_net=((d.spend + d.refund) * (1 - d.ic)).sum(),
        refund_rows=d.n_refund_rows.sum().cast("int64"),
        refund_amount=d.refund.sum(),
        refund_only_days=d.count(where=d.n_purchase_rows == 0),
        any_cal=d.count(where=d.ic == 1),
    )
    if fast is None:
        df = engine.execute(per_customer).set_index("customer_id").fillna(0.0).sort_index()
        ids, c = df.index, {name: df[name].to_numpy() for name in df.columns}
    else:
        ids, c = fast  # sorted ids, no missing value
    # the rest in numpy on plain arrays: a Series handed to a numpy function makes pandas hash its 1M-id index
    # (numpy looks for __array_interface__, which pandas looks up among the ids), and a DataFrame per step copies
    totals = {name: c[name].sum() for name in ("refund_rows", "refund_amount", "refund_only_days")}
    n_refund_only = int(((c["n_days"] == 0) & (c["any_cal"] > 0)).sum())
    buyer = c["n_days"] > 0
    if not buyer.all():
        ids, c = ids[buyer], {name: v[buyer] for name, v in c.items()}
    unit = TIME_UNITS[time_unit]
    cal_num = (cal - pd.Timestamp("1970-01-01")).days
    frequency = (c["n_days"] - 1).astype(float)
    net = c["net"].astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        mv = np.where(frequency > 0, net / np.where(frequency > 0, frequency, 1.0), 0.0)
    # sums of cents differ in the last bits with the engine's summation order: a repeat spend that refunds cancel
    # exactly can come out as -7e-15 on one engine and 0 on another; only a value below -1e-9 is a clipped one
    # and a +7e-15 residue is 0 too: kept, it would pass Gamma-Gamma's "spend > 0" filter as a customer who spends nothing
    clipped = int((mv < -_ROUNDING).sum())
    columns = {
        "frequency": frequency,
        "recency": ((c["last"] - c["first"]) / unit).astype(float),
        "T": ((cal_num - c["first"]) / unit).astype(float),
        "monetary_value": np.where(np.abs(mv) < _ROUNDING, 0.0, np.clip(mv, 0.0, None)),
    }
    if calibration_end is not None:
        hnet = c["h_net"].astype(float)
        hrows = c["h_rows"].astype(float)
        with np.errstate(invalid="ignore", divide="ignore"):
            hmv = np.where(hrows > 0, hnet / np.where(hrows > 0, hrows, 1.0), 0.0)
        clipped += int((hmv < -_ROUNDING).sum())
        columns["frequency_holdout"] = c["h_days"].astype(float)
        columns["monetary_value_holdout"] = np.where(np.abs(hmv) < _ROUNDING, 0.0, np.clip(hmv, 0.0, None))
        columns["duration_holdout"] = np.full(len(frequency), float((obs - cal).days / unit))
    out = pd.DataFrame(columns, index=pd.Index(ids, name="customer_id"))
    out.attrs.update(
        time_unit=time_unit,
        observation_end=str(obs.date()),
        calibration_end=None if calibration_end is None else str(cal.date()),
        refund_rows=int(totals["refund_rows"]),
        refund_amount=float(totals["refund_amount"]),
        refund_only_days=int(totals["refund_only_days"]),
        refund_only_customers=n_refund_only,
        clipped_monetary_value=clipped,
    )
    return out


def compress_summary(summary: pd.DataFrame, *, columns=("frequency", "recency", "T")) -> pd.DataFrame:
    """The distinct rows of ``summary[columns]`` with a ``weight`` column counting the customers (or summing their weights).

    The likelihood of the BTYD models depends on a customer only through these
    columns, so fitting the compressed table with weights gives the same
    likelihood on a fraction of the rows.
    """
    columns = list(columns)
    _require(summary, columns, "summary")
    w = summary["weight"].astype(float) if "weight" in summary.columns else pd.Series(1.0, index=summary.index)
    fast = _compress_by_codes(summary, columns, w.to_numpy())
    if fast is not None:
        return fast
    grouped = summary[columns].assign(weight=w.to_numpy()).groupby(columns, sort=True, as_index=False)["weight"].sum()
    return grouped.reset_index(drop=True)


def _compress_by_codes(summary, columns, w):
    """``compress_summary`` by integer codes: each column factorized (sorted), one int64 key per row, its distinct values.

    The same table as the pandas groupby (rows in the same sorted order), at a
    fraction of its time; None (use the groupby) when a column has missing
    values or the key could overflow.
    """
    codes, uniques = [], []
    for c in columns:
        f, u = pd.factorize(summary[c].to_numpy(), sort=True)
        if len(f) and f.min() < 0:
            return None
        codes.append(f)
        uniques.append(u)
    if len(summary) == 0 or math.prod(max(len(u), 1) for u in uniques) >= 2**62:
        return None
    key = codes[0].astype(np.int64)
    for f, u in zip(codes[1:], uniques[1:]):
        key = key * len(u) + f
    ukey, inv = np.unique(key, return_inverse=True)
    out = {}
    for c, u in reversed(list(zip(columns, uniques))):
        ukey, pos = np.divmod(ukey, len(u))
        out[c] = u[pos]
    df = pd.DataFrame({c: out[c] for c in columns})
    df["weight"] = np.bincount(inv.ravel(), weights=w, minlength=len(df))
    return df


# ============================================================================ numerics


#: threadpoolctl's view of the BLAS libraries loaded in this process (numpy's and scipy's OpenBLAS); made on first use.
_BLAS = None


@contextlib.contextmanager
def _one_blas_thread():
    """Run the block with every BLAS library (numpy's and scipy's OpenBLAS) on one thread; the counts are restored after.

    The model code calls BLAS only on tiny arrays (scipy's L-BFGS-B on 2 to 4
    parameters, 4 x 4 Cholesky factors of the parameter covariance):
    OpenBLAS's worker threads cost more than they save there, and while they
    spin waiting for work they take the other cores from the numpy code in
    between. On the default sample (2 busy cores) the BG/NBD fit ran 3x
    faster and the Gamma-Gamma fit 6x with one thread. No number depends on
    the thread count: the model code sums with numpy (pairwise summation),
    never with ``np.dot`` on long vectors, whose result OpenBLAS splits across
    its threads. threadpoolctl (scikit-learn's) does the limiting: it finds
    the libraries and restores their thread counts; with one controller made
    once, entering the block costs about 20 microseconds.
    """
    global _BLAS
    if _BLAS is None:
        from threadpoolctl import ThreadpoolController

        _BLAS = ThreadpoolController()
    with _BLAS.limit(limits=1, user_api="blas"):
        yield


def _blas_single_threaded(func):
    """Decorator: the function runs inside ``_one_blas_thread()``."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with _one_blas_thread():
            return func(*args, **kwargs)
    return wrapper


def _log1mexp(x):
    """log(1 - exp(x)) for x <= 0, accurate near 0 and for very negative x."""
    x = np.asarray(x, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(x > -0.693, np.log(-np.expm1(x)), np.log1p(-np.exp(x)))


def _log_hyp2f1_a_a1(a, b, z):
    """log 2F1(a, b; a + 1; z) for 0 <= z < 1 without overflow.

    Pfaff's transformation, 2F1(a, b; c; z) = (1 - z)^-b 2F1(1, b; a + 1; z / (z - 1))
    for c = a + 1, leaves a function of a negative argument whose value lies in
    (0, 1] (Euler's integral), so it never overflows however large x makes a
    and b. Used by the Pareto/NBD likelihood (Fader & Hardie 2005, note 009, eq. 22-23).
    """
    a, b, z = np.broadcast_arrays(np.asarray(a, float), np.asarray(b, float), np.asarray(z, float))
    w = z / (z - 1.0)
    h = special.hyp2f1(1.0, b, a + 1.0, w)
    with np.errstate(divide="ignore", invalid="ignore"):
        return -b * np.log1p(-z) + np.log(h)


def _expm1_ratio(k, x):
    """(1 - exp(k x)) / k, continuous at k = 0 (where it is -x)."""
    k = np.asarray(k, float)
    small = np.abs(k) < 1e-10
    safe = np.where(small, 1.0, k)
    return np.where(small, -x, -np.expm1(safe * x) / safe)


# ============================================================================ models


class _Model:
    """Settings at construction; ``fit`` fills ``params_``, ``fit_info_``, ``log_likelihood_``, ``cov_``."""

    name = ""
    WARM_START_ROWS = 50_000
    param_names: tuple[str, ...] = ()
    data_columns: tuple[str, ...] = ()
    citation = ""

    def __init__(self, *, penalizer: float = 0.0, max_restarts: int = 6, compress: bool = True, initial_params=None):
        self.penalizer = float(penalizer)
        self.max_restarts = int(max_restarts)
        self.compress = bool(compress)
        self.initial_params = initial_params

    # -- to be provided by each model
    def _loglik(self, params, data) -> np.ndarray:  # per row, unweighted
        raise NotImplementedError

    def _start(self, data) -> np.ndarray:
        raise NotImplementedError

    def _check_identified(self, data, n_customers) -> None:
        return None

    # -- shared machinery
    def __repr__(self):
        if not hasattr(self, "params_"):
            return f"<{type(self).__name__} (not fitted)>"
        ps = ", ".join(f"{k}={v:.4g}" for k, v in self.params_.items())
        return f"<{type(self).__name__} {ps}; {self.n_customers_:,.0f} customers, LL={self.log_likelihood_:,.2f}>"

    def _prepare(self, summary: pd.DataFrame) -> dict:
        _require(summary, self.data_columns, "summary")
        df = summary[list(self.data_columns) + (["weight"] if "weight" in summary.columns else [])]
        bad = df[list(self.data_columns)].isna().any(axis=1) | ~np.isfinite(df[list(self.data_columns)].to_numpy(float)).all(axis=1)
        if bad.any():
            ex = ", ".join(str(i) for i in df.index[bad][:3])
            raise ClvError(f"summary: {int(bad.sum()):,} of {len(df):,} rows have a missing or infinite "
                           f"{'/'.join(self.data_columns)} (e.g. {ex})")
        if self.compress:
            df = compress_summary(df, columns=self.data_columns)
        data = {c: df[c].to_numpy(float) for c in self.data_columns}
        data["weight"] = df["weight"].to_numpy(float) if "weight" in df.columns else np.ones(len(df))
        return data

    def _validate_rows(self, data):
        return None

    def _loglik_grad(self, params, data):
        """(per-row log-likelihood, per-row gradient w.r.t. the parameters, k x n), or None for numerical gradients."""
        return None

    def _total_and_grad(self, params, data):
        """(weighted total log-likelihood, its gradient w.r.t. the parameters) from the per-row ``_loglik_grad``."""
        ll, g = self._loglik_grad(params, data)
        w = data["weight"]  # products summed by numpy, not BLAS: np.dot's threads cost more than they save here
        return float((w * ll).sum()), (g * w).sum(axis=1)

    def _nll_and_grad(self, logp, data, penalizer):
        params = np.exp(logp)
        with np.errstate(all="ignore"):
            total, grad = self._total_and_grad(params, data)
            grad = grad * params  # chain rule: d/dlog(theta) = theta d/dtheta
        wsum = data["weight"].sum()
        if not np.isfinite(total) or not np.all(np.isfinite(grad)):
            return 1e300, np.zeros_like(logp)
        return -total / wsum + penalizer * float(np.dot(logp, logp)), -grad / wsum + 2 * penalizer * logp

    def _nll(self, logp, data, penalizer):
        params = np.exp(logp)
        with np.errstate(all="ignore"):
            ll = self._loglik(params, data)
            total = float((data["weight"] * ll).sum())  # numpy's pairwise sum: the same bits whatever BLAS's thread count
        if not np.isfinite(total):
            return 1e300
        return -total / data["weight"].sum() + penalizer * float(np.dot(logp, logp))

    @_blas_single_threaded
    def fit(self, summary: pd.DataFrame) -> "_Model":
        """Fit by maximum likelihood on ``summary`` (one row per customer, or distinct rows with ``weight``).

        The optimiser is L-BFGS-B on log-parameters, with analytic gradients
        where the model has them (BG/NBD, MBG/NBD, Gamma-Gamma, sBG) and numerical
        ones otherwise; on more than ``WARM_START_ROWS`` distinct rows it first
        converges on a random subsample of them, then on all. A fit has
        converged when the largest gradient component of the mean negative
        log-likelihood is below 1e-4. Retries, in this order, until one
        converges (at most ``max_restarts`` after the first, then the penalized
        ones): L-BFGS-B from ``initial_params`` or data-driven start values;
        Nelder-Mead from the best point so far, polished by L-BFGS-B; the
        data-driven start (when ``initial_params`` was given); the start with its
        scale parameters (alpha, beta, v) multiplied by 0.2, 5, 0.05 and 20;
        finally a ridge penalizer on the log-parameters (1e-6, 1e-4, 1e-2).
        ``fit_info_`` records every attempt, the restarts and the penalizer.
        Raises ``FitError`` (listing every attempt) when none converges, and
        ``NotIdentifiedError`` when the data cannot identify the model.
        """
        started = time.perf_counter()
        data = self._prepare(summary)
        self._validate_rows(data)
        n_customers = float(data["weight"].sum())
        self._check_identified(data, n_customers)
        x_data = np.log(self._start(data))
        starts = [x_data] + [x_data + np.log(f) * self._scale_mask() for f in (0.2, 5.0, 0.05, 20.0)]
        if self.initial_params is not None:
            ip = self.initial_params
            vals = [ip[k] for k in self.param_names] if isinstance(ip, (dict, pd.Series)) else list(ip)
            starts.insert(0, np.log(np.asarray(vals, float)))
        x0 = starts[0]
        attempts, best = [], None
        penalizers = [self.penalizer] + [p for p in (1e-6, 1e-4, 1e-2) if p > self.penalizer]
        plan = [("L-BFGS-B", starts[0], penalizers[0]), ("Nelder-Mead", None, penalizers[0])]
        plan += [("L-BFGS-B", s, penalizers[0]) for s in starts[1:]]
        plan = plan[: 1 + max(0, self.max_restarts)]
        plan += [("L-BFGS-B", None, p) for p in penalizers[1:]]
        converged = False
        for method, start, pen in plan:
            x_init = start if start is not None else (best["x"] if best is not None else x0)
            res = self._minimize(method, x_init, data, pen)
            attempts.append({"method": method, "penalizer": pen, "fun": res["fun"], "converged": res["converged"],
                             "message": res["message"]})
            if res["converged"]:
                best, converged = {**res, "penalizer": pen}, True
                break
            if best is None or pen > best["penalizer"] or res["fun"] < best["fun"]:
                best = {**res, "penalizer": pen}
        if not converged:
            lines = "; ".join(f"{a['method']} (penalizer {a['penalizer']:g}): {a['message']}" for a in attempts)
            raise FitError(f"{self.name}: no fit converged on {n_customers:,.0f} customers after {len(attempts)} attempts "
                           f"({lines}). Check the summary for extreme rows, or pass initial_params.")
        x = best["x"]
        self.params_ = pd.Series(np.exp(x), index=list(self.param_names), name=self.name)
        self.log_likelihood_ = float((data["weight"] * self._loglik(self.params_.to_numpy(), data)).sum())
        self.n_customers_ = n_customers
        self.aic_ = 2 * len(self.param_names) - 2 * self.log_likelihood_
        self.bic_ = len(self.param_names) * math.log(max(n_customers, 1)) - 2 * self.log_likelihood_
        self.cov_, hess_note = self._covariance(x, data)
        boundary = [k for k, v in zip(self.param_names, x) if abs(v) > 11.5]  # below 1e-5 or above 1e5
        notes = []
        if boundary:
            notes.append(f"estimate(s) at a boundary of the parameter space: {', '.join(boundary)} "
                         f"({', '.join(f'{self.params_[b]:.3g}' for b in boundary)}); the model is close to a "
                         f"degenerate case and those parameters are weakly identified")
        if hess_note:
            notes.append(hess_note)
        if best["penalizer"] > 0:
            notes.append(f"fitted with a ridge penalizer {best['penalizer']:g} on the log-parameters: estimates are shrunk toward 1")
        self.fit_info_ = {
            "converged": True,
            "method": attempts[-1]["method"],
            "restarts": len(attempts) - 1,
            "penalizer": best["penalizer"],
            "attempts": attempts,
            "n_rows": int(len(data["weight"])),
            "n_customers": n_customers,
            "boundary": boundary,
            "notes": notes,
            "seconds": time.perf_counter() - started,
        }
        return self

    def _scale_mask(self):
        return np.array([1.0 if k in ("alpha", "beta", "v") else 0.0 for k in self.param_names])

    def _minimize(self, method, x0, data, pen):
        fun = lambda z: self._nll(z, data, pen)  # noqa: E731
        analytic = type(self)._loglik_grad is not _Model._loglik_grad
        lbfgs = dict(method="L-BFGS-B", bounds=[(-25, 25)] * len(x0), options={"maxiter": 1000, "ftol": 1e-15, "gtol": 1e-9})
        if analytic:
            lbfgs["jac"] = True
            target = lambda z: self._nll_and_grad(z, data, pen)  # noqa: E731
        else:
            target = fun
        try:
            if method == "Nelder-Mead":
                r = optimize.minimize(fun, x0, method="Nelder-Mead",
                                      options={"maxiter": 4000, "xatol": 1e-8, "fatol": 1e-12})
                x0 = r.x
            n_rows = len(data["weight"])
            if method != "Nelder-Mead" and n_rows > self.WARM_START_ROWS:
                # large data: converge on a random subsample of the distinct rows first (weights rescaled), then polish
                rng = np.random.default_rng(0)
                idx = np.sort(rng.choice(n_rows, self.WARM_START_ROWS, replace=False))
                sub = {k: v[idx] for k, v in data.items() if not k.startswith("_") and isinstance(v, np.ndarray) and len(v) == n_rows}
                sub_target = (lambda z: self._nll_and_grad(z, sub, pen)) if analytic else (lambda z: self._nll(z, sub, pen))
                rs = optimize.minimize(sub_target, x0, **{**lbfgs, "options": {"maxiter": 500, "ftol": 1e-10, "gtol": 1e-6}})
                if np.all(np.isfinite(rs.x)):
                    x0 = rs.x
                    if analytic:
                        polished = self._newton_polish(x0, sub, data, pen)
                        if polished is not None:
                            return polished
            r = optimize.minimize(target, x0, **lbfgs)
        except (FloatingPointError, ValueError, OverflowError) as exc:
            return {"x": np.asarray(x0, float), "fun": float("inf"), "converged": False, "message": f"{type(exc).__name__}: {exc}"}
        x, f = np.asarray(r.x, float), float(r.fun)
        ok = bool(np.isfinite(f) and f < 1e299)
        if ok:
            g = self._nll_and_grad(x, data, pen)[1] if analytic else optimize.approx_fprime(x, fun, 1e-6)
            gnorm = float(np.max(np.abs(g)))
            ok = gnorm < 1e-4 or (r.success and gnorm < 1e-3)
            msg = f"{r.message} (max |gradient| {gnorm:.1e})"
        else:
            msg = f"{r.message} (non-finite likelihood)"
        return {"x": x, "fun": f, "converged": ok, "message": str(msg)}

    def _newton_polish(self, x, sub, data, pen, *, max_steps: int = 12):
        """Newton steps on all rows with the Hessian of the warm-start subsample; the result, or None to run L-BFGS-B.

        The subsample's Hessian of the mean negative log-likelihood (forward
        differences of the analytic gradient, on the subsample: cheap) is close
        to that of all rows, so these steps converge fast, at one evaluation on
        all rows each, where L-BFGS-B, which starts without curvature, takes
        a dozen or more. Each step is halved until the objective does not
        increase; the result is returned when the largest gradient component is
        below 1e-9 (L-BFGS-B's gtol), else None (L-BFGS-B then starts from x).
        """
        k, eps = len(x), 1e-5
        g_sub = self._nll_and_grad(x, sub, pen)[1]
        h = np.empty((k, k))
        for i in range(k):
            e = np.zeros(k)
            e[i] = eps
            h[:, i] = (self._nll_and_grad(x + e, sub, pen)[1] - g_sub) / eps
        h = (h + h.T) / 2
        try:
            np.linalg.cholesky(h)
        except np.linalg.LinAlgError:
            return None
        f, g = self._nll_and_grad(x, data, pen)
        for steps in range(max_steps + 1):
            if f >= 1e299:
                return None
            gnorm = float(np.max(np.abs(g)))
            if gnorm < 1e-9:
                return {"x": x, "fun": f, "converged": True,
                        "message": f"Newton steps with the subsample's Hessian: {steps} (max |gradient| {gnorm:.1e})"}
            step, t = -np.linalg.solve(h, g), 1.0
            while True:
                x_new = x + t * step
                if np.any(np.abs(x_new) > 25):
                    return None
                f_new, g_new = self._nll_and_grad(x_new, data, pen)
                if f_new <= f + 1e-13 * max(1.0, abs(f)):
                    break
                t /= 2
                if t < 1 / 16:
                    return None
            x, f, g = x_new, f_new, g_new
        return None

    def _covariance(self, x, data):
        """Inverse Hessian of the total negative log-likelihood in log-parameter space (central differences)."""
        k = len(x)
        total = lambda z: self._nll(z, data, 0.0) * data["weight"].sum()  # noqa: E731
        h = np.zeros((k, k))
        eps = 1e-4
        if type(self)._loglik_grad is not _Model._loglik_grad:  # central differences of the analytic gradient
            wsum = data["weight"].sum()
            g0 = self._nll_and_grad(x, data, 0.0)[1]
            for i in range(k):  # forward differences: k + 1 gradients
                e = np.zeros(k); e[i] = eps
                h[:, i] = (self._nll_and_grad(x + e, data, 0.0)[1] - g0) * wsum / eps
            h = (h + h.T) / 2
            return self._invert(h)
        f0 = total(x)
        for i in range(k):
            for j in range(i, k):
                if i == j:
                    e = np.zeros(k); e[i] = eps
                    h[i, i] = (total(x + e) - 2 * f0 + total(x - e)) / eps**2
                else:
                    ei = np.zeros(k); ei[i] = eps
                    ej = np.zeros(k); ej[j] = eps
                    h[i, j] = h[j, i] = (total(x + ei + ej) - total(x + ei - ej) - total(x - ei + ej) + total(x - ei - ej)) / (4 * eps**2)
        return self._invert(h)

    @staticmethod
    def _invert(h):
        k = len(h)
        try:
            cov = np.linalg.inv(h)
            if not np.all(np.isfinite(cov)) or np.any(np.linalg.eigvalsh((cov + cov.T) / 2) <= 0):
                raise np.linalg.LinAlgError
        except np.linalg.LinAlgError:
            return np.full((k, k), np.nan), ("the Hessian is not positive definite at the estimate: the parameters are "
                                             "not all identified by these data; intervals are not available")
        return (cov + cov.T) / 2, None

    # -- uncertainty
    def param_intervals(self, *, level: float = 0.9) -> pd.DataFrame:
        """Estimates with standard errors and intervals (normal on the log scale, from the inverse Hessian)."""
        self._check_fitted()
        z = special.ndtri(0.5 + level / 2)
        logse = np.sqrt(np.diag(self.cov_))
        est = self.params_.to_numpy()
        return pd.DataFrame(
            {"estimate": est, "std_error": est * logse,
             "lower": est * np.exp(-z * logse), "upper": est * np.exp(z * logse)},
            index=self.params_.index,
        ).rename_axis("parameter")

    @_blas_single_threaded
    def param_draws(self, n_draws: int = 200, *, seed: int = 0) -> np.ndarray:
        """``n_draws`` parameter vectors from the normal approximation of the likelihood (log scale); row 0 is the estimate."""
        self._check_fitted()
        x = np.log(self.params_.to_numpy())
        if not np.all(np.isfinite(self.cov_)):
            return np.exp(np.tile(x, (1, 1)))
        rng = np.random.default_rng(seed)
        d = rng.multivariate_normal(x, self.cov_, size=max(1, n_draws - 1), method="cholesky")
        return np.exp(np.vstack([x, d]))

    def _check_fitted(self):
        if not hasattr(self, "params_"):
            raise ClvError(f"{type(self).__name__} is not fitted yet: call fit_model(summary, {self.name!r}) first")

    def _p(self, params=None):
        return self.params_.to_numpy() if params is None else np.asarray(params, float)


def _factor(data, col):
    """(unique values, inverse index) of a data column, cached in the data dict.

    The likelihoods evaluate their transcendental functions once per distinct
    frequency, recency or T and gather them per row: a few hundred values
    instead of hundreds of thousands of rows.
    """
    key = "_u_" + col
    if key not in data:
        inv, u = pd.factorize(data[col], sort=True)  # np.unique's result, by hashing instead of sorting every row
        data[key] = (u, inv)
    return data[key]


def _pair_factor(data, a, b):
    key = f"_p_{a}_{b}"
    if key not in data:
        ua, ia = _factor(data, a)
        ub, ib = _factor(data, b)
        code = ia.astype(np.int64) * len(ub) + ib
        u, inv = np.unique(code, return_inverse=True)
        data[key] = (ua[u // len(ub)], ub[u % len(ub)], inv.ravel())
    return data[key]


def _arr(*xs):
    return [np.asarray(x, float) for x in xs]


class _Continuous(_Model):
    data_columns = ("frequency", "recency", "T")

    def _validate_rows(self, data):
        x, tx, T = data["frequency"], data["recency"], data["T"]
        bad = (x < 0) | (tx < 0) | (tx > T + 1e-9) | ((x == 0) & (tx > 0)) | (x != np.round(x))
        if bad.any():
            n = int(data["weight"][bad].sum())
            ex = ", ".join(f"(frequency {a:g}, recency {b:g}, T {c:g})" for a, b, c in zip(x[bad][:3], tx[bad][:3], T[bad][:3]))
            raise ClvError(f"summary: {n:,} customers have an impossible frequency/recency/T: frequency must be a whole "
                           f"number >= 0, 0 <= recency <= T, recency 0 when frequency is 0 (e.g. {ex})")

    def _check_identified(self, data, n):
        if not (data["frequency"] > 0).any():
            raise NotIdentifiedError(
                f"{self.name}: none of the {n:,.0f} customers made a repeat purchase (every frequency is 0), so the "
                f"data cannot tell a low purchase rate from early dropout: the model is not identified. Use a longer "
                f"observation period or customers with repeat purchases.")
        if len(data["weight"]) < 2:
            raise NotIdentifiedError(f"{self.name}: all {n:,.0f} customers have the same frequency, recency and T; "
                                     f"the {len(self.param_names)} parameters cannot be identified from one distinct row")

    def _start(self, data):
        w = data["weight"]
        mx = max(np.average(data["frequency"], weights=w), 0.05)
        mT = max(np.average(data["T"], weights=w), 1e-3)
        return self._start_from(mx, mT)

    # predictions shared by the continuous models, vectorised over rows and parameter draws
    def unconditional_expected_purchases(self, t, params=None):
        """Expected repeat purchases of a new customer in (0, t]."""
        raise NotImplementedError


class BGNBD(_Continuous):
    """BG/NBD: Fader, Hardie & Lee (2005), "Counting your customers the easy way", Marketing Science 24(2).

    Purchases while alive: Poisson(lambda), lambda ~ Gamma(r, alpha); after each
    purchase the customer drops out with probability p ~ Beta(a, b).
    """

    name = "bgnbd"
    param_names = ("r", "alpha", "a", "b")

    def _start_from(self, mx, mT):
        return np.array([0.5, 0.5 * mT / mx * 0.6, 1.0, 3.0])

    def _loglik(self, params, data):
        """Log of eq. (6) of Fader, Hardie & Lee (2005), in log space (logaddexp of its two terms)."""
        r, alpha, a, b = params
        xu, xi = _factor(data, "frequency")
        tu, ti = _factor(data, "recency")
        Tu, Ti = _factor(data, "T")
        common = (special.gammaln(r + xu) - special.gammaln(r) + r * np.log(alpha) - special.betaln(a, b))[xi]
        rx = (r + xu)[xi]
        t1 = special.betaln(a, b + xu)[xi] - rx * np.log(alpha + Tu)[Ti]
        with np.errstate(divide="ignore", invalid="ignore"):
            t2 = np.where(xu > 0, special.betaln(a + 1, np.maximum(b + xu - 1, 1e-300)), -np.inf)[xi] - rx * np.log(alpha + tu)[ti]
        return common + np.logaddexp(t1, t2)

    def _loglik_grad(self, params, data):
        """Eq. (6) and its gradient: d/dr, d/dalpha, d/da, d/db, weighting each term by its share of the likelihood."""
        return self._bg_grad(params, data, modified=False)

    def _total_and_grad(self, params, data):
        """The weighted sum of eq. (6) of Fader, Hardie & Lee (2005) over the rows, and its gradient, in fewer passes.

        Per row, log L = c(x) + t1 + log(1 + e^d) with
        c(x) = ln G(r + x) - ln G(r) + r ln alpha - ln B(a, b),
        t1 = ln B(a, b + x) - (r + x) ln(alpha + T) (eq. 6's first term) and
        d = ln(a / (b + x - 1)) + (r + x) ln((alpha + T) / (alpha + t_x)), the
        log-ratio of the second term to the first (d = -inf for x = 0). c + t1
        depends on x or on T alone, so its sum (and gradient) is taken over
        the distinct values with summed weights; only d and its share
        p = e^d / (1 + e^d) (= 1 - P(alive), Fader, Hardie & Lee 2008, eq. 2)
        are computed per row, for the rows with x > 0. Equals the weighted
        sums of ``_loglik_grad`` (a test holds it).
        """
        r, alpha, a, b = params
        c = data.get("_bg_sums")
        if c is None:
            xu, xi = _factor(data, "frequency")
            _, ti = _factor(data, "recency")
            Tu, Ti = _factor(data, "T")
            w, x = data["weight"], data["frequency"]
            pos = x > 0
            c = data["_bg_sums"] = {
                "wx": np.bincount(xi, w, len(xu)), "wT": np.bincount(Ti, w, len(Tu)),
                "wxT": np.bincount(Ti, w * x, len(Tu)), "wsum": float(w.sum()),
                "w": w[pos], "x": x[pos], "xi": xi[pos], "Ti": Ti[pos], "ti": ti[pos],
            }
        xu, Tu, tu = data["_u_frequency"][0], data["_u_T"][0], data["_u_recency"][0]
        dg, wx, wT, wxT, wsum = special.digamma, c["wx"], c["wT"], c["wxT"], c["wsum"]
        lT, ltx = np.log(alpha + Tu), np.log(alpha + tu)
        # per row (x > 0)
        delta = lT[c["Ti"]] - ltx[c["ti"]]
        rx = r + c["x"]
        with np.errstate(divide="ignore", invalid="ignore"):
            d = (np.log(a) - np.log(b + xu - 1))[c["xi"]] + rx * delta
        e = np.exp(-np.abs(d))
        log1p_ed = np.maximum(d, 0.0) + np.log1p(e)
        wp = c["w"] * np.where(d >= 0, 1.0, e) / (1.0 + e)
        dinv = (1.0 / (alpha + Tu))[c["Ti"]] - (1.0 / (alpha + tu))[c["ti"]]
        px = np.bincount(c["xi"], wp, len(xu))
        total = (wsum * (r * np.log(alpha) - special.gammaln(r) - special.betaln(a, b))
                 + (wx * (special.gammaln(r + xu) + special.betaln(a, b + xu))).sum()
                 - ((r * wT + wxT) * lT).sum() + (c["w"] * log1p_ed).sum())
        with np.errstate(divide="ignore", invalid="ignore"):
            g_b_rows = np.where(px > 0, px / (b + xu - 1), 0.0).sum()
        # products summed by numpy, not np.dot: BLAS threads cost more than they save on these vectors
        grad = np.array([
            wsum * (np.log(alpha) - dg(r)) + (wx * dg(r + xu)).sum() - (wT * lT).sum() + (wp * delta).sum(),
            wsum * r / alpha - ((r * wT + wxT) / (alpha + Tu)).sum() + (wp * rx * dinv).sum(),
            (wx * (dg(a + b) - dg(a + b + xu))).sum() + wp.sum() / a,
            (wx * (dg(a + b) - dg(b) + dg(b + xu) - dg(a + b + xu))).sum() - g_b_rows,
        ])
        return float(total), grad

    def _bg_grad(self, params, data, *, modified):
        r, alpha, a, b = params
        xu, xi = _factor(data, "frequency")
        tu, ti = _factor(data, "recency")
        Tu, Ti = _factor(data, "T")
        dg = special.digamma
        sh = 1.0 if modified else 0.0  # MBG/NBD: t1 has b + x + 1, t2 has b + x
        rx = (r + xu)[xi]
        lT, ltx = np.log(alpha + Tu)[Ti], np.log(alpha + tu)[ti]
        common = (special.gammaln(r + xu) - special.gammaln(r) + r * np.log(alpha) - special.betaln(a, b))[xi]
        t1 = special.betaln(a, b + xu + sh)[xi] - rx * lT
        with np.errstate(divide="ignore", invalid="ignore"):
            b2 = np.maximum(b + xu - 1 + sh, 1e-300)
            t2u = special.betaln(a + 1, b2)
            if not modified:
                t2u = np.where(xu > 0, t2u, -np.inf)
            t2 = t2u[xi] - rx * ltx
        ll = common + np.logaddexp(t1, t2)
        w1 = special.expit(t1 - t2)
        w2 = 1.0 - w1
        g_r = (dg(r + xu) - dg(r) + np.log(alpha))[xi] - w1 * lT - w2 * ltx
        g_alpha = r / alpha - rx * (w1 / (alpha + Tu)[Ti] + w2 / (alpha + tu)[ti])
        abx = dg(a + b + xu + sh)
        with np.errstate(invalid="ignore"):
            g_a = -(dg(a) - dg(a + b)) + w1 * (dg(a) - abx)[xi] + w2 * (dg(a + 1) - abx)[xi]
            g_b = -(dg(b) - dg(a + b)) + w1 * (dg(b + xu + sh) - abx)[xi] + w2 * np.nan_to_num(dg(b2) - abx)[xi]
        return ll, np.vstack([g_r, g_alpha, g_a, g_b])

    def probability_alive(self, x, tx, T, params=None):
        """P(alive | x, t_x, T): Fader, Hardie & Lee (2008) note 'Computing P(alive) using the BG/NBD model', eq. (2)."""
        r, alpha, a, b = self._p(params)
        x, tx, T = _arr(x, tx, T)
        with np.errstate(divide="ignore", invalid="ignore"):
            lr = np.log(a) - np.log(np.maximum(b + x - 1, 1e-300)) + (r + x) * (np.log(alpha + T) - np.log(alpha + tx))
        return np.where(x > 0, special.expit(-lr), 1.0)

    def expected_purchases(self, t, x, tx, T, params=None):
        """E[Y(t) | x, t_x, T], eq. (10) of Fader, Hardie & Lee (2005).

        The Gaussian hypergeometric term is evaluated after Euler's
        transformation (Fader & Hardie 2013, note 027 "Overcoming the BG/NBD
        model's #NUM! error problem"), so large x neither overflows nor underflows.
        """
        return self.expected_if_alive(t, x, T, params) * self.probability_alive(x, tx, T, params)

    def expected_if_alive(self, t, x, T, params=None):
        """E[Y(t) | alive at T, x, T]: eq. (10) without its P(alive) factor, the only part that depends on t_x."""
        r, alpha, a, b = self._p(params)
        x, T, t = _arr(x, T, t)
        z = t / (alpha + T + t)
        h = special.hyp2f1(a + b - 1 - r, a - 1, a + b + x - 1, z)
        bracket = 1.0 - np.exp((a - 1) * np.log1p(-z)) * h
        return (a + b + x - 1) / (a - 1) * bracket

    def unconditional_expected_purchases(self, t, params=None):
        """E[X(t)], eq. (9) of Fader, Hardie & Lee (2005)."""
        r, alpha, a, b = self._p(params)
        t = np.asarray(t, float)
        return (a + b - 1) / (a - 1) * (1 - np.exp(r * np.log(alpha / (alpha + t))) * special.hyp2f1(r, b, a + b - 1, t / (alpha + t)))

    def _alive_at_start(self, rng, p):
        """BG/NBD: every customer is alive at time 0; dropout happens only after a repeat purchase."""
        return np.ones(len(p), bool)

    def _simulate(self, T, rng, params=None):
        r, alpha, a, b = self._p(params)
        n = len(T)
        lam = rng.gamma(r, 1 / alpha, n)
        p = rng.beta(a, b, n)
        count = np.zeros(n)
        clock = np.zeros(n)
        alive = self._alive_at_start(rng, p)
        for _ in range(10_000):
            idx = np.flatnonzero(alive)
            if not len(idx):
                break
            clock[idx] += rng.exponential(1 / np.maximum(lam[idx], 1e-12))
            within = clock[idx] <= T[idx]
            count[idx[within]] += 1
            alive[idx[~within]] = False
            drop = rng.random(len(idx)) < p[idx]
            alive[idx[within & drop]] = False
        return count


class MBGNBD(BGNBD):
    """MBG/NBD: Batislam, Denizel & Filiztekin (2007), Int. J. of Research in Marketing 24(3).

    As BG/NBD, but a customer may also drop out right after the first purchase
    (so a customer without repeat purchase is not certainly alive).
    """

    name = "mbgnbd"
    _total_and_grad = _Model._total_and_grad  # its own likelihood, summed row by row (not BG/NBD's eq. 6 sums)

    def _loglik(self, params, data):
        """Log-likelihood of Batislam et al. (2007), eq. (4), in log space."""
        r, alpha, a, b = params
        xu, xi = _factor(data, "frequency")
        tu, ti = _factor(data, "recency")
        Tu, Ti = _factor(data, "T")
        common = (special.gammaln(r + xu) - special.gammaln(r) + r * np.log(alpha) - special.betaln(a, b))[xi]
        rx = (r + xu)[xi]
        t1 = special.betaln(a, b + xu + 1)[xi] - rx * np.log(alpha + Tu)[Ti]
        t2 = special.betaln(a + 1, b + xu)[xi] - rx * np.log(alpha + tu)[ti]
        return common + np.logaddexp(t1, t2)

    def _loglik_grad(self, params, data):
        return self._bg_grad(params, data, modified=True)

    def probability_alive(self, x, tx, T, params=None):
        """P(alive | x, t_x, T) = 1 / (1 + a/(b+x) ((alpha+T)/(alpha+t_x))^(r+x)), Batislam et al. (2007) eq. (7)."""
        r, alpha, a, b = self._p(params)
        x, tx, T = _arr(x, tx, T)
        lr = np.log(a) - np.log(b + x) + (r + x) * (np.log(alpha + T) - np.log(alpha + tx))
        return special.expit(-lr)

    def expected_purchases(self, t, x, tx, T, params=None):
        """E[Y(t) | x, t_x, T], Batislam et al. (2007) eq. (8), with Euler's transformation of the 2F1 term."""
        return self.expected_if_alive(t, x, T, params) * self.probability_alive(x, tx, T, params)

    def expected_if_alive(self, t, x, T, params=None):
        """E[Y(t) | alive at T, x, T]: eq. (8) without its P(alive) factor."""
        r, alpha, a, b = self._p(params)
        x, T, t = _arr(x, T, t)
        z = t / (alpha + T + t)
        h = special.hyp2f1(a + b - r, a - 1, a + b + x, z)
        bracket = 1.0 - np.exp((a - 1) * np.log1p(-z)) * h
        return (a + b + x) / (a - 1) * bracket

    def unconditional_expected_purchases(self, t, params=None):
        """E[X(t)] = b/(a-1) [1 - (alpha/(alpha+t))^r 2F1(r, b+1; a+b; t/(alpha+t))], Batislam et al. (2007) eq. (6)."""
        r, alpha, a, b = self._p(params)
        t = np.asarray(t, float)
        return b / (a - 1) * (1 - np.exp(r * np.log(alpha / (alpha + t))) * special.hyp2f1(r, b + 1, a + b, t / (alpha + t)))

    def _alive_at_start(self, rng, p):
        """MBG/NBD: a customer may also drop out at time 0, right after the first purchase."""
        return rng.random(len(p)) >= p


class ParetoNBD(_Continuous):
    """Pareto/NBD: Schmittlein, Morrison & Colombo (1987), Management Science 33(1).

    Purchases while alive: Poisson(lambda), lambda ~ Gamma(r, alpha); lifetime
    exponential(mu), mu ~ Gamma(s, beta). Expressions from Fader & Hardie
    (2005), "A note on deriving the Pareto/NBD model and related expressions" (note 009).
    """

    name = "pareto_nbd"
    param_names = ("r", "alpha", "s", "beta")

    def _start_from(self, mx, mT):
        return np.array([0.5, 0.5 * mT / mx * 0.6, 0.5, 0.5 * mT])

    def _log_f(self, params, x, tau):
        """log of 2F1(r+s+x, b'; r+s+x+1; |alpha-beta|/(m+tau)) / (m+tau)^(r+s+x), the two halves of A_0 (note 009 eq. 19)."""
        r, alpha, s, beta = params
        rsx = r + s + x
        if alpha >= beta:
            m, b2 = alpha, s + 1.0
        else:
            m, b2 = beta, r + x
        return _log_hyp2f1_a_a1(rsx, b2, abs(alpha - beta) / (m + tau)) - rsx * np.log(m + tau)

    def _log_a0(self, params, x, tx, T):
        """log A_0 of note 009 eq. (19): the integral of the purchase density over the unobserved dropout time."""
        lf_tx = self._log_f(params, x, tx)
        lf_T = self._log_f(params, x, T)
        with np.errstate(invalid="ignore", divide="ignore"):
            return lf_tx + _log1mexp(np.minimum(lf_T - lf_tx, 0.0))

    def _loglik(self, params, data):
        """Log of note 009 eq. (22), as log-sum-exp of its two terms."""
        r, alpha, s, beta = params
        xu, xi = _factor(data, "frequency")
        Tu, Ti = _factor(data, "T")
        common = (special.gammaln(r + xu) - special.gammaln(r) + r * np.log(alpha) + s * np.log(beta)
                  + np.log(s) - np.log(r + s + xu))[xi]
        t1 = (-(r + xu))[xi] * np.log(alpha + Tu)[Ti] - s * np.log(beta + Tu)[Ti] - np.log(s) + np.log(r + s + xu)[xi]
        px1, pt1, pi1 = _pair_factor(data, "frequency", "recency")
        px2, pT2, pi2 = _pair_factor(data, "frequency", "T")
        lf_tx = self._log_f(params, px1, pt1)[pi1]
        lf_T = self._log_f(params, px2, pT2)[pi2]
        with np.errstate(invalid="ignore", divide="ignore"):
            la0 = lf_tx + _log1mexp(np.minimum(lf_T - lf_tx, 0.0))
        return common + np.logaddexp(t1, la0)

    def probability_alive(self, x, tx, T, params=None):
        """P(alive | x, t_x, T), note 009 eq. (18), in log space."""
        r, alpha, s, beta = self._p(params)
        x, tx, T = _arr(x, tx, T)
        x, tx, T = np.broadcast_arrays(x, tx, T)
        la0 = self._log_a0((r, alpha, s, beta), x, tx, T)
        lr = np.log(s) - np.log(r + s + x) + (r + x) * np.log(alpha + T) + s * np.log(beta + T) + la0
        return special.expit(-lr)

    def expected_purchases(self, t, x, tx, T, params=None):
        """E[Y(t) | x, t_x, T], note 009 eq. (25) (continuous at s = 1)."""
        return self.expected_if_alive(t, x, T, params) * self.probability_alive(x, tx, T, params)

    def expected_if_alive(self, t, x, T, params=None):
        """E[Y(t) | alive at T, x, T]: eq. (25) without its P(alive) factor."""
        r, alpha, s, beta = self._p(params)
        x, T, t = _arr(x, T, t)
        lg = np.log((beta + T) / (beta + T + t))
        growth = _expm1_ratio(s - 1, lg)  # [1 - ((beta+T)/(beta+T+t))^(s-1)] / (s-1)
        return (r + x) * (beta + T) / (alpha + T) * growth

    def unconditional_expected_purchases(self, t, params=None):
        """E[X(t)] = r beta / (alpha (s-1)) [1 - (beta/(beta+t))^(s-1)], note 009 eq. (16)."""
        r, alpha, s, beta = self._p(params)
        t = np.asarray(t, float)
        return r * beta / alpha * _expm1_ratio(s - 1, np.log(beta / (beta + t)))

    def _simulate(self, T, rng, params=None):
        r, alpha, s, beta = self._p(params)
        n = len(T)
        lam = rng.gamma(r, 1 / alpha, n)
        mu = rng.gamma(s, 1 / beta, n)
        life = rng.exponential(1 / np.maximum(mu, 1e-300))
        return rng.poisson(lam * np.minimum(life, T)).astype(float)


class GammaGamma(_Model):
    """Gamma-Gamma spend model: Fader, Hardie & Lee (2005), "RFM and CLV", JMR 42(4); Fader & Hardie (2013), note 025.

    A customer's purchase-day spends are Gamma(p, nu), nu ~ Gamma(q, v) (the
    papers call v gamma). Fitted on customers with at least one repeat purchase
    and a positive mean repeat spend (the others are counted in ``fit_info_``).
    """

    name = "gamma_gamma"
    param_names = ("p", "q", "v")
    data_columns = ("frequency", "monetary_value")

    def _prepare(self, summary):
        _require(summary, self.data_columns, "summary")
        keep = (summary["frequency"] > 0) & (summary["monetary_value"] > 0)
        self._excluded = {
            "no_repeat_purchase": int((summary["frequency"] <= 0).sum()),
            "zero_monetary_value": int(((summary["frequency"] > 0) & ~(summary["monetary_value"] > 0)).sum()),
        }
        return super()._prepare(summary[keep])

    def _check_identified(self, data, n):
        if n == 0:
            raise NotIdentifiedError(
                f"gamma_gamma: no customer has a repeat purchase with a positive spend "
                f"({self._excluded['no_repeat_purchase']:,} without repeat purchase, {self._excluded['zero_monetary_value']:,} "
                f"with zero repeat spend), so there is no spend to model")
        m = data["monetary_value"]
        if np.ptp(m) == 0:
            raise NotIdentifiedError(
                f"gamma_gamma: all {n:,.0f} repeat customers have the same mean spend ({m[0]:g}): the spread between "
                f"and within customers cannot be estimated")

    def _start(self, data):
        w = data["weight"]
        m = np.average(data["monetary_value"], weights=w)
        p, q = 2.0, 3.0
        return np.array([p, q, m * (q - 1) / p])

    def _scale_mask(self):
        return np.array([0.0, 0.0, 1.0])

    def _loglik(self, params, data):
        """Log-density of the mean spend m_x given x (note 025, eq. 3)."""
        p, q, v = params
        x, m = data["frequency"], data["monetary_value"]
        px = p * x
        return (special.gammaln(px + q) - special.gammaln(px) - special.gammaln(q) + q * np.log(v)
                + (px - 1) * np.log(m) + px * np.log(x) - (px + q) * np.log(v + m * x))

    def _loglik_grad(self, params, data):
        """Note 025 eq. (3) and its gradient in p, q, v."""
        p, q, v = params
        x, m = data["frequency"], data["monetary_value"]
        px = p * x
        lvmx = np.log(v + m * x)
        ll = (special.gammaln(px + q) - special.gammaln(px) - special.gammaln(q) + q * np.log(v)
              + (px - 1) * np.log(m) + px * np.log(x) - (px + q) * lvmx)
        dpq = special.digamma(px + q)
        g_p = x * (dpq - special.digamma(px) + np.log(m) + np.log(x) - lvmx)
        g_q = dpq - special.digamma(q) + np.log(v) - lvmx
        g_v = q / v - (px + q) / (v + m * x)
        return ll, np.vstack([g_p, g_q, g_v])

    def fit(self, summary):
        super().fit(summary)
        self.fit_info_["excluded"] = dict(self._excluded)
        if self._excluded["zero_monetary_value"]:
            self.fit_info_["notes"].append(
                f"{self._excluded['zero_monetary_value']:,} repeat customers with a mean repeat spend of 0 were left out of the fit")
        return self

    def expected_average_value(self, frequency, monetary_value, params=None):
        """E(M | p, q, v, m_x, x) = (p (v + x m_x)) / (p x + q - 1), note 025 eq. (5); the population mean p v/(q-1) when x = 0."""
        p, q, v = self._p(params)
        x, m = _arr(frequency, monetary_value)
        m = np.where(x > 0, m, 0.0)
        return p * (v + x * m) / (p * x + q - 1)

    def population_mean(self, params=None):
        """E(M) = p v / (q - 1) (infinite when q <= 1)."""
        p, q, v = self._p(params)
        return p * v / (q - 1) if q > 1 else float("inf")


class BGBB(_Model):
    """BG/BB for discrete transaction opportunities: Fader, Hardie & Shang (2010), Marketing Science 29(6).

    Summary columns: frequency (x, transactions in n opportunities after the
    first), recency (t_x, the opportunity of the last one, 0 without any),
    n_periods (n), optional weight (customers with that row).
    """

    name = "bgbb"
    param_names = ("alpha", "beta", "gamma", "delta")
    data_columns = ("frequency", "recency", "n_periods")

    def _validate_rows(self, data):
        x, tx, n = data["frequency"], data["recency"], data["n_periods"]
        bad = (x < 0) | (x > tx) | (tx > n) | (x != np.round(x)) | (n != np.round(n)) | ((x == 0) & (tx > 0)) | ((x > 0) & (tx < 1))
        if bad.any():
            ex = ", ".join(f"(x {a:g}, t_x {b:g}, n {c:g})" for a, b, c in zip(x[bad][:3], tx[bad][:3], n[bad][:3]))
            raise ClvError(f"summary: {int(data['weight'][bad].sum()):,} customers have an impossible frequency/recency/n_periods "
                           f"for BG/BB: whole numbers with frequency <= recency <= n_periods (e.g. {ex})")

    def _check_identified(self, data, n):
        if not (data["frequency"] > 0).any():
            raise NotIdentifiedError(f"bgbb: none of the {n:,.0f} customers transacted after the first opportunity "
                                     f"(every frequency is 0): the model is not identified")

    def _start(self, data):
        return np.array([1.0, 1.0, 1.0, 1.0])

    def _scale_mask(self):
        return np.array([1.0, 1.0, 0.0, 0.0])

    def _loglik(self, params, data):
        """Log of eq. (5) of Fader, Hardie & Shang (2010): alive through n, or dead after t_x + i, i = 0 .. n - t_x - 1."""
        al, be, ga, de = params
        x, tx, n = data["frequency"], data["recency"], data["n_periods"]
        base = -special.betaln(al, be) - special.betaln(ga, de)
        terms = [special.betaln(al + x, be + n - x) + special.betaln(ga, de + n)]
        for i in range(int(np.max(n - tx)) if len(n) else 0):
            ok = i <= n - tx - 1
            terms.append(np.where(ok, special.betaln(al + x, be + tx - x + i) + special.betaln(ga + 1, de + tx + i), -np.inf))
        return base + special.logsumexp(np.vstack(terms), axis=0)

    def probability_alive(self, x, tx, n, m_periods=1, params=None):
        """P(alive at opportunity n + m | x, t_x, n), Fader, Hardie & Shang (2010) eq. (11) (m = 1: the next opportunity)."""
        p = self._p(params)
        x, tx, n = _arr(x, tx, n)
        x, tx, n = np.broadcast_arrays(x, tx, n)
        al, be, ga, de = p
        ll = self._loglik(p, {"frequency": x, "recency": tx, "n_periods": n})
        num = special.betaln(al + x, be + n - x) - special.betaln(al, be) + special.betaln(ga, de + n + m_periods) - special.betaln(ga, de)
        return np.exp(num - ll)

    def expected_purchases(self, t, x, tx, n, params=None):
        """E[X(n, n + t) | x, t_x, n], Fader, Hardie & Shang (2010) eq. (13)."""
        p = self._p(params)
        al, be, ga, de = p
        x, tx, n, t = _arr(x, tx, n, t)
        x, tx, n, t = np.broadcast_arrays(x, tx, n, t)
        ll = self._loglik(p, {"frequency": x, "recency": tx, "n_periods": n})
        lead = special.betaln(al + x + 1, be + n - x) - special.betaln(al, be) + special.gammaln(ga + de) - special.gammaln(1 + de)
        g1 = special.gammaln(1 + de + n) - special.gammaln(ga + de + n)
        g2 = special.gammaln(1 + de + n + t) - special.gammaln(ga + de + n + t)
        # delta / (gamma - 1) (exp(g1) - exp(g2)); its limit at gamma = 1 is delta (digamma difference)
        if abs(ga - 1) > 1e-8:
            span = (np.exp(g1) - np.exp(g2)) / (ga - 1)
        else:
            span = np.exp(g1) * (special.digamma(1 + de + n + t) - special.digamma(1 + de + n))
        return np.exp(lead - ll) * de * span

    def unconditional_expected_purchases(self, n, params=None):
        """E[X(n)] = alpha/(alpha+beta) delta/(gamma-1) [1 - Gamma(gamma+delta)/Gamma(gamma+delta+n) Gamma(1+delta+n)/Gamma(1+delta)], eq. (7)."""
        al, be, ga, de = self._p(params)
        n = np.asarray(n, float)
        g = special.gammaln(ga + de) - special.gammaln(ga + de + n) + special.gammaln(1 + de + n) - special.gammaln(1 + de)
        return al / (al + be) * de / (ga - 1) * (1 - np.exp(g))


class SBG(_Model):
    """Shifted-beta-geometric contract duration: Fader & Hardie (2007), "How to project customer retention", JIM 21(1).

    Each customer renews at the end of each period with probability 1 - theta,
    theta ~ Beta(alpha, beta). Fitted on ``active`` counts, the customers still
    active at the start of period 0, 1, ..., n (``active[0]`` is the cohort).
    """

    name = "sbg"
    param_names = ("alpha", "beta")
    data_columns = ("active",)

    def _prepare(self, counts):
        c = np.asarray(counts, float)
        return {"active": c, "weight": np.ones(1)}

    def _validate_rows(self, data):
        c = data["active"]
        if c.ndim != 1 or len(c) < 2:
            raise NotIdentifiedError(f"sbg: need customers active at the start of at least two periods (period 0 first), got {list(c)}")
        if not np.all(np.isfinite(c)) or (c < 0).any() or (np.diff(c) > 0).any() or c[0] <= 0:
            bad = [int(i) for i in np.flatnonzero(np.r_[False, np.diff(c) > 0])[:3]]
            raise ClvError(f"sbg: active counts must be non-negative and non-increasing from a positive period 0, got {list(c)}"
                           + (f" (increases at period(s) {bad})" if bad else ""))

    def _check_identified(self, data, n):
        c = data["active"]
        if c[-1] == c[0]:
            raise NotIdentifiedError(f"sbg: no customer churned in {len(c) - 1} period(s) ({c[0]:,.0f} active throughout): "
                                     f"the churn probability's distribution cannot be estimated")
        if len(c) < 3:
            raise NotIdentifiedError(f"sbg: one period of churn ({c[0]:,.0f} -> {c[1]:,.0f}) identifies the mean churn "
                                     f"probability only, not alpha and beta; need at least two periods")

    def _start(self, data):
        return np.array([1.0, 1.0])

    def _scale_mask(self):
        return np.array([1.0, 1.0])

    def _loglik(self, params, data):
        """Fader & Hardie (2007) eq. (7): sum over periods of the churners' log P(T = t), plus survivors' log S(n)."""
        al, be = params
        c = data["active"]
        n = len(c) - 1
        t = np.arange(1, n + 1)
        lp = special.betaln(al + 1, be + t - 1) - special.betaln(al, be)
        ls = special.betaln(al, be + n) - special.betaln(al, be)
        lost = c[:-1] - c[1:]
        return np.array([float(np.dot(lost, lp) + c[-1] * ls)])

    def _loglik_grad(self, params, data):
        """Eq. (7) of Fader & Hardie (2007) and its gradient in (alpha, beta), for L-BFGS-B.

        With P(T = t) = B(alpha + 1, beta + t - 1) / B(alpha, beta) (eq. 2) and
        S(n) = B(alpha, beta + n) / B(alpha, beta) (eq. 3), and
        d ln B(p, q) / dp = psi(p) - psi(p + q) (psi: digamma), the churners of
        period t add lost_t [psi(alpha + 1) - psi(alpha + beta + t)] to
        d/dalpha and lost_t [psi(beta + t - 1) - psi(alpha + beta + t)] to
        d/dbeta; the survivors of period n add c_n [psi(alpha) - psi(alpha + beta + n)]
        and c_n [psi(beta + n) - psi(alpha + beta + n)]; every customer
        (c_0 = all churners + survivors) subtracts d ln B(alpha, beta).
        """
        al, be = params
        c = data["active"]
        n = len(c) - 1
        t = np.arange(1, n + 1)
        lost = c[:-1] - c[1:]
        dg = special.digamma
        dg_abt = dg(al + be + t)
        dg_abn, dg_ab = dg(al + be + n), dg(al + be)
        g_al = (float((lost * (dg(al + 1) - dg_abt)).sum()) + c[-1] * (dg(al) - dg_abn) - c[0] * (dg(al) - dg_ab))
        g_be = (float((lost * (dg(be + t - 1) - dg_abt)).sum()) + c[-1] * (dg(be + n) - dg_abn) - c[0] * (dg(be) - dg_ab))
        return self._loglik(params, data), np.array([[g_al], [g_be]])

    #: alpha + beta of the boundary estimate reported when churn looks homogeneous (the sBG's geometric limit).
    BOUNDARY_SCALE = 1e8

    @_blas_single_threaded
    def fit(self, counts):
        """Maximum likelihood as ``_Model.fit``; at the geometric boundary, the boundary estimate, said as such.

        When every customer seems to share one churn probability, the
        likelihood keeps rising as alpha and beta grow with alpha / (alpha +
        beta) fixed, and no finite optimum exists (young cohorts often look
        like this). Then the estimate is that limit: the geometric model's
        churn p = churners / customer-periods at risk, reported as alpha =
        p x 1e8, beta = (1 - p) x 1e8, ``fit_info_["converged"]`` False,
        ``boundary`` ["alpha", "beta"] and a note; survival, retention and DERL
        are then the geometric model's. The optimiser then either fails
        (``FitError``) or stops somewhere on that ridge, where the gradient is
        below its tolerance: with a likelihood still below the limit's (to 1e-9
        relative), or with alpha and beta both above 1e5 (``_Model.fit``'s
        boundary), where the likelihood is flat to a few 1e-7 relative whether
        or not it still rises. Each of these is taken as the limit when the
        limit's likelihood is at least that of a grid of interior points.
        """
        c = np.asarray(counts, float)
        failure = None
        try:
            super().fit(counts)
        except FitError as exc:
            failure = exc
        data = self._prepare(counts)
        lost, exposure = c[0] - c[-1], c[:-1].sum()
        p = lost / exposure
        k = self.BOUNDARY_SCALE
        limit = np.array([p * k, (1 - p) * k])
        with np.errstate(all="ignore"):
            ll_limit = float(self._loglik(limit, data)[0])
        fit_below = (failure is not None or ll_limit >= self.log_likelihood_ - 1e-9 * abs(self.log_likelihood_)
                     or (self.fit_info_["boundary"] == ["alpha", "beta"] and bool((self.params_ > 1e5).all())))
        if fit_below:
            grid = [np.array([a, b]) for a in (0.1, 0.5, 1, 2, 5, 20, 100) for b in (0.5, 1, 5, 20, 100, 1000)]
            with np.errstate(all="ignore"):
                ll_inside = max(float(self._loglik(g, data)[0]) for g in grid)
            if not ll_limit >= ll_inside - 1e-9:
                if failure is not None:
                    raise failure
                fit_below = False
        if fit_below:
            self.params_ = pd.Series(limit, index=list(self.param_names), name=self.name)
            self.log_likelihood_ = ll_limit
            self.aic_ = 2 * len(self.param_names) - 2 * ll_limit
            self.bic_ = len(self.param_names) * math.log(max(c[0], 1)) - 2 * ll_limit
            self.cov_ = np.full((2, 2), np.nan)
            self.fit_info_ = {
                "converged": False, "method": "geometric limit", "restarts": 0, "penalizer": 0.0, "attempts": [],
                "n_rows": 1, "n_customers": float(c[0]), "boundary": ["alpha", "beta"],
                "notes": [f"boundary estimate: churn looks the same for every customer (likelihood rises as alpha, beta -> infinity), "
                          f"so the sBG reduces to a geometric model with churn {p:.4f} per period ({lost:,.0f} churners in "
                          f"{exposure:,.0f} customer-periods); only the ratio alpha / (alpha + beta) is identified"],
                "seconds": 0.0,
            }
        self.n_customers_ = float(c[0])
        self.active_ = c
        return self

    def survival(self, t, params=None):
        """S(t) = B(alpha, beta + t) / B(alpha, beta), the share of a cohort still active after t periods (eq. 3)."""
        al, be = self._p(params)
        t = np.asarray(t, float)
        return np.exp(special.betaln(al, be + t) - special.betaln(al, be))

    def retention(self, t, params=None):
        """r_t = (beta + t - 1) / (alpha + beta + t - 1), the retention rate from period t - 1 to t (eq. 4)."""
        al, be = self._p(params)
        t = np.asarray(t, float)
        return (be + t - 1) / (al + be + t - 1)

    def derl(self, discount_rate: float, *, renewals: int = 0, params=None):
        """Discounted expected residual lifetime (in payments), Fader & Hardie (2010) eq. (6).

        DERL(d | alpha, beta, n - 1 renewals) = (beta + n - 1)/(alpha + beta + n - 1)
        2F1(1, beta + n; alpha + beta + n; 1/(1 + d)), for a customer who has made
        ``renewals`` = n - 1 renewals, just before the n-th renewal decision
        (each later payment discounted at ``discount_rate`` per period).
        """
        al, be = self._p(params)
        n = renewals + 1
        if al + be >= self.BOUNDARY_SCALE / 10:  # the geometric limit (hyp2f1 overflows there): sum of ((1-p)/(1+d))^k
            keep = be / (al + be)
            return keep / (1.0 - keep / (1.0 + discount_rate))
        return (be + n - 1) / (al + be + n - 1) * special.hyp2f1(1.0, be + n, al + be + n, 1.0 / (1.0 + discount_rate))


MODELS = {"bgnbd": BGNBD, "pareto_nbd": ParetoNBD, "mbgnbd": MBGNBD, "gamma_gamma": GammaGamma, "bgbb": BGBB}


# ============================================================================ fitting entry points


def fit_model(summary: pd.DataFrame, model: str, **options) -> _Model:
    """Fit ``model`` (one of ``MODELS``) on a per-customer summary; returns the fitted model.

    * "bgnbd", "pareto_nbd", "mbgnbd": columns frequency, recency, T;
    * "gamma_gamma": frequency, monetary_value (customers with frequency > 0 and
      a positive monetary value are used);
    * "bgbb": frequency, recency, n_periods (discrete opportunities).

    A ``weight`` column, where present, counts the customers with that row.
    Options: ``penalizer`` (ridge on the log-parameters, default 0),
    ``initial_params`` (dict or sequence in ``param_names`` order),
    ``max_restarts`` (default 6), ``compress`` (default True: fit the
    distinct rows with weights). Fitted values: ``params_`` (named as in the
    papers), ``log_likelihood_``, ``aic_``, ``cov_`` (log-parameter
    covariance), ``fit_info_`` (converged, restarts, penalizer, notes, ...).
    """
    if model not in MODELS:
        raise ClvError(f"model must be one of {sorted(MODELS)}, got {model!r}")
    allowed = {"penalizer", "initial_params", "max_restarts", "compress"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ClvError(f"fit_model: unknown option(s) {unknown}; options are {sorted(allowed)}")
    if not isinstance(summary, pd.DataFrame):
        raise ClvError(f"summary must be a pandas DataFrame (from rfm_summary), got {type(summary).__name__}")
    if len(summary) == 0:
        raise NotIdentifiedError(f"{model}: the summary has no customer")
    fitted = MODELS[model](**options).fit(summary)
    if model in ("bgnbd", "pareto_nbd", "mbgnbd"):
        _check_predictions_finite(fitted, summary)
    return fitted


def _check_predictions_finite(model, summary: pd.DataFrame) -> None:
    """A fit whose estimate sits where the model's predictions overflow (MBG/NBD with a, b ~ 1e5..1e8) is a FitError, not NaNs."""
    uniq = _continuous_columns(model, summary)
    if len(uniq[0]) > 2000:  # overflow comes with the extremes: check the 1,000 lowest and highest frequencies (cheap at 1M)
        order = np.argsort(uniq[0], kind="stable")
        pick = np.concatenate([order[:1000], order[-1000:]])
        uniq = [u[pick] for u in uniq]
    with np.errstate(all="ignore"):
        values = np.concatenate([np.ravel(model.probability_alive(*uniq)),
                                 np.ravel(model.expected_purchases(float(np.max(uniq[-1])), *uniq))])
    bad = ~np.isfinite(values)
    if bad.any():
        params = ", ".join(f"{k}={v:.4g}" for k, v in model.params_.items())
        raise FitError(f"{model.name}: the estimate is at a boundary ({params}) where its predictions are not finite; "
                       "use another model (bgnbd, pareto_nbd)")


def fit_sbg(active_counts, **options) -> SBG:
    """Fit the shifted-beta-geometric model (Fader & Hardie 2007) on customers active at the start of each period.

    ``active_counts``: period 0 first (the cohort size), then the customers
    still active at the start of period 1, 2, ... . Returns an ``SBG`` with
    ``params_`` alpha, beta and ``survival``, ``retention``, ``derl``.
    """
    return SBG(**options).fit(list(np.asarray(active_counts, float)))


# ============================================================================ subscriptions


#: Days in one subscription period.
PERIOD_DAYS = {"M": DAYS_PER_MONTH, "Q": 3 * DAYS_PER_MONTH, "Y": 365.25, "W": 7.0}


def subscription_cohort_counts(subscriptions, *, observation_end, period: str = "M", cohort: str = "M",
                               exclude_plans=("trial",)) -> pd.DataFrame:
    """Customers of each acquisition cohort still active at the start of each period since their start.

    Rows whose plan is in ``exclude_plans`` are left out (by default free
    trials: a trial is not a paid subscription, and one that converts starts
    its own paid row); their count is in ``attrs["excluded_rows"]``.

    subscriptions needs customer_id, start_date; end_date (empty while active)
    is optional. Rows are cohorts (start_date truncated to ``cohort``: "M"
    month, "Q" quarter, "Y" year), columns the period since start (0, 1, ...;
    ``period`` long: "W", "M" = 365.25/12 days, "Q", "Y"). A customer is active at
    the start of period k when the subscription ended after k periods
    (strictly: ending exactly then is a churn at that renewal), or is still
    running at ``observation_end``. A cohort's row stops at the last period that every one of its
    customers could have completed by ``observation_end`` (later cells are NaN).
    Computed with Ibis.
    """
    if period not in PERIOD_DAYS:
        raise ClvError(f"period must be one of {sorted(PERIOD_DAYS)}, got {period!r}")
    if cohort not in ("M", "Q", "Y"):
        raise ClvError(f"cohort must be one of ['M', 'Q', 'Y'], got {cohort!r}")
    obs = _day(observation_end, "observation_end")
    t = engine.as_table(subscriptions)
    _require(t, ["customer_id", "start_date"], "subscriptions")
    excluded = 0
    if exclude_plans and "plan" in t.columns:
        dropped = t.plan.isin(list(exclude_plans)).fill_null(False)
        excluded = int(engine.execute(t.aggregate(n=dropped.sum())).iloc[0, 0] or 0)
        t = t.filter(~dropped)
    obs_lit = ibis.literal(obs.date())
    start = t.start_date.cast("timestamp").date()
    if "end_date" in t.columns:
        end = t.end_date.cast("timestamp").date()
        ended = end.notnull() & (end <= obs_lit)
        stop = ibis.ifelse(ended, end, obs_lit)
    else:
        ended = ibis.literal(False)
        stop = obs_lit
    base = t.filter(start <= obs_lit).select(cohort=start.truncate(cohort), start=start, tenure_days=stop.delta(start, unit="day"),
                                             ended=ended)
    counts = base.group_by(["cohort", "tenure_days", "ended"]).aggregate(n=base.count())
    spans = base.group_by("cohort").aggregate(last_start=base.start.max())
    df = engine.execute(counts)
    sp = engine.execute(spans).set_index("cohort")
    if df.empty:
        raise ClvError(f"subscriptions: no subscription starts on or before {obs.date()}")
    plen = PERIOD_DAYS[period]
    # whole periods a subscriber was active at the start of: an ended one until the period starting before its end
    # (strictly), a running one until the last period start on or before observation_end
    ten = df["tenure_days"].clip(lower=0).to_numpy(float) / plen
    df["periods"] = np.where(df["ended"].to_numpy(bool), np.ceil(ten - 1e-9) - 1, np.floor(ten + 1e-9)).clip(0).astype(int)
    rows = {}
    for coh, g in df.groupby("cohort"):
        horizon = int(np.floor(((obs - pd.Timestamp(sp.loc[coh, "last_start"])).days) / plen + 1e-9))
        comp = g.groupby("periods")["n"].sum()
        total = comp.sum()
        active = [total - comp[comp.index < k].sum() for k in range(horizon + 1)]
        label = str(pd.Period(pd.Timestamp(coh), freq={"M": "M", "Q": "Q", "Y": "Y"}[cohort]))
        rows[label] = pd.Series(active, index=range(horizon + 1), dtype=float)
    out = pd.DataFrame(rows).T.sort_index()
    out.index.name = "cohort"
    out.columns.name = f"periods since start ({period})"
    out.attrs["excluded_rows"] = excluded
    return out


def fit_sbg_cohorts(counts: pd.DataFrame, *, min_customers: int = 20, min_periods: int = 2) -> dict[str, SBG]:
    """Fit an sBG per cohort row of ``subscription_cohort_counts``; cohorts too small or too young are skipped.

    Returns an ``SBGCohorts``: a dict {cohort: fitted SBG} whose ``skipped``
    attribute says which cohorts were left out and why (too small, too young,
    not identified, or no converged fit).
    """
    out = SBGCohorts()
    for cohort, row in counts.iterrows():
        c = row.dropna().to_numpy(float)
        if len(c) == 0 or c[0] < min_customers:
            out.skipped[cohort] = f"{0 if len(c) == 0 else int(c[0])} customers (< {min_customers})"
            continue
        if len(c) - 1 < min_periods:
            out.skipped[cohort] = f"{len(c) - 1} whole period(s) observed (< {min_periods})"
            continue
        try:
            out[cohort] = fit_sbg(c)
        except (NotIdentifiedError, FitError) as exc:  # one cohort's failure is reported, the others still fit
            out.skipped[cohort] = str(exc).split(" (")[0]
    return out


class SBGCohorts(dict):
    """{cohort: fitted SBG}, with ``skipped`` = {cohort: reason}."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.skipped: dict[str, str] = {}


def sbg_cohort_table(models: dict, *, discount_rate: float = 0.1, horizon: int = 12, payment: pd.Series | None = None) -> pd.DataFrame:
    """Per cohort: customers, periods observed, alpha, beta, mean churn, projected survival at ``horizon``, DERL.

    DERL (Fader & Hardie 2010) is the discounted expected number of future
    payments of a customer about to make the first renewal decision
    (``discount_rate`` per period); with ``payment`` (per cohort, e.g. mean MRR
    from ``cohort_mean_payment``), ``residual_value`` = DERL x payment.
    """
    rows = []
    for cohort, m in models.items():
        al, be = m.params_["alpha"], m.params_["beta"]
        rows.append({
            "cohort": cohort, "customers": int(m.active_[0]), "periods_observed": len(m.active_) - 1,
            "alpha": al, "beta": be, "mean_churn": al / (al + be),
            f"survival_{horizon}": float(m.survival(horizon)),
            "derl": float(m.derl(discount_rate, renewals=0)),
            "converged": m.fit_info_["converged"],
        })
        if payment is not None:
            rows[-1]["payment"] = float(payment.get(cohort, np.nan))
            rows[-1]["residual_value"] = rows[-1]["derl"] * rows[-1]["payment"]
    return pd.DataFrame(rows).set_index("cohort") if rows else pd.DataFrame()


# ============================================================================ predictions


def _continuous_columns(model, summary):
    cols = list(model.data_columns)
    _require(summary, cols, "summary")
    return [summary[c].to_numpy(float) for c in cols]


def _distinct(arrays):
    """Distinct rows of the stacked arrays and the inverse index (so predictions are computed once per distinct row)."""
    # ``np.unique(np.column_stack(arrays), axis=0, return_inverse=True)``, in the same (lexicographic) order, without
    # its sort of structured rows (1.2 s at a million customers): each column's values are numbered in sorted order,
    # the numbers combined into one integer key per row, and the keys (small integers) sorted.
    dtype = np.result_type(*arrays)  # the stacked array's type
    key = None
    for values in arrays:
        codes, uniques = pd.factorize(np.asarray(values, dtype=dtype), sort=True, use_na_sentinel=False)
        if key is None:
            key = codes.astype(np.int64)
        else:  # renumbered 0..k-1 in order, so that the next product stays below rows squared
            key = np.unique(key * len(uniques) + codes, return_inverse=True)[1].ravel()
    n_distinct = int(key.max()) + 1 if len(key) else 0
    first = np.empty(n_distinct, dtype=np.int64)
    first[key[::-1]] = np.arange(len(key) - 1, -1, -1)  # each distinct row's first occurrence
    return [np.asarray(values, dtype=dtype)[first] for values in arrays], key


def _rows(rows, n: int) -> np.ndarray:
    """``np.vstack(list(rows))`` for ``n`` 1-D rows of one length, written into one array as they come: a list of 200
    draws of a million customers and its stacked copy would hold the draws twice (3 GB at 1M customers)."""
    out = None
    for i, row in enumerate(rows):
        row = np.asarray(row)
        if out is None:
            out = np.empty((n, len(row)), dtype=row.dtype)
        out[i] = row
    if out is None or i != n - 1:
        raise ValueError(f"expected {n} rows to stack, got {0 if out is None else i + 1}")
    return out


def _quantiles(draws: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """The ``level`` percentile interval of each column of ``draws`` (draws x rows), ignoring NaN draws.

    The numbers of ``np.nanquantile(draws, ..., axis=0)`` (to the last bit), which loops over
    columns in Python (4 s for 200 draws x 17,000 customers); here only the
    columns that hold a NaN take that path.
    """
    q = [0.5 - level / 2, 0.5 + level / 2]
    nan_cols = np.isnan(draws).any(axis=0)
    if not nan_cols.any():
        lo, hi = np.quantile(draws, q, axis=0)
        return lo, hi
    lo, hi = np.empty(draws.shape[1]), np.empty(draws.shape[1])
    lo[~nan_cols], hi[~nan_cols] = np.quantile(draws[:, ~nan_cols], q, axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a column of NaN draws only: NaN, as nanquantile gives
        lo[nan_cols], hi[nan_cols] = np.nanquantile(draws[:, nan_cols], q, axis=0)
    return lo, hi


def _interval_frame(index, name, point, draws, level, inverse=None):
    """point (and the draws' percentile interval) per row; ``inverse`` maps distinct rows back to customers."""
    take = (lambda v: v) if inverse is None else (lambda v: v[inverse])
    out = pd.DataFrame({name: take(point)}, index=index)
    if draws is not None and draws.shape[0] > 1 and level:
        lo, hi = _quantiles(draws, level)
        out[f"{name}_lower"] = take(lo)
        out[f"{name}_upper"] = take(hi)
    return out


@_blas_single_threaded
def predict_customers(model, summary: pd.DataFrame, *, horizon: float, interval: float | None = 0.9,
                      n_draws: int = 200, seed: int = 0) -> pd.DataFrame:
    """Per customer: probability alive and expected purchases over ``horizon``, each with an interval.

    ``horizon`` is in the summary's time unit (weeks for ``time_unit="W"``;
    periods for BG/BB). Intervals (``*_lower``, ``*_upper``, level
    ``interval``) reflect parameter uncertainty only: parameter vectors are
    drawn from the normal approximation of the likelihood on the log scale
    (covariance = inverse Hessian, ``model.cov_``) and the prediction is
    recomputed for each draw (``n_draws``, fixed ``seed``). They do not include
    the customer's own Poisson randomness. ``interval=None`` skips them.
    """
    model._check_fitted()
    if isinstance(model, GammaGamma) or isinstance(model, SBG):
        raise ClvError(f"predict_customers needs a transaction model (bgnbd, pareto_nbd, mbgnbd, bgbb), got {model.name}")
    arrays = _continuous_columns(model, summary)
    uniq, inv = _distinct(arrays)
    # E[Y(t) | x, t_x, T] = E[Y(t) | alive, x, T] x P(alive | x, t_x, T) for the continuous models (``expected_purchases``
    # is that product): the costly 2F1 factor once per distinct (x, T), and P(alive) computed once, not twice
    split = hasattr(model, "expected_if_alive")
    if split:
        (x_t, T_t), inv_xt = _distinct([uniq[0], uniq[2]])

    def expected(params, alive):
        if split:
            return model.expected_if_alive(horizon, x_t, T_t, params=params)[inv_xt] * alive
        return model.expected_purchases(horizon, *uniq, params=params)

    point_alive = model.probability_alive(*uniq)
    with np.errstate(all="ignore"):
        point_exp = expected(None, point_alive)
    bad = ~(np.isfinite(point_alive) & np.isfinite(point_exp))
    if bad.any():  # e.g. MBG/NBD at a boundary (a, b ~ 1e5..1e8): the hypergeometric term overflows
        params = ", ".join(f"{k}={v:.4g}" for k, v in model.params_.items())
        raise FitError(f"{model.name}: the estimate is at a boundary ({params}) where its predictions are not finite for "
                       f"{int(bad.sum()):,} of {len(bad):,} distinct customer histories; use another model (bgnbd, pareto_nbd)")
    da = de = None
    if interval:
        draws = model.param_draws(n_draws, seed=seed)
        with np.errstate(all="ignore"):
            da = _rows((model.probability_alive(*uniq, params=p) for p in draws), len(draws))
            de = _rows((expected(p, alive) for p, alive in zip(draws, da)), len(draws))
    out = _interval_frame(summary.index, "p_alive", point_alive, da, interval, inv)
    out = out.join(_interval_frame(summary.index, "expected_purchases", point_exp, de, interval, inv))
    out.attrs.update(horizon=horizon, interval=interval, interval_method="parameter uncertainty: inverse-Hessian normal draws on the log scale")
    return out


@_blas_single_threaded
def expected_average_value(model: GammaGamma, summary: pd.DataFrame, *, interval: float | None = 0.9,
                           n_draws: int = 200, seed: int = 0) -> pd.DataFrame:
    """Per customer: expected spend per future purchase day (Gamma-Gamma, note 025 eq. 5), with an interval.

    A customer without repeat purchase gets the population mean p v / (q - 1).
    Interval: parameter uncertainty from the inverse Hessian, as in ``predict_customers``.
    """
    if not isinstance(model, GammaGamma):
        raise ClvError(f"expected_average_value needs a gamma_gamma model, got {getattr(model, 'name', type(model).__name__)}")
    model._check_fitted()
    _require(summary, ["frequency", "monetary_value"], "summary")
    x, m = summary["frequency"].to_numpy(float), summary["monetary_value"].to_numpy(float)
    point = model.expected_average_value(x, m)
    d = None
    if interval:
        draws = model.param_draws(n_draws, seed=seed + 1)
        d = _rows((model.expected_average_value(x, m, params=p) for p in draws), len(draws))
    return _interval_frame(summary.index, "expected_value", point, d, interval)


@_blas_single_threaded
def customer_value(model, value_model: GammaGamma, summary: pd.DataFrame, *, horizon_months: int = 12,
                   discount_rate: float = 0.10, interval: float | None = 0.9, n_draws: int = 200, seed: int = 0) -> pd.DataFrame:
    """Per customer: discounted expected value over ``horizon_months`` (CLV), with an interval.

    CLV = sum over months k = 1..horizon of E[purchases in month k] x E[spend
    per purchase] / (1 + d_m)^k, where d_m = (1 + discount_rate)^(1/12) - 1
    (``discount_rate`` is annual), a month is 365.25/12 days, the purchases
    come from ``model`` (conditional expectations, differenced month by month)
    and the spend from the Gamma-Gamma ``value_model`` (the same construction
    as lifetimes' ``customer_lifetime_value``). The summary's ``time_unit``
    (``summary.attrs``, default days) converts months to model time.
    Interval: parameter uncertainty of both models (independent inverse-Hessian
    draws), percentiles of the recomputed CLV.
    """
    model._check_fitted()
    unit = TIME_UNITS.get(summary.attrs.get("time_unit", "D"), 1.0)
    month = DAYS_PER_MONTH / unit
    dm = (1 + discount_rate) ** (1 / 12) - 1
    arrays = _continuous_columns(model, summary)
    uniq, inv = _distinct(arrays)
    ev = expected_average_value(value_model, summary, interval=None)  # the point only: the draws below recompute it per draw
    # E[Y(t) | x, t_x, T] = P(alive | x, t_x, T) x E[Y(t) | alive, x, T] for the continuous models, so the month-by-month
    # part (the costly 2F1 terms) is computed once per distinct (x, T), far fewer than distinct (x, t_x, T) rows.
    split = hasattr(model, "expected_if_alive")
    if split:
        (x_t, T_t), inv_xt = _distinct([uniq[0], uniq[2]])

    months = np.arange(1, horizon_months + 1)
    month_ends = (months * month)[:, None]  # k * month, as the loop over k computed them
    last_month = {}

    def if_alive(params):
        """sum over months k of (E[Y(k month) | alive, x, T] - E[Y((k-1) month) | ...]) / (1 + d_m)^k, per distinct (x, T)."""
        total = np.zeros(len(x_t))
        prev = np.zeros(len(x_t))
        cum = model.expected_if_alive(month_ends, x_t, T_t, params=params)  # months x distinct (x, T), one call
        for k, cur in zip(months, cum):  # summed month after month, in the same order as before
            total += (cur - prev) / (1 + dm) ** k
            prev = cur
        if params is None and horizon_months > 0:
            last_month["if_alive"] = prev  # E[Y(horizon) | alive] at the estimate, for the column below
        return total

    def discounted_purchases(params, cols=None, alive_part=None):
        """Discounted expected purchases of the rows ``cols`` (the model's data columns; default: the distinct rows);
        ``alive_part``: their ``if_alive`` values, when already computed."""
        if cols is None:
            cols = uniq
        if split:
            if alive_part is None:
                alive_part = if_alive(params)[inv_xt]
            alive = model.probability_alive(*cols, params=params)
            if params is None and "if_alive" in last_month:
                last_month["expected"] = last_month.pop("if_alive")[inv_xt] * alive
            return alive * alive_part
        total = np.zeros(len(cols[0]))
        prev = np.zeros(len(cols[0]))
        for k in range(1, horizon_months + 1):
            cur = model.expected_purchases(k * month, *cols, params=params)
            total += (cur - prev) / (1 + dm) ** k
            prev = cur
        return total

    point = discounted_purchases(None)[inv] * ev["expected_value"].to_numpy()
    out = pd.DataFrame({"clv": point}, index=summary.index)
    if interval:
        tdraws = model.param_draws(n_draws, seed=seed)
        vdraws = value_model.param_draws(n_draws, seed=seed + 1)
        n = min(len(tdraws), len(vdraws))
        if n > 1:
            out["clv_lower"], out["clv_upper"] = _clv_draws_interval(
                discounted_purchases, if_alive if split else None, inv_xt if split else None, uniq, inv, value_model,
                summary, tdraws[:n], vdraws[:n], interval)
    if "expected" in last_month:  # expected_purchases(horizon_months * month, ...): the last month's E[Y(t)], computed above
        out["expected_purchases"] = last_month["expected"][inv]
    else:
        out["expected_purchases"] = model.expected_purchases(horizon_months * month, *uniq)[inv]
    out["expected_value"] = ev["expected_value"].to_numpy()
    out.attrs.update(horizon_months=horizon_months, discount_rate=discount_rate)
    return out


#: ``customer_value``'s interval works on this many customers at a time (memory: draws x chunk values).
_INTERVAL_CHUNK = 50_000
#: ... and computes a chunk's distinct (x, t_x, T) rows once (then gathers) when they are fewer than this share of it.
_GATHER_BELOW = 0.8


def _clv_draws_interval(discounted_purchases, if_alive, inv_xt, uniq, inv, value_model, summary, tdraws, vdraws,
                        level) -> tuple[np.ndarray, np.ndarray]:
    """``customer_value``'s interval: the ``level`` percentiles of each customer's CLV over the parameter draws.

    Draw i recomputes the CLV with the purchase model's ``tdraws[i]`` and the
    Gamma-Gamma ``vdraws[i]``. The costly month-by-month part that depends on
    (x, T) only (``if_alive``, the 2F1 terms) is computed once per distinct
    (x, T) and draw; the rest in chunks of customers, once per
    distinct (x, t_x, T) row of the chunk (or per customer when nearly all
    are distinct, as at a million customers: no gather of draws x customers).
    Memory stays at draws x ``_INTERVAL_CHUNK`` values (a draws x distinct
    rows matrix took 1.2 GB at a million customers), and the numbers are
    those of computing every draw for every distinct row at once, to the last
    bit: the same products in the same order.
    """
    n = len(tdraws)
    per_xt = None
    if if_alive is not None:  # distinct (x, T) x draws: one row per (x, T), so a chunk gathers whole rows
        per_xt = _rows((if_alive(p) for p in tdraws), n).T.copy()
    x, m = summary["frequency"].to_numpy(float), summary["monetary_value"].to_numpy(float)
    lo, hi = np.empty(len(x)), np.empty(len(x))
    with np.errstate(all="ignore"):
        for c0 in range(0, len(x), _INTERVAL_CHUNK):
            sl = slice(c0, c0 + _INTERVAL_CHUNK)
            rows, back = np.unique(inv[sl], return_inverse=True)  # the chunk's distinct (x, t_x, T) rows
            if len(rows) >= _GATHER_BELOW * len(back):  # few repeats: computing per customer costs less than gathering
                rows, back = inv[sl], None
            cols = [u[rows] for u in uniq]
            if per_xt is not None:
                part = per_xt[inv_xt[rows]]
                disc = _rows((discounted_purchases(p, cols, part[:, i]) for i, p in enumerate(tdraws)), n)
            else:
                disc = _rows((discounted_purchases(p, cols) for p in tdraws), n)
            sims = disc if back is None else disc[:, back.ravel()]
            del disc
            sims *= _rows((value_model.expected_average_value(x[sl], m[sl], params=p) for p in vdraws), n)
            lo[sl], hi[sl] = _quantiles(sims, level)
    return lo, hi


# ============================================================================ validation and model choice


def repeat_transaction_tracking(transactions, summary: pd.DataFrame, models: dict, *, observation_end=None) -> pd.DataFrame:
    """Cumulative repeat transactions, actual and expected by each model, period by period (Fader, Hardie & Lee 2005, Figure 2).

    ``summary`` is the calibration summary (from ``rfm_summary`` with
    ``calibration_end``); its customers' first purchase days and its time unit
    define the periods (1 unit each, from the first purchase day in the data).
    Actual: repeat purchase days per period (Ibis). Expected: sum over
    customers of E[X(t - first purchase)] (each model's unconditional
    expectation), grouped by first purchase day.
    """
    cal = _day(summary.attrs["calibration_end"], "calibration_end")
    obs = _day(observation_end or summary.attrs["observation_end"], "observation_end")
    unit = TIME_UNITS[summary.attrs.get("time_unit", "D")]
    first = cal - pd.to_timedelta(np.round(summary["T"].to_numpy() * unit), unit="D")
    start = first.min()
    n_periods = int(math.ceil(((obs - start).days + 1) / unit))
    edges = np.arange(1, n_periods + 1) * unit  # days since start at each period end
    t = engine.as_table(transactions, ["customer_id", "timestamp", "amount"])
    t = t.select(customer_id=t.customer_id, day=t.timestamp.cast("timestamp").date(), amount=t.amount.cast("float64"))
    t = t.filter((t.day <= obs.date()) & (t.amount >= 0))
    days = t.select("customer_id", "day").distinct()
    firsts = days.group_by("customer_id").aggregate(first=days.day.min())
    firsts = firsts.filter(firsts.first <= cal.date())
    j = days.inner_join(firsts, "customer_id")
    rep = j.filter(j.day > j.first)
    rep = rep.group_by("day").aggregate(n=rep.count())
    actual = engine.execute(rep)
    dd = (pd.to_datetime(actual["day"]) - start).dt.days.to_numpy()
    period_idx = (np.floor(dd / unit).astype(int) + 1).clip(1, n_periods)  # period k holds days [(k-1) unit, k unit)
    per = np.bincount(period_idx, weights=actual["n"].to_numpy(float), minlength=n_periods + 1)[1:]
    out = pd.DataFrame({"period": np.arange(1, n_periods + 1), "actual": np.cumsum(per)})
    fd = pd.Series(1, index=first).groupby(level=0).sum()
    offs = (fd.index - start).days.to_numpy(float)
    age = np.clip(edges[:, None] - offs[None, :], 0, None) / unit  # each customer's age at each period end
    # periods x first days, but whole days apart: a few hundred distinct ages (each model's E[X(t)] is computed once per age)
    ages, age_idx = np.unique(age, return_inverse=True)
    age_idx = age_idx.reshape(age.shape)
    for name, m in models.items():
        exp = (m.unconditional_expected_purchases(ages)[age_idx] * fd.to_numpy()[None, :]).sum(axis=1)
        out[name] = exp
    out["calibration"] = edges <= (cal - start).days + 1
    return out.set_index("period")


@_blas_single_threaded
def compare_models(transactions, *, calibration_end, observation_end, time_unit: str = "W",
                   models=("bgnbd", "pareto_nbd", "mbgnbd")) -> "ModelComparison":
    """Fit each model on the calibration period and score it on the holdout period.

    Per model (``metrics``): number of parameters, calibration log-likelihood
    and AIC, holdout MAE and RMSE of purchases per customer, correlation of
    predicted with actual holdout purchases, predicted and actual holdout
    totals, and the error of cumulative repeat transactions at the end of the
    holdout. ``predictions`` holds each customer's actual and predicted holdout
    purchases, ``tracking`` the period-by-period cumulative repeat transactions.
    ``recommendation`` is ``recommend_model(metrics)``.
    """
    bad = [m for m in models if m not in ("bgnbd", "pareto_nbd", "mbgnbd")]
    if bad:
        raise ClvError(f"compare_models: models must be among ['bgnbd', 'mbgnbd', 'pareto_nbd'] (continuous time), got {bad}")
    summary = rfm_summary(transactions, observation_end=observation_end, calibration_end=calibration_end, time_unit=time_unit)
    fitted, failures = {}, {}
    for name in models:
        try:
            fitted[name] = fit_model(summary, name)
        except ClvError as exc:
            failures[name] = str(exc)
    if not fitted:
        raise FitError("compare_models: no model could be fitted: " + "; ".join(f"{k}: {v}" for k, v in failures.items()))
    horizon = float(summary["duration_holdout"].iloc[0])
    actual = summary["frequency_holdout"].to_numpy()
    preds = pd.DataFrame({"actual": actual}, index=summary.index)
    rows = []
    tracking = repeat_transaction_tracking(transactions, summary, fitted, observation_end=observation_end)
    for name, m in fitted.items():
        p = m.expected_purchases(horizon, summary["frequency"], summary["recency"], summary["T"])
        preds[name] = p
        err = p - actual
        end_err = (tracking[name].iloc[-1] - tracking["actual"].iloc[-1]) / max(tracking["actual"].iloc[-1], 1e-12)
        rows.append({
            "model": name, "n_params": len(m.param_names), "log_likelihood": m.log_likelihood_, "aic": m.aic_,
            "mae": float(np.mean(np.abs(err))), "rmse": float(np.sqrt(np.mean(err**2))),
            "correlation": float(np.corrcoef(p, actual)[0, 1]) if np.std(actual) > 0 and np.std(p) > 0 else float("nan"),
            "predicted_total": float(p.sum()), "actual_total": float(actual.sum()),
            "tracking_error_end": float(end_err),
            "tracking_mape": float(np.mean(np.abs(tracking[name] - tracking["actual"]) / tracking["actual"].clip(lower=1))),
        })
    metrics = pd.DataFrame(rows).set_index("model")
    rec = recommend_model(metrics)
    return ModelComparison(summary=summary, models=fitted, metrics=metrics, predictions=preds, tracking=tracking,
                           recommendation=rec, failures=failures)


@dataclass
class ModelComparison:
    """The calibration/holdout comparison of ``compare_models``."""

    summary: pd.DataFrame
    models: dict
    metrics: pd.DataFrame
    predictions: pd.DataFrame
    tracking: pd.DataFrame
    recommendation: tuple
    failures: dict = field(default_factory=dict)


def recommend_model(metrics: pd.DataFrame, *, tie_tolerance: float = 0.01) -> tuple[str, str]:
    """The model to use and a sentence saying why, computed from ``compare_models(...).metrics``.

    Rule: the lowest holdout MAE wins; models within ``tie_tolerance``
    (relative) of the best MAE count as tied, and among tied models the
    lowest calibration AIC wins.
    """
    if metrics.empty:
        raise ClvError("recommend_model: no model in the metrics table")
    m = metrics.sort_values("mae")
    best_mae = m["mae"].iloc[0]
    tied = m[m["mae"] <= best_mae * (1 + tie_tolerance)]
    choice = tied["aic"].idxmin()
    row = m.loc[choice]
    others = ", ".join(f"{k} {v:.3f}" for k, v in m["mae"].items() if k != choice)
    if len(tied) > 1:
        why = (f"its holdout error per customer (MAE {row['mae']:.3f}) is within {tie_tolerance:.0%} of the best "
               f"({', '.join(k for k in tied.index if k != choice)} tied), and it has the lowest calibration AIC "
               f"of the tied models ({row['aic']:,.1f})")
    elif len(m) > 1:
        why = f"it has the lowest holdout error per customer (MAE {row['mae']:.3f}; {others})"
    else:
        why = f"it is the only model fitted (holdout MAE {row['mae']:.3f})"
    sentence = (f"Recommended model: {choice}: {why}; it predicts {row['predicted_total']:,.0f} holdout purchases against "
                f"{row['actual_total']:,.0f} actual ({row['predicted_total'] / max(row['actual_total'], 1e-12) - 1:+.1%}), "
                f"with a correlation of {row['correlation']:.2f} per customer.")
    return choice, sentence


# ============================================================================ simulation (tests and benchmarks)


def simulate_transactions(n_customers: int, *, seed: int = 0, start: str = "2024-01-01", acquisition_days: int = 84,
                          observation_days: int = 546, bgnbd=(0.25, 4.0, 0.8, 2.5), gamma_gamma=(6.0, 4.0, 15.0),
                          customer_ids: str = "int") -> tuple[pd.DataFrame, dict]:
    """A BG/NBD + Gamma-Gamma transaction log with known parameters, vectorised (no per-customer loop).

    Each customer's first purchase day is uniform over the first
    ``acquisition_days`` after ``start``; repeat purchases follow the BG/NBD
    story (Fader, Hardie & Lee 2005) with ``bgnbd`` = (r, alpha, a, b), alpha
    per week; spends follow the Gamma-Gamma model (p, q, v). Returns
    (transactions with customer_id, timestamp, amount; truth dict). Given the
    number N of Poisson arrivals in the window and the number K of repeat
    purchases before dropout (geometric), the customer's purchases are the
    first min(N, K) of N uniform arrival times, which is the BG/NBD process.
    """
    rng = np.random.default_rng(seed)
    r, alpha, a, b = bgnbd
    p, q, v = gamma_gamma
    n = int(n_customers)
    first_day = rng.integers(0, acquisition_days, n)
    window_w = (observation_days - first_day) / 7.0  # weeks each customer is observed after the first purchase
    lam = rng.gamma(r, 1.0 / alpha, n)
    drop = rng.beta(a, b, n)
    k_max = rng.geometric(np.clip(drop, 1e-12, 1.0))  # repeat purchases made before dropping out
    n_arrivals = rng.poisson(lam * window_w)
    m = np.minimum(n_arrivals, k_max)
    owner = np.repeat(np.arange(n), n_arrivals)
    u = rng.random(len(owner))
    order = np.argsort(owner + u, kind="stable")  # by customer, then arrival time
    owner, u = owner[order], u[order]
    first_pos = np.cumsum(n_arrivals) - n_arrivals
    rank = np.arange(len(owner)) - first_pos[owner]
    keep = rank < m[owner]
    owner, u = owner[keep], u[keep]
    rep_day = first_day[owner] + np.floor(u * window_w[owner] * 7.0).astype(np.int64)
    rep_day = np.minimum(rep_day, observation_days - 1)
    cust = np.concatenate([np.arange(n), owner])
    day = np.concatenate([first_day, rep_day])
    nu = rng.gamma(q, 1.0 / v, n)
    amount = np.round(rng.gamma(p, 1.0, len(cust)) / nu[cust], 2)
    amount = np.maximum(amount, 0.01)
    t0 = np.datetime64(pd.Timestamp(start).date(), "D")
    seconds = rng.integers(8 * 3600, 22 * 3600, len(cust))
    ts = (t0 + day.astype("timedelta64[D]")).astype("datetime64[us]") + seconds.astype("timedelta64[s]")
    ids = cust if customer_ids == "int" else np.char.add("C", np.char.zfill(cust.astype(str), 7))
    tx = pd.DataFrame({"customer_id": ids, "timestamp": ts, "amount": amount})
    tx = tx.sort_values(["timestamp"], kind="stable").reset_index(drop=True)
    end = pd.Timestamp(start) + pd.Timedelta(days=observation_days - 1)
    truth = {"bgnbd": dict(zip(("r", "alpha", "a", "b"), bgnbd)), "gamma_gamma": dict(zip(("p", "q", "v"), gamma_gamma)),
             "time_unit": "W", "start": str(pd.Timestamp(start).date()), "observation_end": str(end.date()),
             "n_customers": n}
    return tx, truth


def _lifetimes():
    """The ``lifetimes`` package, imported here only: the tests and benchmarks compare against it through this."""
    import lifetimes
    import lifetimes.datasets  # noqa: F401  (the wheel ships CDNOW and donations next to this module)
    import lifetimes.utils  # noqa: F401

    return lifetimes


# ============================================================================ reporting helpers (used by the notebooks)


def describe_summary(summary: pd.DataFrame) -> pd.Series:
    """Key figures of an RFM summary: customers, repeat customers, mean frequency, recency and T, mean repeat spend."""
    rep = summary["frequency"] > 0
    unit = summary.attrs.get("time_unit", "D")
    out = {
        "customers": len(summary),
        "repeat customers": int(rep.sum()),
        "repeat share": float(rep.mean()) if len(summary) else float("nan"),
        "mean repeat purchases": float(summary["frequency"].mean()),
        f"mean recency ({unit})": float(summary["recency"].mean()),
        f"mean T ({unit})": float(summary["T"].mean()),
        "mean repeat spend (repeaters)": float(summary.loc[rep, "monetary_value"].mean()) if rep.any() else float("nan"),
    }
    if "frequency_holdout" in summary.columns:
        out["holdout purchases"] = float(summary["frequency_holdout"].sum())
        out[f"holdout length ({unit})"] = float(summary["duration_holdout"].iloc[0]) if len(summary) else float("nan")
    return pd.Series(out)


def model_parameters(models: dict, *, level: float = 0.9) -> pd.DataFrame:
    """Every model's parameters with standard errors and intervals (inverse Hessian), plus LL, AIC and fit notes."""
    rows = []
    for name, m in models.items():
        pi = m.param_intervals(level=level)
        for p, r in pi.iterrows():
            rows.append({"model": name, "parameter": p, **r.to_dict()})
    return pd.DataFrame(rows).set_index(["model", "parameter"])


def clv_deciles(values: pd.Series) -> pd.DataFrame:
    """Customers in ten equal groups by CLV (10 = most valuable): mean and total CLV, share of total value."""
    v = pd.Series(values).astype(float)
    ranks = v.rank(method="first")
    dec = pd.qcut(ranks, 10, labels=range(1, 11))
    t = v.groupby(dec, observed=True).agg(customers="size", mean_clv="mean", total_clv="sum")
    t["share_of_value"] = t["total_clv"] / max(v.sum(), 1e-12)
    t.index.name = "decile"
    return t


def value_by_segment(values: pd.Series, customers: pd.DataFrame, column: str) -> pd.DataFrame:
    """CLV by a customers column (acquisition_channel, country, ...): customers, mean, total, share of value."""
    _require(customers, ["customer_id", column], "customers")
    seg = customers.assign(customer_id=customers["customer_id"].astype(str)).drop_duplicates("customer_id")
    seg = seg.set_index("customer_id")[column].reindex(pd.Index(values.index).astype(str))  # ids compared as text
    df = pd.DataFrame({"clv": pd.Series(values).to_numpy(), column: seg.fillna("(unknown)").to_numpy()})
    t = df.groupby(column)["clv"].agg(customers="size", mean_clv="mean", total_clv="sum")
    t["share_of_value"] = t["total_clv"] / max(df["clv"].sum(), 1e-12)
    return t.sort_values("total_clv", ascending=False)


def customers_at_risk(model, summary: pd.DataFrame, values: pd.Series, *, top_share: float = 0.2,
                      p_alive_below: float = 0.5, lookback: float | None = None) -> pd.DataFrame:
    """High-value customers whose probability of being alive has fallen.

    A customer is listed when their CLV is in the top ``top_share`` and their
    P(alive) today is below ``p_alive_below`` and lower than it was
    ``lookback`` ago (default: 13 weeks, in the summary's time unit), the
    customer's purchases being the same. Sorted by CLV, highest first.
    """
    unit = TIME_UNITS[summary.attrs.get("time_unit", "D")]
    lookback = lookback if lookback is not None else 91.0 / unit
    x, tx, T = (summary[c].to_numpy(float) for c in ("frequency", "recency", "T"))
    now = model.probability_alive(x, tx, T)
    before = model.probability_alive(x, tx, np.maximum(T - lookback, tx))
    v = pd.Series(values).reindex(summary.index).to_numpy(float)
    cutoff = np.quantile(v, 1 - top_share) if len(v) else np.inf
    out = pd.DataFrame({"clv": v, "p_alive": now, "p_alive_change": now - before, "frequency": x,
                        f"days_since_last_purchase": (T - tx) * unit}, index=summary.index)
    risk = (out["clv"] >= cutoff) & (out["p_alive"] < p_alive_below) & (out["p_alive_change"] < 0)
    return out[risk].sort_values("clv", ascending=False)


def mask_ids(ids) -> pd.Index:
    """Customer ids replaced by a stable pseudonym (``cust-`` + 8 hex digits of a SHA-1), for reports shown to stakeholders."""
    import hashlib

    return pd.Index([f"cust-{hashlib.sha1(str(i).encode()).hexdigest()[:8]}" for i in ids], name="customer")


def holdout_split(transactions: pd.DataFrame, *, calibration_end=None, observation_end=None, holdout_weeks: int = 39):
    """(calibration_end, observation_end) as dates: given ones as they are; a missing observation_end is the last
    transaction day, a missing calibration_end is ``holdout_weeks`` weeks before it (39, as in the CDNOW papers)."""
    obs = _day(observation_end, "observation_end") if observation_end else pd.Timestamp(transactions["timestamp"].max()).normalize()
    cal = _day(calibration_end, "calibration_end") if calibration_end else obs - pd.Timedelta(days=7 * holdout_weeks)
    return cal, obs


def cohort_mean_payment(subscriptions: pd.DataFrame, *, cohort: str = "M", column: str = "mrr") -> pd.Series:
    """Mean ``column`` (e.g. MRR) per acquisition cohort, labelled as in ``subscription_cohort_counts``."""
    _require(subscriptions, ["start_date", column], "subscriptions")
    lab = pd.to_datetime(subscriptions["start_date"]).dt.to_period({"M": "M", "Q": "Q", "Y": "Y"}[cohort]).astype(str)
    return subscriptions[column].astype(float).groupby(lab).mean()
