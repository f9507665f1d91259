"""NPS, CSAT and CES: hand-made answers, intervals checked by simulation, clear errors."""

import numpy as np
import pandas as pd
import pytest

from clm_helpers import survey
from clm_helpers.data import SchemaError


def test_nps_by_hand():
    r = survey.nps([10, 9, 8, 7, 6, 0])
    # promoters 10, 9 (2 of 6); detractors 6, 0 (2 of 6): 33.3% - 33.3% = 0
    assert r.value == 0 and r.n == 6
    assert r.shares == {"promoters": 2, "passives": 2, "detractors": 2}


def test_nps_adjusted_wald_interval_by_hand():
    r = survey.nps([10] * 6 + [8] * 2 + [3] * 2)  # n=10: 6 promoters, 2 detractors -> NPS 40
    assert r.value == pytest.approx(40.0)
    # Rocks (2016): p+ = (6 + .75)/13, p- = (2 + .75)/13, centre = 4/13, var = (p+ + p- - centre^2)/13
    pp, pm = 6.75 / 13, 2.75 / 13
    half = 1.959964 * np.sqrt((pp + pm - (pp - pm) ** 2) / 13)
    assert r.ci_low == pytest.approx(100 * (pp - pm - half), abs=1e-4)
    assert r.ci_high == pytest.approx(100 * (pp - pm + half), abs=1e-4)


def test_missing_answers_are_excluded_and_counted():
    r = survey.nps([10, None, np.nan, 0])
    assert (r.n, r.missing, r.value) == (2, 2, 0.0)


@pytest.mark.parametrize("scores, message", [
    ([11, 5, -1], r"2 nps answers are outside the whole numbers 0-10 \(e.g. 11, -1\)"),
    ([7.5], r"1 nps answers are outside the whole numbers 0-10 \(e.g. 7.5\)"),
    (["10 - extremely likely", "9"], r"1 nps answers are not numbers \(e.g. '10 - extremely likely'\)"),
])
def test_bad_nps_answers_raise(scores, message):
    with pytest.raises(SchemaError, match=message):
        survey.nps(scores)


def test_csat_top_two_box_with_wilson_interval():
    r = survey.csat([5, 4, 3, 2, 1, 5, 4, 4])  # 5 of 8 are 4 or 5
    assert r.value == pytest.approx(62.5)
    # Wilson 95%: centre (p + z^2/2n)/(1 + z^2/n), half z sqrt(p(1-p)/n + z^2/4n^2)/(1 + z^2/n)
    z, n, p = 1.959964, 8, 0.625
    centre = (p + z * z / 16) / (1 + z * z / 8)
    half = z * np.sqrt(p * (1 - p) / 8 + z * z / 256) / (1 + z * z / 8)
    assert (r.ci_low, r.ci_high) == pytest.approx((100 * (centre - half), 100 * (centre + half)), abs=1e-4)
    with pytest.raises(SchemaError, match=r"1 csat answers are outside the whole numbers 1-5"):
        survey.csat([0, 5])


def test_csat_mean_convention_is_an_option():
    r = survey.csat([5, 4, 3], method="mean")
    assert r.value == pytest.approx(4.0)


def test_ces_mean_with_t_interval():
    r = survey.ces([7, 6, 5, 4])  # mean 5.5, sd 1.291, t(0.975, 3) = 3.182
    assert r.value == pytest.approx(5.5)
    assert r.ci_high - r.value == pytest.approx(3.182446 * 1.290994 / 2, abs=1e-4)
    with pytest.raises(SchemaError, match=r"1 ces answers are outside the whole numbers 1-7"):
        survey.ces([8])


def test_no_answers_give_missing_never_an_error_or_inf():
    for f in (survey.nps, survey.csat, survey.ces):
        r = f([])
        assert r.n == 0 and np.isnan(r.value)


def coverage(simulate, metric, truth, trials=2000, seed=1):
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(trials):
        r = metric(simulate(rng))
        hits += r.ci_low <= truth <= r.ci_high
    return hits / trials


def test_nps_interval_coverage_is_close_to_nominal():
    probs = np.array([0.2, 0.3, 0.5])  # detractor, passive, promoter -> NPS 30
    simulate = lambda rng: rng.choice([3, 8, 10], size=100, p=probs)
    assert 0.93 <= coverage(simulate, survey.nps, 30.0) <= 0.97


