"""The claim studies' plots: what goes on the x-axis, which means a series' line joins."""
import numpy as np

from experiments import claims_plots


def test_one_budget_studies_put_the_variants_last_part_on_the_x_axis():
    assert [claims_plots.level_label(v) for v in ("n4x4", "n10x3", "ieee", "lambda0p05", "reward")] == [
        "(4, 4)", "(10, 3)", "IEEE", "λ 0.05", "reward"]
    runs = [{"variant": v, "budget": "1of8"} for v in ("grpo@ieee", "remax@n2x8", "grpo@n2x8", "remax@n10x3")]
    series, x, ticks, title = claims_plots.layout(runs, runs)
    assert list(ticks.values()) == ["(2, 8)", "(10, 3)", "IEEE"] and title == "tokenizer (RL budget 1/8)"  # as run
    assert [(series(r), x(r)) for r in runs] == [("grpo", 2), ("remax", 0), ("grpo", 0), ("remax", 1)]
    lam = [{"variant": f"genre2@lambda{v}", "budget": "1of8"} for v in ("0p2", "0", "0p05")]
    assert list(claims_plots.layout(lam, lam)[2].values()) == ["λ 0", "λ 0.05", "λ 0.2"]
    several = runs + [{"variant": "remax@n2x8", "budget": "1"}]
    series, x, ticks, _ = claims_plots.layout(several, several)
    assert series(several[1]) == "remax@n2x8" and x(several[-1]) == 0.0 and ticks == {-3.0: "1/8", 0.0: "1x"}
    # budgets spaced by their size: 1/3 sits log2(3) below 1x, 1/8 three steps below
    assert np.isclose(x({"budget": "1of3"}), -np.log2(3), rtol=1e-15) and x({"budget": "1of8"}) == -3.0


def test_only_neighbours_over_the_same_runs_are_joined_by_a_line():
    s16, s8 = frozenset((d, k) for d in "abcdefgh" for k in (0, 1)), frozenset((d, 0) for d in "abcdefgh")
    s17 = s16 | {("i", 1)}
    assert claims_plots.joined([s17, s16, s8, s8]) == [False, False, True]
    assert claims_plots.joined([s16, s16, s8, s8]) == [True, False, True]
    same_count = s8 - {("a", 0)} | {("a", 1)}  # as many runs is not enough: the same runs
    assert claims_plots.joined([s8, same_count]) == [False]
    assert claims_plots.joined([s8]) == []


def test_far_outliers_leave_the_panel_and_the_rest_keep_its_scale():
    values = [0.01, -0.02, 0.03, 0.0, 0.015, 2.7e6]  # one IEEE mean far away
    low, high = claims_plots.outlier_limits(values)
    assert low < -0.02 and 0.03 < high < 0.1
    assert claims_plots.outlier_limits([0.01, -0.02, 0.03, 0.0, 0.015, 0.097]) is None  # a real gain stays in
    assert claims_plots.outlier_limits([0.01, -0.02, 0.03, 0.0]) is None  # nothing far: matplotlib's limits
    assert claims_plots.outlier_limits([1.0, 2.0, np.nan]) is None  # too few to tell
