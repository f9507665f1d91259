"""CX survey metrics: NPS, CSAT and CES with honest intervals, breakdowns and group comparisons.

Definitions (the same words the reports show):

* **NPS** (Net Promoter Score, Reichheld 2003), answers on 0-10 to "How likely
  are you to recommend us?": % promoters (9-10) minus % detractors (0-6),
  from -100 to 100. Interval: the adjusted Wald of Rocks (2016), "Interval
  estimation for the 'net promoter score'", The American Statistician 70(4),
  365-372, the best of the methods compared there: add 3/4 to the promoter and
  detractor counts and 3 to n, then NPS' +- z sqrt((p'+ + p'- - (p'+ - p'-)^2) / (n + 3)),
  clipped to -100..100 and, where it misses the observed NPS (a few answers,
  all on one side), widened to include it.
* **CSAT** (Customer Satisfaction) on 1-5: share of answers that are 4 or 5
  (top-two-box), in %, with the Wilson score interval (Wilson 1927). The other
  common convention, the mean score, is ``csat(..., method="mean")``.
* **CES** (Customer Effort Score, CES 2.0) on 1-7, agreement with "the company
  made it easy to handle my issue": the mean answer, with a t interval.
  Higher is easier.

Every function excludes missing answers and reports how many it excluded;
answers outside the scale, fractional or not numbers (text such as
"10 - extremely likely", true/false) raise ``SchemaError`` naming how many and which. Rates are percentages.
"""

from __future__ import annotations

import re

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from .data import SURVEY_SCALES, SchemaError

__all__ = ["SurveyResult", "nps", "csat", "ces", "breakdown", "monthly_trend", "compare_nps", "compare_csat", "latest_nps_group", "behaviour_by_nps_group", "plot_trend", "plot_breakdown",
           "nps_group", "top_terms", "redact_personal"]


@dataclass(frozen=True)
class SurveyResult:
    """A survey metric with its interval, the answers behind it and how many were excluded as missing."""

    metric: str
    value: float
    ci_low: float
    ci_high: float
    n: int
    missing: int = 0
    level: float = 0.95
    shares: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"value": self.value, "ci_low": self.ci_low, "ci_high": self.ci_high, "n": self.n, "missing": self.missing, **self.shares}


def _clean(scores, survey: str) -> tuple[np.ndarray, int]:
    """Whole-number answers on the survey's scale, and the count of missing ones; anything else is an error."""
    low, high = SURVEY_SCALES[survey]
    dtype = getattr(scores, "dtype", None)
    if isinstance(dtype, np.dtype) and dtype.kind == "f":
        # a validated table's float64 scores: missing is NaN, nothing else to read (no text conversion of every score)
        numeric = pd.Series(np.asarray(scores, dtype=float))
        missing = numeric.isna()
    else:
        raw = pd.Series(scores, dtype=object) if not isinstance(scores, pd.Series) else scores
        numeric = pd.to_numeric(raw, errors="coerce")
        missing = raw.isna() | raw.astype(str).str.strip().isin(["", "nan", "None", "<NA>"])
        not_number = (numeric.isna() & ~missing) | raw.map(lambda v: isinstance(v, (bool, np.bool_))).astype(bool)  # True is not a 1
        if not_number.any():
            examples = ", ".join(repr(v) for v in raw[not_number].head(3))
            raise SchemaError(f"surveys.score: {int(not_number.sum()):,} {survey} answers are not numbers (e.g. {examples})")
    values = numeric[~missing].astype(float)
    bad = (values < low) | (values > high) | (values != np.floor(values))
    if bad.any():
        examples = ", ".join(f"{v:g}" for v in values[bad].head(3))
        raise SchemaError(f"surveys.score: {int(bad.sum()):,} {survey} answers are outside the whole numbers {low}-{high} (e.g. {examples})")
    return values.to_numpy(), int(missing.sum())


def _z(level: float) -> float:
    return float(stats.norm.ppf(0.5 + level / 2))