def test_csat_interval_coverage_is_close_to_nominal():
    simulate = lambda rng: rng.choice([2, 5], size=80, p=[0.3, 0.7])
    assert 0.93 <= coverage(simulate, survey.csat, 70.0) <= 0.97


def test_breakdown_marks_small_groups_and_never_ranks_them():
    surveys = pd.DataFrame({"customer_id": list("abcdefg"), "survey": ["nps"] * 7, "score": [10, 10, 0, 9, 9, 9, 0],
                            "touchpoint": ["web", "web", "web", "app", "app", "app", "store"]})
    table = survey.breakdown(surveys, "touchpoint", min_n=2)
    assert list(table.index) == ["app", "web", "store"]  # app 100, web 33.3, store too small (n=1)
    assert table.loc["store", "too_small"] and np.isnan(table.loc["store", "value"])
    assert table.loc["web", "value"] == pytest.approx(100 / 3)


def test_compare_nps_difference_and_standard_error():
    out = survey.compare_nps([10] * 50 + [0] * 50, [10] * 80 + [0] * 20)
    assert out["difference"] == pytest.approx(-60.0)
    # adjusted-Wald variances: a (50.75/103 each side) 0.98544/103; b (80.75/103, 20.75/103) (0.98544 - 0.58252^2)/103
    var_a = (101.5 / 103) / 103
    var_b = (101.5 / 103 - (60 / 103) ** 2) / 103
    assert out["se"] == pytest.approx(100 * np.sqrt(var_a + var_b), rel=1e-9)  # 12.59 points
    assert out["p_value"] == pytest.approx(1.867e-6, rel=1e-3)


def test_compare_csat_chi_square():
    out = survey.compare_csat([5] * 40 + [1] * 60, [5] * 60 + [1] * 40)
    assert out["difference"] == pytest.approx(-20.0)
    assert out["p_value"] == pytest.approx(0.004677734981047177, rel=1e-6)  # chi2 = 8.0, 1 df


def test_nps_group_and_top_terms():
    assert survey.nps_group([10, 7, 3, None]).tolist() == ["promoter", "passive", "detractor", None]
    terms = survey.top_terms(pd.Series(["Too many emails", "too many EMAILS!", "Fast delivery", None]), n=2)
    assert terms.to_dict("list") == {"term": ["many", "emails"], "mentions": [2, 2]}


def test_behaviour_by_nps_group_by_hand():
    surveys = pd.DataFrame({"customer_id": ["P", "D", "D", "X"], "survey": ["nps"] * 4, "score": [10.0, 9.0, 2.0, 8.0],
                            "timestamp": pd.to_datetime(["2024-01-01", "2024-01-01", "2024-03-01", "2024-02-01"])})
    tx = pd.DataFrame({"customer_id": ["P", "P", "D", "D", "X"],
                       "timestamp": pd.to_datetime(["2024-01-05", "2024-06-20", "2023-12-01", "2023-12-01", "2024-06-01"]),
                       "amount": [10.0, 20.0, 5.0, -5.0, 7.0]})
    out = survey.behaviour_by_nps_group(surveys, tx, observation_end="2024-06-30", churn_days=90)
    # P promoter: 2 purchase days, last 2024-06-20 (not churned), revenue 30. D: latest answer 2 -> detractor,
    # 1 purchase day, last 2023-12-01 -> churned, revenue 0. X passive: 1 day, active, revenue 7.
    assert out.loc["promoter"].to_dict() == {"customers": 1, "repeat_rate_pct": 100.0, "churn_pct": 0.0, "revenue_per_customer": 30.0}
    assert out.loc["detractor", "churn_pct"] == 100.0 and out.loc["detractor", "revenue_per_customer"] == 0.0
    assert out.loc["passive", "repeat_rate_pct"] == 0.0
    # CLV: P 50, X 4; D has none (bought nothing net, not in the CLV table) -> detractor mean missing, 0 customers with one
    with_clv = survey.behaviour_by_nps_group(surveys, tx, observation_end="2024-06-30", churn_days=90, clv=pd.Series({"P": 50.0, "X": 4.0}))
    assert with_clv.loc["promoter", "mean_clv"] == 50.0 and with_clv.loc["passive", "mean_clv"] == 4.0
    assert np.isnan(with_clv.loc["detractor", "mean_clv"]) and with_clv.loc["detractor", "customers_with_clv"] == 0
