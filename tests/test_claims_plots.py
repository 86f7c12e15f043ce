"""The claim studies' plots: what goes on the x-axis, which means a series' line joins."""
from experiments import claims_plots


def test_one_budget_studies_put_the_variants_last_part_on_the_x_axis():
    assert [claims_plots.level_label(v) for v in ("n4x4", "n10x3", "ieee", "lambda0p05", "reward")] == [
        "(4, 4)", "(10, 3)", "IEEE", "λ 0.05", "reward"]
    runs = [{"variant": v, "budget": "1of8"} for v in ("grpo@ieee", "remax@n2x8", "grpo@n2x8", "remax@n10x3")]
    series, x, ticks, title = claims_plots.layout(runs, runs)
    assert ticks == ["(2, 8)", "(10, 3)", "IEEE"] and title == "tokenizer (RL budget 1/8)"  # the study's order
    assert [(series(r), x(r)) for r in runs] == [("grpo", 2), ("remax", 0), ("grpo", 0), ("remax", 1)]
    lam = [{"variant": f"genre2@lambda{v}", "budget": "1of8"} for v in ("0p2", "0", "0p05")]
    assert claims_plots.layout(lam, lam)[2] == ["λ 0", "λ 0.05", "λ 0.2"]
    several = runs + [{"variant": "remax@n2x8", "budget": "1"}]
    series, x, ticks, _ = claims_plots.layout(several, several)
    assert series(several[1]) == "remax@n2x8" and x(several[-1]) == 3 and ticks[-1] == "1x"


def test_a_mean_over_fewer_runs_is_not_joined_to_its_series_line():
    rows = [{"n": 8}, {"n": 8}, {"n": 4}, {"n": 8}]
    assert claims_plots.joined(rows) == [True, True, False, True]
    assert claims_plots.joined([{"n": 3}]) == [True]