def nps(scores, *, level: float = 0.95) -> SurveyResult:
    """Net Promoter Score: % promoters (9-10) minus % detractors (0-6) among answered 0-10 scores; adjusted-Wald interval (Rocks 2016)."""
    v, missing = _clean(scores, "nps")
    n = v.size
    promoters, detractors = int((v >= 9).sum()), int((v <= 6).sum())
    passives = n - promoters - detractors
    if n == 0:
        return SurveyResult("nps", np.nan, np.nan, np.nan, 0, missing, level, dict(promoters=0, passives=0, detractors=0))
    value = 100 * (promoters - detractors) / n
    pp, pd_ = (promoters + 0.75) / (n + 3), (detractors + 0.75) / (n + 3)
    centre = pp - pd_
    half = _z(level) * np.sqrt((pp + pd_ - centre ** 2) / (n + 3))
    # the adjusted interval is centred on the adjusted estimate: on a few one-sided answers it can miss the observed
    # NPS (one answer of 0: NPS -100, interval -73..23); it is then widened to reach it (coverage can only rise)
    low, high = min(value, max(-100.0, 100 * (centre - half))), max(value, min(100.0, 100 * (centre + half)))
    return SurveyResult("nps", value, low, high, n, missing, level,
                        dict(promoters=promoters, passives=passives, detractors=detractors))


def _wilson(k: int, n: int, level: float) -> tuple[float, float]:
    if n == 0:
        return np.nan, np.nan
    z = _z(level)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return 100 * (centre - half), 100 * (centre + half)


def csat(scores, *, level: float = 0.95, method: str = "top2") -> SurveyResult:
    """CSAT: % of answered 1-5 scores that are 4 or 5 (top-two-box), with a Wilson interval; ``method="mean"`` gives the mean score with a t interval."""
    if method not in ("top2", "mean"):
        raise ValueError(f"method must be 'top2' or 'mean', got {method!r}")
    v, missing = _clean(scores, "csat")
    if method == "mean":
        return _mean_result("csat", v, missing, level)
    k, n = int((v >= 4).sum()), v.size
    low, high = _wilson(k, n, level)
    return SurveyResult("csat", 100 * k / n if n else np.nan, low, high, n, missing, level, dict(satisfied=k))


def _mean_result(metric: str, v: np.ndarray, missing: int, level: float) -> SurveyResult:
    n = v.size
    if n == 0:
        return SurveyResult(metric, np.nan, np.nan, np.nan, 0, missing, level)
    mean = float(v.mean())
    if n == 1 or v.std(ddof=1) == 0:
        return SurveyResult(metric, mean, mean if n > 1 else np.nan, mean if n > 1 else np.nan, n, missing, level)
    half = stats.t.ppf(0.5 + level / 2, n - 1) * v.std(ddof=1) / np.sqrt(n)
    return SurveyResult(metric, mean, mean - half, mean + half, n, missing, level)


def ces(scores, *, level: float = 0.95) -> SurveyResult:
    """Customer Effort Score: mean of answered 1-7 agreement scores ('made it easy'), with a t interval; higher is easier."""
    v, missing = _clean(scores, "ces")
    return _mean_result("ces", v, missing, level)


_METRICS = {"nps": nps, "csat": csat, "ces": ces}


def nps_group(scores) -> pd.Series:
    """'promoter' (9-10), 'passive' (7-8) or 'detractor' (0-6) per answer; missing stays missing."""
    s = pd.to_numeric(pd.Series(scores), errors="coerce")
    out = pd.Series(np.select([s >= 9, s >= 7, s >= 0], ["promoter", "passive", "detractor"], default=""), index=s.index, dtype=object)
    return out.where(s.notna(), None)


