"""The claim-study report's other sections: against TALENT's published results, across tokenizers."""
import json

import numpy as np

from experiments import claims_plots, claims_report, claims_sections
from fakes import claim_row


def test_against_the_field_uses_published_rmse_in_original_units(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "info.json").write_text(json.dumps({"split": "talent"}))
    (tmp_path / "talent_published_rmse.csv").write_text(
        "dataset,method,rmse_mean,rmse_std\na,mlp,2.0,0\na,lightgbm,1.0,0\na,tabr,0.5,0\n")
    assert claims_sections.split_kind(str(tmp_path), "a") == "talent"
    assert claims_sections.split_kind(str(tmp_path), "b") == "resplit"  # no info.json: not claimed as TALENT's
    runs = [{"dataset": "a", "seed": 0, "variant": "genre2@reward", "budget": "1of8", "rmse_original": 1.5,
             "ce_rmse_original": 3.0},
            {"dataset": "a", "seed": 0, "variant": "genre2@reward", "budget": "1", "rmse_original": 1.4,
             "ce_rmse_original": 3.1},  # from a retrained CE: the CE line keeps the first
            {"dataset": "a", "seed": 0, "variant": "remax@n4x4", "budget": "1of8", "rmse_original": 1.0,
             "ce_rmse_original": 4.0}]  # another tokenizer's CE is a CE line of its own
    field = {f["variant"] + f["budget"]: f for f in claims_sections.against_field(runs, claims_sections.read_published(
        str(tmp_path / "talent_published_rmse.csv")))}
    assert list(field) == ["ce", "ce-n4x4", "genre2@reward1of8", "genre2@reward1", "remax@n4x41of8"]
    assert field["genre2@reward1of8"]["mlp"] == (0.75, 1, 1) and field["genre2@reward1of8"]["best"] == (3.0, 0, 1)
    assert field["ce"]["lightgbm"] == (3.0, 0, 1) and field["ce-n4x4"]["lightgbm"] == (4.0, 0, 1)


def test_robustness_across_tokenizers_uses_runs_complete_for_every_method(tmp_path):
    from experiments.configs import claims as claims_config
    toks = list(claims_config.TOKENIZERS)
    rows = []
    for d in ("a", "b"):
        for i, tok in enumerate(toks):
            rows.append(claim_row(d, 0, f"claims/tokenizer/ce-{tok}", "ce", 0.5, 0.7))
            rows.append(claim_row(d, 0, f"claims/tokenizer/remax@{tok}@1of8", "remax", 0.5 + 0.01 * i, 0.7))
            if not (d == "b" and tok == "ieee"):  # b lacks one GRPO run: b is left out for both methods
                rows.append(claim_row(d, 0, f"claims/tokenizer/grpo@{tok}@1of8", "grpo", 0.5 - 0.01 * i, 0.7))
    robust = {t["method"]: t for t in claims_sections.across_tokenizers(claims_report.paired_runs(rows))}
    assert set(robust) == {"remax", "grpo"} and robust["remax"]["runs"] == 1 and robust["remax"]["datasets"] == "a"
    assert np.isclose(robust["remax"]["mean"], 0.02) and np.isclose(robust["remax"]["worst"], 0.0)
    assert np.isclose(robust["grpo"]["worst"], -0.04) and robust["grpo"]["losing"] == 4
    assert np.isclose(robust["grpo"]["sd"], np.std([0, 0.01, 0.02, 0.03, 0.04]))
    assert "| grpo | 1 | -0.0200 | -0.0400 |" in claims_sections.tokenizer_markdown(list(robust.values()))
    more = rows + [claim_row("a", 0, f"claims/tokenizer/remax@{tok}@cpu", "remax", 0.6, 0.7) for tok in toks]
    text = claims_sections.tokenizer_markdown(claims_sections.across_tokenizers(claims_report.paired_runs(more)))
    assert "### Across tokenizers, budget cpu (~60 updates) (datasets: a)" in text and "budget 1/8" in text
    runs = claims_report.paired_runs(rows)
    claims_plots.plot(claims_report.summary(runs), str(tmp_path / "tokenizer.png"), runs)  # the one-budget layout
    assert (tmp_path / "tokenizer.png").stat().st_size > 10_000
