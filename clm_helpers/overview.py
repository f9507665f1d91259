"""The lifecycle on one page: the headline figure of every stage, now and before, from the stage modules.

``stage_headlines(dataset)`` computes, for a stakeholder who reads one page,
the headline of each lifecycle stage with the same functions (and so the same
definitions, ``catalog.yaml``) as the stage's own notebook, and the same
figure one comparison window earlier:

* **period figures** (active customers, new customers, period churn, the
  inactivity churn rate, stickiness) compare the last complete period
  (calendar month by default) with the one before it;
* **window figures** (CAC, activation rate, e-mail click-through and
  unsubscribe rates, NPS, CSAT, CES) compare the last ``window_months``
  months up to the observation end with the ``window_months`` before them;
* **CLV** (mean expected customer value over ``horizon_months``, from the
  purchase model ``clv_model`` with Gamma-Gamma) is computed at the
  observation end and ``window_months`` earlier, each from the data known
  then.

A figure that the data cannot give (a table the dataset lacks, a denominator
of zero, a model that cannot be fitted) is a row with no value and the
reason in ``note``: it is never dropped and never shown as a number.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pandas as pd

from .data import ClmError, OptionError, parse_day

__all__ = ["stage_headlines", "verdict", "headline_sentences", "plot_changes"]

_COLUMNS = ["stage", "metric", "label", "unit", "value", "previous", "change", "good", "current_window", "previous_window",
            "notebook", "note"]
#: The periods of the period figures: those of the lifecycle stage counts (``lifecycle.stage_counts``).
_PERIODS = {"W": "week", "M": "month"}
#: Two periods back: the start of the comparisons that need only the last two complete periods.
_TWO_PERIODS = {"W": pd.DateOffset(weeks=2), "M": pd.DateOffset(months=2)}


def _number(value) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _row(stage, metric, label, unit, good, notebook, compute: Callable[[], tuple], windows: tuple[str, str]) -> dict:
    """One headline: compute() gives (value, previous, note); a ClmError becomes the note, never a traceback."""
    try:
        value, previous, note = compute()
    except ClmError as exc:  # the data cannot give this figure: say why
        value, previous, note = None, None, str(exc).splitlines()[0]
    value, previous = _number(value), _number(previous)
    change = value - previous if value is not None and previous is not None else None
    return {"stage": stage, "metric": metric, "label": label, "unit": unit, "value": value, "previous": previous,
            "change": change, "good": good, "current_window": windows[0], "previous_window": windows[1],
            "notebook": notebook, "note": note or ""}


def _present(df) -> bool:
    return df is not None and len(df) > 0


def stage_headlines(ds, *, observation_end=None, period: str = "M", window_months: int = 12,
                    activation_criteria: dict | None = None, activation_window_days: int = 14,
                    churn_window_days: int = 180, clv_model: str = "bgnbd", horizon_months: int = 12,
                    discount_rate: float = 0.10) -> pd.DataFrame:
    """The headline of every lifecycle stage, now and one comparison window earlier (see the module docstring).

    ``ds`` is a ``datasets.Dataset``. One row per figure, in lifecycle order,
    with ``value`` (now), ``previous``, ``change`` (value - previous, in the
    figure's unit; points for rates), ``good`` (which direction is good, as in
    the catalog), the two windows in words, the notebook with the detail, and
    ``note`` (why a value is missing, or what it covers). ``attrs`` holds the
    observation end and the options.

    The dataset's tables are converted for the engine once for the whole
    call (``engine.shared``), not once per figure and window.
    """
    from . import engine

    tables = [getattr(ds, name, None) for name in ("transactions", "customers", "email_events", "product_events",
                                                   "marketing_spend", "surveys", "subscriptions")]
    with engine.shared(*tables):
        return _stage_headlines(ds, observation_end=observation_end, period=period, window_months=window_months,
                                activation_criteria=activation_criteria, activation_window_days=activation_window_days,
                                churn_window_days=churn_window_days, clv_model=clv_model, horizon_months=horizon_months,
                                discount_rate=discount_rate)


def _stage_headlines(ds, *, observation_end, period, window_months, activation_criteria, activation_window_days, churn_window_days,
                     clv_model, horizon_months, discount_rate) -> pd.DataFrame:
    from . import acquisition, clv, engagement, lifecycle, onboarding, retention, survey

    if period not in _PERIODS:
        raise OptionError(f"period must be one of {sorted(_PERIODS)}, got {period!r}")
    if int(window_months) < 1:
        raise OptionError(f"window_months must be at least 1, got {window_months!r}")
    window_months = int(window_months)
    end = parse_day(observation_end, "observation_end") or ds.end
    one_day = pd.Timedelta(days=1)
    start = end - pd.DateOffset(months=window_months) + one_day
    prev_end = start - one_day
    prev_start = prev_end - pd.DateOffset(months=window_months) + one_day
    win = (f"{start:%Y-%m-%d} to {end:%Y-%m-%d}", f"{prev_start:%Y-%m-%d} to {prev_end:%Y-%m-%d}")
    now_window = dict(observation_start=start, observation_end=end)
    before_window = dict(observation_start=prev_start, observation_end=prev_end)
    tx = ds.transactions if _present(ds.transactions) else None
    rows = []

    # ---------------------------------------------------------------- periods: from the lifecycle stage counts
    counts = None
    if tx is not None:
        counts = lifecycle.stage_counts(tx, observation_end=end, period=period)
    last = counts.index[-1] if counts is not None and len(counts) else None
    before = counts.index[-2] if counts is not None and len(counts) > 1 else None
    per = (str(last) if last is not None else "-", str(before) if before is not None else "-")
    unit_word = _PERIODS[period]

    def from_counts(column):
        def compute():
            if counts is None or last is None:
                raise ClmError("no transactions: no complete period to count")
            return counts.loc[last, column], counts.loc[before, column] if before is not None else None, ""
        return compute

    rows.append(_row("reach/acquire", "new_customers", f"New customers (last {unit_word})", "customers", "higher", "lifecycle",
                     from_counts("new"), per))

    def cac(window):
        if not _present(ds.marketing_spend):
            raise ClmError("no marketing_spend table: CAC cannot be computed")
        table = acquisition.cac(ds.customers, ds.marketing_spend, period="all", transactions=tx, **window)
        return acquisition.cac_totals(table).iloc[0]

    def compute_cac():
        now, earlier = cac(now_window), cac(before_window)
        note = "" if pd.notna(now["blended_cac"]) else str(now.get("note") or "no new customer in the window")
        return now["blended_cac"], earlier["blended_cac"], note

    rows.append(_row("reach/acquire", "cac", "CAC, blended (spend / new customers)", "currency", "lower", "acquisition", compute_cac, win))

    # ---------------------------------------------------------------- onboarding
    def compute_activation():
        if not _present(ds.product_events):
            raise ClmError("no product_events table: activation cannot be measured")
        # one table for both windows, to `end`; the earlier window's rate is the table as it stood at prev_end
        # (activation_rate's as_of: the same figures as a table computed to prev_end; at 1M customers 11.8 s -> 10.3 s: the
        # cost grows with the sign-ups joined, not with the scan of the events)
        table = onboarding.activation(ds.customers, ds.product_events, criteria=activation_criteria,
                                      window_days=activation_window_days, observation_start=prev_start, observation_end=end)
        now = onboarding.activation_rate(table[table["signup_date"] >= start], by=None)
        earlier = onboarding.activation_rate(table, by=None, as_of=prev_end)
        if now.empty:
            raise ClmError("no sign-up in the window")
        now, earlier = now.iloc[0], earlier.iloc[0] if len(earlier) else {"activation_rate": None}  # a young company: no earlier sign-up
        note = f"sign-ups in the window whose {activation_window_days}-day activation window has elapsed ({int(now['eligible']):,} now)"
        return now["activation_rate"], earlier["activation_rate"], note

    rows.append(_row("onboard/activate", "activation_rate", "Activation rate", "%", "higher", "onboarding", compute_activation, win))

    # ---------------------------------------------------------------- engagement
    rows.append(_row("engage", "active_customers", f"Active customers (bought in the last {unit_word})", "customers", "higher",
                     "lifecycle", from_counts("active"), per))

    def email(window):
        if not _present(ds.email_events):
            raise ClmError("no email_events table: e-mail rates cannot be measured")
        return engagement.email_metrics(ds.email_events, by=None, **window).iloc[0]

    email_now = email_before = None

    def email_rate(column, note_word):
        def compute():
            nonlocal email_now, email_before
            if email_now is None:
                email_now, email_before = email(now_window), email(before_window)
            return email_now[column], email_before[column], f"{note_word} ({int(email_now['delivered']):,} e-mails delivered now)"
        return compute

    rows.append(_row("engage", "email_click_through_rate", "E-mail click-through rate (clicks / delivered)", "%", "higher",
                     "engagement", email_rate("click_through_rate", "unique clicks per delivered e-mail"), win))
    rows.append(_row("engage", "email_unsubscribe_rate", "E-mail unsubscribe rate (unsubscribes / delivered)", "%", "lower",
                     "engagement", email_rate("unsubscribe_rate", "unsubscribes per delivered e-mail"), win))

    def compute_stickiness():
        if not _present(ds.product_events):
            raise ClmError("no product_events table: stickiness cannot be measured")
        # the last two complete months only (a month's DAU/MAU reads its own days): at 1M customers 2 s instead of 6-8 s
        months_from = (end + one_day - _TWO_PERIODS["M"]).to_period("M").start_time
        sticky = engagement.stickiness(ds.product_events, observation_start=months_from, observation_end=end)["stickiness_pct"].dropna()
        if sticky.empty:
            raise ClmError("no complete calendar month of product events")
        return sticky.iloc[-1], sticky.iloc[-2] if len(sticky) > 1 else None, f"DAU/MAU in {sticky.index[-1]}"

    rows.append(_row("engage", "stickiness", "Stickiness (DAU/MAU, last month)", "%", "higher", "engagement", compute_stickiness,
                     ("last complete month", "the month before")))

    # ---------------------------------------------------------------- retention
    rows.append(_row("retain", "churn_rate", f"Period churn (last {unit_word}'s buyers lost)", "%", "lower", "lifecycle",
                     from_counts("churn_pct"), per))

    def compute_inactivity():
        if tx is None:
            raise ClmError("no transactions: churn cannot be measured")
        # the last two complete periods only, the same figures as the whole table's (inactivity_churn's observation_start)
        rates = retention.inactivity_churn(tx, observation_start=end + one_day - _TWO_PERIODS[period], observation_end=end,
                                           window_days=churn_window_days, period=period)["churn_pct"].dropna()
        if rates.empty:
            raise ClmError("no period has customers active at its start yet")
        return rates.iloc[-1], rates.iloc[-2] if len(rates) > 1 else None, f"no purchase in {churn_window_days} days, {rates.index[-1]}"

    rows.append(_row("retain", "inactivity_churn_rate", f"Churn ({churn_window_days} days without a purchase)", "%", "lower",
                     "retention", compute_inactivity, per))

    # ---------------------------------------------------------------- value
    def mean_clv(at):
        summary = clv.rfm_summary(tx, observation_end=at, time_unit="W")
        purchases, spend = clv.fit_model(summary, clv_model), clv.fit_model(summary, "gamma_gamma")
        value = clv.customer_value(purchases, spend, summary, horizon_months=horizon_months, discount_rate=discount_rate, interval=None)
        return value["clv"].mean(), len(value)

    def compute_clv():
        if tx is None:
            raise ClmError("no transactions: CLV cannot be estimated")
        now, n = mean_clv(end)
        earlier = None
        if (tx["timestamp"] < prev_end + one_day).any():
            try:
                earlier, _ = mean_clv(prev_end)
            except ClmError:  # too little history a window earlier: no comparison, the current figure stands
                earlier = None
        return now, earlier, f"{clv_model} with Gamma-Gamma, {horizon_months} months ahead, discounted at {discount_rate:.0%} a year, {n:,} customers"

    rows.append(_row("grow/advocate", "clv", f"Mean CLV ({horizon_months} months ahead)", "currency", "higher",
                     "clv_customer_value", compute_clv, (f"at {end:%Y-%m-%d}", f"at {prev_end:%Y-%m-%d}")))

    # ---------------------------------------------------------------- experience
    def answers(window, name):
        s = ds.surveys
        keep = (s["survey"] == name) & (s["timestamp"] >= window["observation_start"]) & (s["timestamp"] < window["observation_end"] + one_day)
        return s.loc[keep, "score"]

    for name, label, unit, fn in (("nps", "NPS", "points", survey.nps), ("csat", "CSAT (top-two-box)", "%", survey.csat),
                                  ("ces", "CES (mean, 1-7)", "score", survey.ces)):
        def compute(name=name, fn=fn):
            if not _present(ds.surveys):
                raise ClmError("no surveys table: experience cannot be measured")
            now = fn(answers(now_window, name))
            earlier = fn(answers(before_window, name))
            if now.n == 0:
                raise ClmError(f"no {name} answers in the window")
            return now.value, earlier.value if earlier.n else None, f"95% interval {now.ci_low:.1f} to {now.ci_high:.1f}, {now.n:,} answers"

        rows.append(_row("grow/advocate", name, label, unit, "higher", "cx_surveys", compute, win))

    table = pd.DataFrame(rows, columns=_COLUMNS)
    table.attrs.update(observation_end=end, period=period, window_months=window_months)
    return table


def _format(value: float, unit: str) -> str:
    if unit == "customers":
        return f"{value:,.0f}"
    if unit == "currency":
        return f"{value:,.2f}" if abs(value) < 1000 else f"{value:,.0f}"
    return f"{value:,.2f}" if abs(value) < 10 else f"{value:,.1f}"


def verdict(row) -> str:
    """"better", "worse" or "unchanged" (the change rounds to zero as shown) for a row of ``stage_headlines``; "" without a comparison."""
    if row["value"] is None or pd.isna(row["value"]) or row["previous"] is None or pd.isna(row["previous"]):
        return ""
    change = row["change"]
    if _format(abs(change), row["unit"]).strip("0.,") == "":
        return "unchanged"
    return "better" if (change > 0) == (row["good"] == "higher") else "worse"


def headline_sentences(table: pd.DataFrame) -> list[str]:
    """One plain sentence per figure: now, before, and whether the move is good (the catalog's direction); or why it is missing."""
    lines = []
    for _, r in table.iterrows():
        if r["value"] is None or pd.isna(r["value"]):
            lines.append(f"{r['label']}: not available ({r['note']}).")
            continue
        unit = "%" if r["unit"] == "%" else ""
        text = f"{r['label']}: **{_format(r['value'], r['unit'])}{unit}**"
        word = verdict(r)
        if word:
            points = " points" if r["unit"] in ("%", "points") else ""
            sign = "+" if r["change"] >= 0 else "-"
            when = r["previous_window"] if r["previous_window"].startswith(("at ", "the ")) else f"in {r['previous_window']}"
            text += (f", against {_format(r['previous'], r['unit'])}{unit} {when} "
                     f"({sign}{_format(abs(r['change']), r['unit'])}{points}: {word})")
        lines.append(text + ".")
    return lines


def plot_changes(table: pd.DataFrame, *, ax=None, title: str = "Change against the previous window (% of the earlier value)"):
    """Each figure's relative change, green where it moved the good way and red where it moved the bad way."""
    from . import plots

    ax = plots.new_ax(ax)
    rows = table[[bool(verdict(r)) for _, r in table.iterrows()]]
    rows = rows[rows["previous"].abs() > 0]
    relative = 100 * rows["change"] / rows["previous"].abs()
    colours = ["#2a9d8f" if verdict(r) == "better" else "#e76f51" if verdict(r) == "worse" else "#999999" for _, r in rows.iterrows()]
    ax.barh(list(rows["label"]), list(relative), color=colours)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.invert_yaxis()
    ax.set_xlabel("% change (green: better, red: worse)")
    ax.set_title(title)
    return ax
