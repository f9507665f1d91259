"""Plots of the CLV models (``clm_helpers.clv``). Each takes ``ax=None``, draws on it and returns it."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .plots import new_ax

UNIT_NAMES = {"D": "days", "W": "weeks"}


def _unit(summary) -> str:
    return UNIT_NAMES.get(summary.attrs.get("time_unit", "D"), "days")


def plot_period_transactions(model, summary: pd.DataFrame, *, max_frequency: int = 7, seed: int = 0, ax=None):
    """Customers by number of repeat purchases in the calibration period: actual against simulated from the model.

    The model's bars come from one simulation of every customer over their own
    T with the fitted parameters (fixed ``seed``); the last bar holds
    ``max_frequency`` and more.
    """
    ax = new_ax(ax)
    rng = np.random.default_rng(seed)
    sim = model._simulate(summary["T"].to_numpy(float), rng)
    bins = np.arange(max_frequency + 1)
    actual = np.bincount(np.minimum(summary["frequency"].to_numpy(int), max_frequency), minlength=max_frequency + 1)
    model_counts = np.bincount(np.minimum(sim.astype(int), max_frequency), minlength=max_frequency + 1)
    ax.bar(bins - 0.2, actual, width=0.4, label="actual")
    ax.bar(bins + 0.2, model_counts, width=0.4, label=model.name)
    ax.set_xticks(bins, [str(b) for b in bins[:-1]] + [f"{max_frequency}+"])
    ax.set(title="Customers by repeat purchases (calibration)", xlabel="repeat purchases", ylabel="customers")
    ax.legend()
    return ax


def plot_calibration_vs_holdout(comparison, *, max_frequency: int = 7, ax=None):
    """Mean holdout purchases by calibration frequency: actual and each model's conditional expectation."""
    ax = new_ax(ax)
    p = comparison.predictions.copy()
    p["bin"] = np.minimum(comparison.summary["frequency"].to_numpy(int), max_frequency)
    means = p.groupby("bin").mean()
    ax.plot(means.index, means["actual"], marker="o", color="black", label="actual")
    for name in comparison.models:
        ax.plot(means.index, means[name], marker=".", linestyle="--", label=name)
    ax.set_xticks(range(max_frequency + 1), [str(b) for b in range(max_frequency)] + [f"{max_frequency}+"])
    ax.set(title="Holdout purchases by calibration repeat purchases", xlabel="repeat purchases in calibration",
           ylabel="mean purchases in holdout per customer")
    ax.legend()
    return ax


def plot_cumulative_tracking(comparison, *, ax=None):
    """Cumulative repeat transactions period by period, actual and expected by each model; the line marks the end of calibration."""
    ax = new_ax(ax)
    tr = comparison.tracking
    ax.plot(tr.index, tr["actual"], color="black", label="actual")
    for name in comparison.models:
        ax.plot(tr.index, tr[name], linestyle="--", label=name)
    ax.axvline(tr.index[tr["calibration"]].max(), color="grey", linestyle=":", label="end of calibration")
    ax.set(title="Cumulative repeat transactions", xlabel=f"{_unit(comparison.summary)} since the first purchase in the data",
           ylabel="repeat transactions (cumulative)")
    ax.legend()
    return ax


def _matrix(fn, summary, max_frequency, n_recency):
    T = float(summary["T"].max())
    maxf = int(max_frequency or np.quantile(summary["frequency"], 0.99))
    rec = np.linspace(0, T, n_recency)
    f = np.arange(0, maxf + 1)
    F, R = np.meshgrid(f, rec)
    R = np.where(F == 0, 0.0, R)
    Z = fn(F.ravel(), R.ravel(), np.full(F.size, T)).reshape(F.shape)
    return f, rec, Z, T


def plot_probability_alive_matrix(model, summary: pd.DataFrame, *, max_frequency: int | None = None, n_recency: int = 40, ax=None):
    """P(alive) of a customer with each frequency and recency, at the longest T of the summary."""
    ax = new_ax(ax)
    f, rec, Z, T = _matrix(model.probability_alive, summary, max_frequency, n_recency)
    im = ax.imshow(Z, origin="lower", aspect="auto", extent=[f[0] - 0.5, f[-1] + 0.5, rec[0], rec[-1]], vmin=0, vmax=1, cmap="viridis")
    ax.figure.colorbar(im, ax=ax, label="P(alive)")
    ax.set(title=f"Probability alive ({model.name}, T = {T:.0f} {_unit(summary)})", xlabel="repeat purchases (frequency)",
           ylabel=f"recency ({_unit(summary)})")
    return ax


def plot_frequency_recency_matrix(model, summary: pd.DataFrame, *, horizon: float, max_frequency: int | None = None,
                                  n_recency: int = 40, ax=None):
    """Expected purchases in the next ``horizon`` of a customer with each frequency and recency, at the longest T."""
    ax = new_ax(ax)
    f, rec, Z, T = _matrix(lambda x, r, t: model.expected_purchases(horizon, x, r, t), summary, max_frequency, n_recency)
    im = ax.imshow(Z, origin="lower", aspect="auto", extent=[f[0] - 0.5, f[-1] + 0.5, rec[0], rec[-1]], cmap="magma")
    ax.figure.colorbar(im, ax=ax, label=f"expected purchases in {horizon:g} {_unit(summary)}")
    ax.set(title=f"Expected purchases ({model.name}, T = {T:.0f} {_unit(summary)})", xlabel="repeat purchases (frequency)",
           ylabel=f"recency ({_unit(summary)})")
    return ax


def plot_clv_deciles(table: pd.DataFrame, *, currency: str = "", ax=None):
    """Mean CLV per decile of customers (``clv.clv_deciles`` output), with each decile's share of total value annotated."""
    ax = new_ax(ax)
    ax.bar(table.index.astype(str), table["mean_clv"])
    for i, share in enumerate(table["share_of_value"]):
        ax.annotate(f"{share:.0%}", (i, table["mean_clv"].iloc[i]), ha="center", va="bottom", fontsize=8)
    ax.set(title="Customer value by decile (share of total value above the bars)", xlabel="decile (10 = most valuable)",
           ylabel=f"mean CLV {currency}".strip())
    return ax


def plot_cohort_survival(counts: pd.DataFrame, models: dict, *, horizon: int = 24, max_cohorts: int = 6, ax=None):
    """Observed share of each cohort still active (solid) and the sBG projection (dashed), by period since start."""
    ax = new_ax(ax)
    for cohort in list(models)[-max_cohorts:]:
        row = counts.loc[cohort].dropna()
        line, = ax.plot(row.index, row.to_numpy() / row.iloc[0], marker=".", label=f"{cohort} (n={int(row.iloc[0]):,})")
        t = np.arange(0, horizon + 1)
        ax.plot(t, models[cohort].survival(t), linestyle="--", color=line.get_color())
    ax.set(title="Survival by acquisition cohort: observed (solid) and sBG projection (dashed)",
           xlabel=f"periods since start ({counts.columns.name or 'periods'})", ylabel="share still subscribed")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8)
    return ax


def plot_retention_curves(models: dict, *, horizon: int = 24, max_cohorts: int = 6, ax=None):
    """Projected period-to-period retention rate r_t of each cohort (sBG: rising with t, as the churn-prone leave)."""
    ax = new_ax(ax)
    t = np.arange(1, horizon + 1)
    for cohort in list(models)[-max_cohorts:]:
        ax.plot(t, models[cohort].retention(t), label=cohort)
    ax.set(title="Projected retention rate by cohort (sBG)", xlabel="period", ylabel="retention rate")
    ax.legend(fontsize=8)
    return ax
