"""clm_helpers.plots: the report style, and the shared plot helpers."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from clm_helpers import plots  # noqa: E402


@pytest.fixture
def style():
    with matplotlib.rc_context():
        plots.setup()
        yield
    plt.close("all")


def test_titles_sit_above_the_axes_without_the_automatic_rule(style):
    """The style fixes the title's height (no per-draw layout of the y axis to place it), and the title
    still clears the plot area and the x axis is left alone, as drawn into a report (PNG, tight box)."""
    series = pd.Series([3.0e5, 4.5e5, 5.2e5], index=pd.period_range("2024-01", periods=3, freq="M"))
    ax = plots.plot_monthly(series, title="Revenue by month, all channels", ylabel="revenue")
    assert ax.title.get_position()[1] == 1.0
    assert ax._autotitlepos is False  # matplotlib's flag for a title placed by its y, not by the automatic rule
    ax.figure.savefig(io.BytesIO(), format="png", bbox_inches="tight")
    renderer = ax.figure.canvas.get_renderer()
    assert ax.title.get_window_extent(renderer).y0 >= ax.get_window_extent(renderer).y1
    assert not any(tick.label2.get_visible() for tick in ax.xaxis.get_major_ticks())  # no tick labels on top


def test_new_ax_draws_on_the_given_axes_or_a_new_figure(style):
    fig, ax = plt.subplots()
    assert plots.new_ax(ax) is ax
    other = plots.new_ax()
    assert other is not ax and other.figure is not fig
