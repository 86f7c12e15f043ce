"""The claim-study report's sections beside its main table (experiments/claims_report.py): the
decoders against TALENT's published, tuned results, and robustness across tokenizers (the tokenizer
study). Each takes the paired runs of ``claims_report.paired_runs``."""
from __future__ import annotations

import csv
import json
import math
import os

import numpy as np

from experiments.configs import claims as claims_config
from experiments.configs.claims import BUDGET_LABEL, budget_order

FIELD = ("mlp", "lightgbm")  # TALENT's published methods the decoders are set against, beside the best


def read_published(path: str) -> dict[str, dict[str, float]]:
    """{dataset: {method: mean test RMSE (original units)}} from TALENT's published results."""
    if not path or not os.path.exists(path):
        return {}
    out = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            out.setdefault(row["dataset"], {})[row["method"]] = float(row["rmse_mean"])
    return out


def split_kind(data_dir: str, dataset: str) -> str:
    """'talent' (TALENT's own split files) or 'resplit' (info.json's split field; unknown = resplit)."""
    try:
        with open(os.path.join(data_dir, dataset, "info.json")) as f:
            return "talent" if json.load(f).get("split") == "talent" else "resplit"
    except (OSError, ValueError):
        return "resplit"


def against_field(runs: list[dict], published: dict) -> list[dict]:
    """Per (variant, budget) and for CE: median ratio of our test RMSE to TALENT's MLP, LightGBM and
    best published method, with how many datasets we beat each on."""
    groups = {}
    for r in runs:
        groups.setdefault((r["variant"], r["budget"]), {})[(r["dataset"], r["seed"])] = r["rmse_original"]
        # a CE per tokenizer; of two trainings of one CE (a retrained checkpoint), the first seen
        groups.setdefault((claims_config.ce_tag_of(r["variant"]), ""), {}).setdefault((r["dataset"], r["seed"]), r["ce_rmse_original"])
    out = []
    for (variant, budget), ours in sorted(groups.items(), key=lambda kv: (not kv[0][0].startswith("ce"), kv[0][0], budget_order(kv[0][1]))):
        row = {"variant": variant, "budget": budget}
        for name in (*FIELD, "best"):
            ratios = [value / (min(published[d].values()) if name == "best" else published[d][name])
                      for (d, _), value in ours.items() if d in published and (name == "best" or name in published[d])]
            row[name] = (float(np.median(ratios)) if ratios else math.nan, sum(x < 1 for x in ratios), len(ratios))
        out.append(row)
    return out


def field_markdown(field: list[dict]) -> str:
    lines = ["Against TALENT's published, tuned results (test RMSE in original units; ratio < 1: ours is "
             "lower; median over datasets x seeds; beaten = ours lower):", "",
             "| model | budget | vs MLP: median ratio (beaten) | vs LightGBM | vs best published |", "|---|---|---|---|---|"]
    for f in field:
        cells = [f"{f[n][0]:.3f} ({f[n][1]}/{f[n][2]})" for n in (*FIELD, "best")]
        lines.append(f"| {f['variant']} | {BUDGET_LABEL.get(f['budget'], f['budget']) or '-'} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def field_sections(runs: list[dict], data_dir: str) -> str:
    """Markdown: against the field, one section per split kind that has published results for its
    datasets ('' where --data_dir has none): TALENT's own splits apart from our re-splits."""
    published = read_published(os.path.join(data_dir, "talent_published_rmse.csv"))
    splits = {d: split_kind(data_dir, d) for d in {r["dataset"] for r in runs}}
    text = ""
    for kind, title in (("talent", "datasets with TALENT's own split files"),
                        ("resplit", "re-split datasets (same data, another split: indicative only)")):
        field = against_field([r for r in runs if splits[r["dataset"]] == kind], published)
        if any(not math.isnan(f[n][0]) for f in field for n in FIELD):
            text += f"\n### Against the field: {title}\n\n" + field_markdown(field)
    return text


def across_tokenizers(runs: list[dict]) -> list[dict]:
    """Robustness to the tokenization (the tokenizer study): per method and budget, ΔR² over every
    tokenizer of claims_config.TOKENIZERS on the (dataset, seed) runs that every method has with all
    of them: the mean, the worst, the spread (population SD over tokenizers, averaged over runs) and
    how many (run, tokenizer) pairs lose R² to their CE. Per run too, in ``per_run``."""
    tokenizers = set(claims_config.TOKENIZERS)
    by = {}
    for r in runs:
        method, _, tok = r["variant"].rpartition("@")
        if tok in tokenizers and np.isfinite(r["d_r2"]):
            by.setdefault((method, r["budget"]), {}).setdefault((r["dataset"], r["seed"]), {})[tok] = r["d_r2"]
    out = []
    for budget in sorted({b for _, b in by}, key=budget_order):
        methods = sorted(m for m, b in by if b == budget)
        shared = set.intersection(*({k for k, v in by[(m, budget)].items() if set(v) == tokenizers} for m in methods))
        for method in methods:
            per_run = {k: by[(method, budget)][k] for k in sorted(shared)}
            if not per_run:
                continue
            values = [list(v.values()) for v in per_run.values()]
            out.append({"method": method, "budget": budget, "runs": len(per_run),
                        "datasets": ", ".join(sorted({d for d, _ in per_run})),
                        "mean": float(np.mean(values)), "worst": float(np.min(values)),
                        "sd": float(np.mean([np.std(v) for v in values])),
                        "losing": sum(x < 0 for v in values for x in v), "pairs": sum(len(v) for v in values),
                        "per_run": {k: (float(np.mean(list(v.values()))), float(min(v.values())),
                                        float(np.std(list(v.values())))) for k, v in per_run.items()}})
    return out


def tokenizer_markdown(robust: list[dict]) -> str:
    """One section per budget: the summary, then each run's mean / worst / SD across tokenizers."""
    lines = []
    for budget in dict.fromkeys(t["budget"] for t in robust):
        at = [t for t in robust if t["budget"] == budget]
        lines += [f"### Across tokenizers, budget {BUDGET_LABEL.get(budget, budget)} (datasets: {at[0]['datasets']})", "",
                  "| method | runs | mean ΔR² | worst ΔR² | SD across tokenizers | pairs losing R² |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {t['method']} | {t['runs']} | {t['mean']:+.4f} | {t['worst']:+.4f} | {t['sd']:.4f} | "
                  f"{t['losing']}/{t['pairs']} |" for t in at]
        lines += ["", "Per run (mean / worst / SD of ΔR² across tokenizers):", "",
                  "| dataset | seed | " + " | ".join(t["method"] for t in at) + " |", "|---|---|" + "---|" * len(at)]
        for key in at[0]["per_run"]:
            lines.append(f"| {key[0]} | {key[1]} | " + " | ".join(
                "{:+.3f} / {:+.3f} / {:.3f}".format(*t["per_run"][key]) for t in at) + " |")
        lines.append("")
    return "\n".join(lines)