def breakdown(surveys: pd.DataFrame, by: str, *, survey: str = "nps", min_n: int = 30, level: float = 0.95,
              customers: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per group: the metric with its interval and n; groups with fewer than ``min_n`` answers are marked too small.

    ``by`` is a surveys column (touchpoint) or a customers column (country,
    region, age_band, acquisition_channel, plan), joined on customer_id. Too
    small groups keep their n but their value and interval are missing, so
    they are never ranked; rows are sorted by value, largest first.
    """
    if survey not in _METRICS:
        raise ValueError(f"survey must be one of {list(_METRICS)}, got {survey!r}")
    answers = surveys[surveys["survey"] == survey]
    if by not in answers.columns:
        if customers is None or by not in customers.columns:
            raise ValueError(f"breakdown by {by!r}: not a surveys column and no customers table with it was given")
        answers = answers.merge(customers[["customer_id", by]], on="customer_id", how="left")
    rows = []
    for group, part in answers.groupby(answers[by].fillna("(unknown)"), sort=True):
        r = _METRICS[survey](part["score"], level=level)
        small = r.n < min_n
        rows.append({by: group, "n": r.n, "missing": r.missing, "too_small": small,
                     "value": np.nan if small else r.value, "ci_low": np.nan if small else r.ci_low, "ci_high": np.nan if small else r.ci_high})
    out = pd.DataFrame(rows, columns=[by, "n", "missing", "too_small", "value", "ci_low", "ci_high"])
    return out.sort_values(["too_small", "value"], ascending=[True, False], na_position="last").set_index(by)


def monthly_trend(surveys: pd.DataFrame, *, survey: str = "nps", min_n: int = 30, level: float = 0.95) -> pd.DataFrame:
    """The metric per calendar month of the answer, with its interval (months below ``min_n`` answers marked too small)."""
    answers = surveys[surveys["survey"] == survey].assign(month=lambda d: d["timestamp"].dt.to_period("M"))
    out = breakdown(answers, "month", survey=survey, min_n=min_n, level=level)
    return out.sort_index()


def compare_nps(a, b, *, level: float = 0.95) -> dict:
    """Difference in NPS between two groups of answers (a - b), its standard error, interval and two-sided p-value.

    Uses the adjusted-Wald variances of each group (Rocks 2016), which are independent.
    """
    ra, rb = nps(a, level=level), nps(b, level=level)
    if ra.n == 0 or rb.n == 0:
        raise ValueError("both groups need at least one NPS answer")

    def var(r):
        n = r.n + 3
        pp, pd_ = (r.shares["promoters"] + 0.75) / n, (r.shares["detractors"] + 0.75) / n
        return (pp + pd_ - (pp - pd_) ** 2) / n

    diff = ra.value - rb.value
    se = 100 * np.sqrt(var(ra) + var(rb))
    z = _z(level)
    p = 2 * stats.norm.sf(abs(diff) / se)
    return {"difference": diff, "se": se, "ci_low": diff - z * se, "ci_high": diff + z * se, "p_value": float(p), "n_a": ra.n, "n_b": rb.n}


def compare_csat(a, b) -> dict:
    """Difference in top-two-box CSAT (a - b, percentage points) with the chi-square test of the 2x2 table."""
    ra, rb = csat(a), csat(b)
    table = np.array([[ra.shares["satisfied"], ra.n - ra.shares["satisfied"]], [rb.shares["satisfied"], rb.n - rb.shares["satisfied"]]])
    if (table.sum(axis=0) == 0).any() or (table.sum(axis=1) == 0).any():
        return {"difference": ra.value - rb.value, "chi2": np.nan, "p_value": np.nan, "n_a": ra.n, "n_b": rb.n}
    chi2, p, _, _ = stats.chi2_contingency(table, correction=False)
    return {"difference": ra.value - rb.value, "chi2": float(chi2), "p_value": float(p), "n_a": ra.n, "n_b": rb.n}


_STOPWORDS = set("a an and are as at be but by for from has have i in is it its me my no not of on or so the this to too very was we were with you your".split())


_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_PHONE = re.compile(r"(?<![\w])\+?\d[\d ().-]{6,}\d(?![\w])")
_URL = re.compile(r"\b(?:https?://|www\.)\S+", re.IGNORECASE)


def redact_personal(comments: pd.Series) -> pd.Series:
    """Comments with e-mail addresses, phone numbers (7+ digits) and web addresses replaced by [e-mail], [phone], [link].

    Free-text answers often carry contact details ("call me on +44 20 7946
    0958"); reports show comments only through this. The count of comments
    changed is in ``attrs["redacted"]``.
    """
    text = comments.astype("string")
    out = text.str.replace(_EMAIL, "[e-mail]", regex=True).str.replace(_URL, "[link]", regex=True).str.replace(_PHONE, "[phone]", regex=True)
    out.attrs["redacted"] = int((out.fillna("") != text.fillna("")).sum())
    return out


def top_terms(comments: pd.Series, *, n: int = 10, ngram: int = 1) -> pd.DataFrame:
    """The most frequent words (or ``ngram``-word phrases) in comments, lower-cased, stop words removed (personal details redacted first)."""
    text = redact_personal(comments.dropna().astype(str)).str.replace(r"\[(?:e-mail|phone|link)\]", " ", regex=True)
    words = text.str.lower().str.findall(r"[a-zà-ÿ']+")
    counts: dict[str, int] = {}
    for tokens in words:
        tokens = [t for t in tokens if t not in _STOPWORDS]
        for i in range(len(tokens) - ngram + 1):
            term = " ".join(tokens[i:i + ngram])
            counts[term] = counts.get(term, 0) + 1
    out = pd.Series(counts, dtype="int64").sort_values(ascending=False, kind="stable").head(n)
    return out.rename_axis("term").rename("mentions").reset_index()


def latest_nps_group(surveys: pd.DataFrame, *, observation_end=None) -> pd.Series:
    """Each customer's NPS group from their latest answered NPS survey (up to ``observation_end``), by customer_id."""
    nps_answers = surveys[(surveys["survey"] == "nps") & surveys["score"].notna()]
    if observation_end is not None:
        nps_answers = nps_answers[nps_answers["timestamp"] < pd.Timestamp(observation_end) + pd.Timedelta(days=1)]
    latest = nps_answers.sort_values(["customer_id", "timestamp"], kind="stable").groupby("customer_id")["score"].last()
    return nps_group(latest).rename("nps_group")


def behaviour_by_nps_group(surveys: pd.DataFrame, transactions: pd.DataFrame, *, observation_end, churn_days: int = 180,
                           clv: pd.Series | None = None) -> pd.DataFrame:
    """Repeat rate, churn, net revenue and (optionally) expected value of promoters, passives and detractors.

    Customers are grouped by their latest NPS answer. Repeat rate: % with
    purchases on 2 or more distinct days. Churn: % of the group's buyers with
    no purchase in the last ``churn_days`` days before ``observation_end``
    (non-contractual churn). Revenue: mean net revenue per customer (purchases
    minus refunds) up to ``observation_end``; historical, not a CLV forecast.
    With ``clv`` (a CLV per customer_id, e.g. ``clv.customer_value(...)["clv"]``):
    ``mean_clv``, the mean CLV of the group's customers that have one (buyers;
    customers who never bought have no CLV), and ``customers_with_clv``.
    """
    from .engine import as_table, execute

    end = pd.Timestamp(observation_end).normalize() + pd.Timedelta(days=1)
    group = latest_nps_group(surveys, observation_end=observation_end)
    t = as_table(transactions, ["customer_id", "timestamp", "amount"])
    t = t.filter(t.timestamp < end)
    per = execute(t.group_by("customer_id").aggregate(
        revenue=t.amount.sum(), purchase_days=t.timestamp.date().nunique(where=t.amount >= 0),
        last=t.timestamp.max(where=t.amount >= 0))).set_index("customer_id")
    per = per.reindex(group.index)
    bought = per["purchase_days"].fillna(0) >= 1
    frame = pd.DataFrame({
        "group": group,
        "repeat": per["purchase_days"].fillna(0) >= 2,
        "churned": (per["last"] < end - pd.Timedelta(days=churn_days)).astype(float).where(bought),
        "revenue": per["revenue"].fillna(0.0),
    })
    extra = {}
    if clv is not None:
        values = pd.Series(clv, dtype=float)
        values.index = values.index.astype(str)
        frame["clv"] = values.reindex(frame.index.astype(str)).to_numpy()
        extra = {"mean_clv": ("clv", "mean"), "customers_with_clv": ("clv", "count")}
    out = frame.groupby("group").agg(customers=("repeat", "size"), repeat_rate_pct=("repeat", "mean"),
                                     churn_pct=("churned", "mean"), revenue_per_customer=("revenue", "mean"), **extra)
    out[["repeat_rate_pct", "churn_pct"]] *= 100
    return out.reindex(["promoter", "passive", "detractor"]).round(2)


def plot_trend(trend: pd.DataFrame, *, ax=None, title: str = "NPS per month", ylabel: str = "NPS (points)"):
    """A monthly metric with its interval as a band; months with too few answers are left out."""
    from .plots import new_ax

    ax = new_ax(ax)
    shown = trend[~trend["too_small"]]
    x = shown.index.to_timestamp() if isinstance(shown.index, pd.PeriodIndex) else pd.PeriodIndex(shown.index, freq="M").to_timestamp()
    ax.plot(x, shown["value"], marker="o", markersize=3)
    ax.fill_between(x, shown["ci_low"], shown["ci_high"], alpha=0.25, label="95% interval")
    ax.set(title=title, xlabel="month", ylabel=ylabel)
    ax.legend(loc="lower left")
    return ax


def plot_breakdown(table: pd.DataFrame, *, ax=None, title: str, xlabel: str = "NPS (points)"):
    """Groups as points with interval whiskers, best first; too-small groups are listed in the title, not drawn."""
    from .plots import new_ax

    ax = new_ax(ax)
    shown = table[~table["too_small"]].iloc[::-1]
    labels = [str(i) for i in shown.index]
    ax.errorbar(shown["value"], labels, xerr=[shown["value"] - shown["ci_low"], shown["ci_high"] - shown["value"]], fmt="o", capsize=3)
    small = [str(i) for i in table.index[table["too_small"]]]
    ax.set(title=title + (f" (too few answers: {', '.join(small)})" if small else ""), xlabel=xlabel)
    return ax
