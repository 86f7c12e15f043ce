"""Tables and plots of a claim study's rows (experiments/claims.py): every RL run against the CE
model it started from, per (variant, budget), with 95 % bootstrap intervals over datasets
(each dataset weighs the same; its seeds are resampled within it).

  python experiments/claims_report.py results/claims/budget.jsonl --out=results/claims/budget
  python experiments/claims_report.py results/claims/expert.jsonl --out=results/claims/expert

Writes <out>.md (the table, the command and the rows it rests on; against TALENT's published
results where --data_dir has them), <out>.csv (one line per run), <out>.png (ΔR², ΔRMSE, 90 %
coverage, and CRPS and one sample's RMSE as ratios to CE, against the budget) and <out>_reliability.png (nominal vs observed coverage). Test split, the mean of the
predictive distribution (exact where the tree was enumerated). Single-sample RMSE is the RMSE of one
draw, sqrt(E[(Y - y)²]): the row's ``one_sample_rmse`` (claims.py computes it from the run's
predictions_test.npz), else that file when the workdir is still there. An RL row with a ``ce`` record
is measured against it (the CE it started from), else against its dataset's CE row. Rows written since
scores.distribution_scores also carry the 90 % interval score and the log score (exact rows only):
the table gives them columns beside CRPS when some row has them ('-' where one lacks them).
"""
from __future__ import annotations

import argparse
import collections
import csv
import math
import os
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from experiments import claims_plots, claims_sections  # noqa: E402
from experiments.configs import claims as claims_config  # noqa: E402
from experiments.configs.claims import BUDGET_LABEL, LEVELS, budget_order  # noqa: E402
from experiments.rows import one_sample_rmse, read_rows  # noqa: E402
from genre_jax import runlog  # noqa: E402


def split_tag(protocol: str) -> tuple[str, str]:
    """'claims/budget/genre2@reward@1of8' -> ('genre2@reward', '1of8'); a CE row -> ('ce…', '')."""
    tag = protocol.split("/", 2)[-1]
    variant, _, budget = tag.rpartition("@")
    return (variant, budget) if variant else (tag, "")


def metrics_of(row: dict, aggregate: str = "mean") -> dict:
    test, cal = row.get("test") or {}, row.get("calibration") or {}
    mean, dist = test.get(aggregate) or {}, test.get("distribution") or {}
    conformal = (((cal.get("conformal") or {}).get("splits") or {}).get("test") or {}).get("coverage") or {}
    tempered = ((cal.get("temperature") or {}).get("splits") or {}).get("test") or {}
    raw = ((cal.get("raw") or {}).get("test") or {}).get("coverage") or {}
    coverage = {f"cov_{kind}_{level}": cover.get(level, math.nan) for kind, cover in
                (("raw", raw), ("T", tempered.get("coverage") or {}), ("conformal", conformal)) for level in LEVELS}
    return {"r2": mean.get("r2", math.nan), "rmse": mean.get("rmse", math.nan),
            "rmse_original": mean.get("rmse_original", math.nan), **coverage,
            "cov90": dist.get("coverage_90", math.nan), "crps": dist.get("crps", math.nan),
            "cov90_T": (tempered.get("coverage") or {}).get("0.9", math.nan), "crps_T": tempered.get("crps", math.nan),
            "T": (cal.get("temperature") or {}).get("value", math.nan), "cov90_conformal": conformal.get("0.9", math.nan),
            **grid_top(cal.get("temperature") or {}),
            # pinball, interval and log scores (scores.distribution_scores): NaN on rows written before
            # them, and the log score on sampled rows (None: samples have no density)
            "pinball": _number(dist.get("pinball")), "interval_90": _number((dist.get("interval_score") or {}).get("0.9")),
            "interval_90_T": _number((tempered.get("interval_score") or {}).get("0.9")),
            "log_score": _number(dist.get("log_score")), "log_score_T": _number(tempered.get("log_score")),
            "rmse_1": row["one_sample_rmse"] if "one_sample_rmse" in row else one_sample_rmse(row.get("workdir", ""))}


# The temperature grid of the rows written before ``at_grid_top`` (calibration.TEMPERATURES then: 0.5 to 4).
OLD_GRID_TOP = 4.0


def grid_top(temperature: dict) -> dict:
    """{"T_top": T* sits at its grid's top, "T_grid_top": that top}: the row's own flag, or for rows
    written before it T* = 4, the old grid's top; False / nan where the row has no temperature fit."""
    if "value" not in temperature:
        return {"T_top": False, "T_grid_top": math.nan}
    top = float(temperature.get("grid_top", OLD_GRID_TOP))
    return {"T_top": bool(temperature.get("at_grid_top", temperature["value"] >= top)), "T_grid_top": top}


def _number(value) -> float:
    return math.nan if value is None else float(value)


def paired_runs(rows: list[dict], aggregate: str = "mean") -> list[dict]:
    """One record per finished RL row with the metrics of the CE it started from: the row's own ``ce``
    record where it has one (claims.started_from), else the CE row of its dataset, seed and CE tag."""
    ce = {}
    for r in rows:
        variant, budget = split_tag(r["protocol"])
        if not budget and r["status"] == "ok":
            ce[(r["dataset"], r["seed"], variant)] = metrics_of(r, aggregate)
    out = []
    for r in rows:
        variant, budget = split_tag(r["protocol"])
        row_base = ce.get((r["dataset"], r["seed"], claims_config.ce_tag_of(variant)))
        base = metrics_of(r["ce"], aggregate) if r.get("ce") else row_base
        if not budget or r["status"] != "ok" or base is None:
            continue
        m = metrics_of(r, aggregate)
        out.append({"dataset": r["dataset"], "seed": r["seed"], "variant": variant, "budget": budget,
                    "ce_row_r2": row_base["r2"] if row_base else math.nan,
                    "best_epoch": (r.get("selection") or {}).get("best_epoch"), "wall_s": r.get("wall_time_s"),
                    **{f"ce_{k}": v for k, v in base.items()}, **m,
                    "d_r2": m["r2"] - base["r2"], "d_rmse": m["rmse"] - base["rmse"]})
    return out


def by_group(values, groups) -> list[np.ndarray]:
    """The finite values of each group (a run's dataset), groups in first-seen order."""
    out = {}
    for x, g in zip(values, groups):
        if x is not None and np.isfinite(x):
            out.setdefault(g, []).append(x)
    return [np.asarray(v, np.float64) for v in out.values()]


def dataset_mean(values, datasets) -> float:
    """The mean over datasets of each dataset's mean over its seeds (as ``bootstrap_ci`` weighs them),
    leaving out non-finite values; nan when none is finite."""
    by = by_group(values, datasets)
    return float(np.mean([b.mean() for b in by])) if by else math.nan


def bootstrap_ci(values, num: int = 2000, seed: int = 0, groups=None) -> tuple[float, float, float]:
    """(mean, low, high): the 95 % percentile interval of the mean over resampled runs.

    With ``groups`` (each value's dataset), every dataset weighs the same however many seeds it has:
    the mean is over datasets of their mean over seeds, and the resampling has two stages (datasets,
    then each drawn dataset's seeds), because a dataset's seeds agree more with each other than with
    another dataset and are not that many independent runs. With one value per dataset it is the
    plain bootstrap, draw for draw."""
    by = by_group(values, range(len(values)) if groups is None else groups)
    if not by:
        return math.nan, math.nan, math.nan
    point = float(np.mean([b.mean() for b in by]))
    if len(by) == 1 and len(by[0]) == 1:
        return point, math.nan, math.nan
    picks = np.random.default_rng(seed).integers(0, len(by), (num, len(by)))  # stage 1: datasets
    sizes = np.array([len(b) for b in by])
    padded = np.full((len(by), sizes.max()), np.nan)
    for i, b in enumerate(by):
        padded[i, :len(b)] = b
    # stage 2: each drawn dataset's seeds, drawn again (always index 0 where a dataset has one seed)
    k = sizes[picks][..., None]  # [num, D, 1]
    draws = np.floor(np.random.default_rng(seed + 1).random((num, len(by), sizes.max())) * k).astype(int)
    drawn = padded[picks[..., None], draws]  # [num, D, K]
    means = (np.where(np.arange(sizes.max()) < k, drawn, 0.0).sum(-1) / k[..., 0]).mean(1)
    return point, float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def seed_sd(runs: list[dict], key: str = "d_r2") -> tuple[float, int]:
    """(SD, datasets): how far a new seed moves a run's ``key`` on the same dataset: the sample SD
    over seeds within each dataset run with two or more, pooled (root mean square) over those
    datasets; (nan, 0) when none has two seeds."""
    sds = [np.std(v, ddof=1) for v in by_group([r[key] for r in runs], [r["dataset"] for r in runs]) if len(v) >= 2]
    return (float(np.sqrt(np.mean(np.square(sds)))), len(sds)) if sds else (math.nan, 0)


def summary(runs: list[dict]) -> list[dict]:
    groups = {}
    for r in runs:
        groups.setdefault((r["variant"], r["budget"]), []).append(r)
    out = []
    for (variant, budget), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], budget_order(kv[0][1]))):
        row = {"variant": variant, "budget": budget, "n": len(rs), "datasets": len({r["dataset"] for r in rs}),
               "wins": sum(r["d_r2"] > 0 for r in rs)}
        datasets = [r["dataset"] for r in rs]
        for key in ("d_r2", "d_rmse"):
            row[key] = bootstrap_ci([r[key] for r in rs], groups=datasets)
        row["seed_sd"] = seed_sd(rs)
        for key in ("crps", "rmse_1"):  # as a ratio to the run's own CE (geometric mean): comparable across datasets
            logs = [math.log(r[key] / r[f"ce_{key}"]) if r[f"ce_{key}"] and r[key] / r[f"ce_{key}"] > 0 else math.nan
                    for r in rs]
            row[f"{key}_ratio"] = math.exp(dataset_mean(logs, datasets))
        coverage_keys = [k for k in rs[0] if k.startswith(("cov_", "ce_cov_"))]
        for key in ("cov90", "cov90_T", "cov90_conformal", "crps", "crps_T", "rmse_1", "ce_cov90", "ce_crps",
                    "ce_rmse_1", *coverage_keys):
            row[key] = dataset_mean([r[key] for r in rs], datasets)
        for base in (k for k in PROPER_SCORES if not k.endswith("_T")):
            # CE → RL → T* over the same datasets: rows written before a score existed lack it (often the CE's)
            keys = [k for k in (f"ce_{base}", base, f"{base}_T")
                    if any(np.isfinite(r.get(k, math.nan)) for r in rs)]  # a sampled RL run has no log score
            have = [r for r in rs if all(np.isfinite(r[k]) for k in keys)]
            for k in keys:
                row[k] = dataset_mean([r[k] for r in have], [r["dataset"] for r in have])
            row[f"{base}_datasets"] = len({r["dataset"] for r in have})
        out.append(row)
    return out


PROPER_SCORES = ("pinball", "interval_90", "interval_90_T", "log_score", "log_score_T")


def matched(runs: list[dict]) -> list[dict]:
    """Per variant run at two or more budgets: its mean ΔR² and ΔRMSE at each budget over only the
    (dataset, seed) pairs it has at every one of them, so a trend across budgets is not a change
    of datasets. Empty where no pair has them all."""
    out = []
    for variant in sorted({r["variant"] for r in runs}):
        rs = [r for r in runs if r["variant"] == variant]
        budgets = sorted({r["budget"] for r in rs}, key=budget_order)
        if len(budgets) < 2:
            continue
        pairs = set.intersection(*({(r["dataset"], r["seed"]) for r in rs if r["budget"] == b
                                     and np.isfinite(r["d_r2"]) and np.isfinite(r["d_rmse"])} for b in budgets))
        if not pairs:
            continue
        for b in budgets:
            at = [r for r in rs if r["budget"] == b and (r["dataset"], r["seed"]) in pairs]
            out.append({"variant": variant, "budget": b, "n": len(at),
                        "datasets": ", ".join(sorted({d for d, _ in pairs})),
                        **{key: dataset_mean([r[key] for r in at], [r["dataset"] for r in at])
                           for key in ("d_r2", "d_rmse")}})
    return out


def _fmt_ci(ci) -> str:
    mean, low, high = ci
    return f"{mean:+.4f}" + ("" if math.isnan(low) else f" [{low:+.4f}, {high:+.4f}]")


def epoch_hours(row: dict) -> float | None:
    """Hours the epochs of the row's run took over every launch, a resumed run's earlier ones too
    (``runlog.epoch_seconds``), or None where its workdir is not on this machine."""
    workdir = row.get("workdir")
    return runlog.epoch_seconds(workdir) / 3600 if workdir and os.path.isdir(workdir) else None


def cost(rows: list[dict]) -> dict:
    """What a study's rows cost: launches and their hours of wall time (``wall_time_s``; CE and RL,
    failed ones too; the rows of both selection rules of one launch, which share its workdir and wall
    time, once), and the rows copied from another study (``reused``: nothing launched). A run resumed
    after an interruption counts only its last launch, so this is a lower bound; for the ``read`` runs
    whose workdirs are here (each once), ``epoch_hours`` of every launch against their rows' ``read_hours``."""
    own = [r for r in rows if not r.get("reused_from")]
    out = {"launches": 0, "hours": 0.0, "reused": len(rows) - len(own), "read": 0, "read_hours": 0.0,
           "epoch_hours": 0.0}
    launches, runs = set(), {}
    for r in own:
        hours = float(r.get("wall_time_s") or 0.0) / 3600
        launch = (r.get("workdir"), hours) if r.get("workdir") else id(r)
        if launch in launches:
            continue
        launches.add(launch)
        out["launches"] += 1
        out["hours"] += hours
        if r.get("workdir"):
            runs.setdefault(r["workdir"], []).append((hours, r))
    for launched in runs.values():
        epochs = epoch_hours(launched[0][1])
        if epochs is not None:
            out["read"] += 1
            out["read_hours"] += sum(hours for hours, _ in launched)
            out["epoch_hours"] += epochs
    return out


def cost_line(rows: list[dict]) -> str:
    c = cost(rows)
    line = (f"Cost: {c['launches']} launches, {c['hours']:.2f} h of launch wall time"
            + (f" ({c['reused']} more rows copied, nothing launched)" if c["reused"] else "")
            + "; a run resumed after an interruption counts only its last launch.")
    if c["read"]:
        line += (f" For the {c['read']} runs whose workdirs were on the machine that wrote this, their epochs "
                 f"(training and validation, each launch's first-epoch compiles included; not loading, "
                 f"checkpoint writes or evaluation) over every launch took {c['epoch_hours']:.2f} h where "
                 f"their rows record {c['read_hours']:.2f} h.")
    return line


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _proper_cell(t: dict, key: str) -> str:
    """'CE → RL → T*' of a score over the datasets that have each of them some run has, '-' for one none has."""
    cells = [t.get(f"ce_{key}", math.nan), t.get(key, math.nan), t.get(f"{key}_T", math.nan)]
    have = t.get(f"{key}_datasets", t["datasets"])
    if not have:
        return "- | "
    return (" → ".join("-" if not np.isfinite(x) else f"{x:.4f}" for x in cells)
            + ("" if have == t["datasets"] else f" ({have} of {t['datasets']} datasets)") + " | ")


def per_dataset(table: list[dict], runs: list[dict], what: str, cell) -> list[str]:
    """A table's lines: one row per (dataset, seed), one column per variant and budget, ``cell(run)``."""
    lines = ["", f"Per dataset ({what}):", "", "| dataset | seed | " + " | ".join(
        f"{t['variant']} {BUDGET_LABEL.get(t['budget'], t['budget'])}" for t in table) + " |",
        "|---|---|" + "---|" * len(table)]
    for dataset, seed in sorted({(r["dataset"], r["seed"]) for r in runs}):
        match = {(r["variant"], r["budget"]): r for r in runs if (r["dataset"], r["seed"]) == (dataset, seed)}
        cells = [cell(match[t["variant"], t["budget"]]) if (t["variant"], t["budget"]) in match else "" for t in table]
        lines.append(f"| {dataset} | {seed} | " + " | ".join(cells) + " |")
    return lines


def markdown(table: list[dict], runs: list[dict], command: str, aggregate: str = "mean") -> str:
    seeds = any(t["seed_sd"][1] for t in table)  # a column only where some dataset has several seeds
    # columns only where some run has the score (rows before pinball / interval / log scores have none)
    proper = [k for k in ("interval_90", "log_score")
              if any(np.isfinite(t.get(f"{ce}{k}{tt}", math.nan)) for t in table for ce in ("", "ce_") for tt in ("", "_T"))]
    proper_head = {"interval_90": "90 % interval score: CE → RL → T* | ", "log_score": "log score: CE → RL → T* | "}
    lines = [f"Command: `{command}`", "",
             f"{len(runs)} RL runs on {len({r['dataset'] for r in runs})} datasets; test split, {aggregate} of "
             "the predictive distribution; Δ = RL − the CE it started from, averaged over datasets (each "
             "dataset's seeds first); [95 % bootstrap interval: datasets, then seeds within each, resampled]."
             + (" Seed SD: the SD of ΔR² between seeds of one dataset (pooled over the datasets with two or "
                "more), how far a new seed would move one dataset's number." if seeds else ""), "",
             "| variant | budget | runs (datasets) | ΔR² | " + ("seed SD (datasets) | " if seeds else "")
             + "ΔRMSE (z) | R² up | 90 % coverage: CE → RL → T* / conformal | CRPS: CE → RL → T* | "
             + "".join(proper_head[k] for k in proper) + "1-sample RMSE: CE → RL |",
             "|---|---|---|---|---|---|---|---|---|" + ("---|" if seeds else "") + "---|" * len(proper)]
    for t in table:
        sd, sd_n = t["seed_sd"]
        seed_cell = ("- | " if not sd_n else f"{sd:.4f} ({sd_n}) | ") if seeds else ""
        lines.append(
            f"| {t['variant']} | {BUDGET_LABEL.get(t['budget'], t['budget'])} | {t['n']} ({t['datasets']}) | "
            f"{_fmt_ci(t['d_r2'])} | {seed_cell}{_fmt_ci(t['d_rmse'])} | {t['wins']}/{t['n']} | "
            f"{t['ce_cov90']:.2f} → {t['cov90']:.2f} → {t['cov90_T']:.2f} / {t['cov90_conformal']:.2f} | "
            f"{t['ce_crps']:.4f} → {t['crps']:.4f} → {t['crps_T']:.4f} | "
            + "".join(_proper_cell(t, k) for k in proper) + f"{t['ce_rmse_1']:.4f} → {t['rmse_1']:.4f} |")
    lines += per_dataset(table, runs, "ΔR²", lambda r: f"{r['d_r2']:+.4f}")
    lines += per_dataset(table, runs, "raw test 90 % coverage, CE → RL, and the RL run's T*",
                         lambda r: f"{r['ce_cov90']:.2f} → {r['cov90']:.2f} (T* {r['T']:g})")
    at_top = [r for r in runs if r.get("T_top")]
    tops = sorted({r["T_grid_top"] for r in runs if np.isfinite(r.get("T_grid_top", math.nan))})
    if tops:
        lines += ["", (f"T* at the top of its grid ({_count(len(at_top), 'run')} of {len(runs)}; the validation CRPS "
                       "was still falling there, so the T* columns understate what tempering can do): " + "; ".join(
                           f"{r['dataset']} seed {r['seed']} {r['variant']} {BUDGET_LABEL.get(r['budget'], r['budget'])} "
                           f"(grid to {r['T_grid_top']:g})" for r in at_top) + "." if at_top else
                       f"No run's T* sits at its grid's top (grid to {', '.join(f'{t:g}' for t in tops)}).")]
    retrained = sorted({(r["dataset"], r["seed"], r["ce_row_r2"], r["ce_r2"]) for r in runs
                        if r["ce_row_r2"] != r["ce_r2"] and not math.isnan(r["ce_row_r2"])})
    if retrained:
        counts = collections.Counter((r["dataset"], r["seed"], r["ce_r2"]) for r in runs)
        lines += ["", "Runs that started from a CE retrained after its row was written (a new machine: "
                  "docs/reliability.md), each measured against the CE it started from: " + "; ".join(
                      f"{d} seed {s}: CE row R² {row:.4f}, retrained {new:.4f} ({_count(counts[d, s, new], 'run')})"
                      for d, s, row, new in retrained) + "."]
    same = matched(runs)
    if same:
        lines += ["", "The same (dataset, seed) runs at every budget of a variant (mean Δ; the table above "
                  "averages whichever datasets each budget has):", "",
                  "| variant | budget | runs | ΔR² | ΔRMSE (z) | datasets |", "|---|---|---|---|---|---|"]
        lines += [f"| {m['variant']} | {BUDGET_LABEL.get(m['budget'], m['budget'])} | {m['n']} | {m['d_r2']:+.4f} | "
                  f"{m['d_rmse']:+.4f} | {m['datasets']} |" for m in same]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("rows", nargs="+", help="the study's JSONL; several (claims.py --shard files) are read as one")
    p.add_argument("--out", required=True, help="path prefix: writes <out>.md, <out>.csv, <out>.png")
    p.add_argument("--aggregate", default="mean", choices=("mean", "median", "greedy"),
                   help="the point prediction scored (median for IEEE tokens, whose rare huge samples "
                        "dominate a mean)")
    p.add_argument("--data_dir", default=os.path.join(os.path.dirname(REPO), "shared", "datasets", "talent"),
                   help="the TALENT folder: each dataset's info.json (split kind) and talent_published_rmse.csv "
                        "(TALENT's published RMSEs); the comparison is skipped where they are absent")
    p.add_argument("--datasets", default=None,
                   help="comma list: only these datasets' rows, so that every variant is averaged over the same ones")
    args = p.parse_args(argv)
    missing = [path for path in args.rows if not os.path.exists(path)]
    if missing:
        print(f"error: {missing[0]} not found; expected a claim study's JSONL (experiments/claims.py --out)",
              file=sys.stderr)
        return 2
    rows = [row for path in args.rows for row in read_rows(path, repair=False)]
    if args.datasets:
        wanted = [d for d in args.datasets.split(",") if d]
        absent = sorted(set(wanted) - {r.get("dataset") for r in rows})
        if absent:
            print(f"error: --datasets: {absent} have no rows in {' '.join(args.rows)}", file=sys.stderr)
            return 2
        rows = [r for r in rows if r.get("dataset") in wanted]
    runs = paired_runs(rows, args.aggregate)
    if not runs:
        print(f"error: {' '.join(args.rows)} has no finished RL run with its CE row yet", file=sys.stderr)
        return 2
    table = summary(runs)
    command = (f"python experiments/claims_report.py {' '.join(os.path.relpath(p, REPO) for p in args.rows)} "
               f"--out={args.out}"
               + (f" --aggregate={args.aggregate}" if args.aggregate != "mean" else "")
               + (f" --datasets={args.datasets}" if args.datasets else ""))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    text = markdown(table, runs, command, args.aggregate)
    robust = claims_sections.across_tokenizers(runs)
    with open(args.out + ".md", "w") as f:
        f.write(text + "\n" + cost_line(rows) + "\n" + claims_sections.field_sections(runs, args.data_dir)
                + ("\n" + claims_sections.tokenizer_markdown(robust) if robust else ""))
    with open(args.out + ".csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(runs[0]))
        writer.writeheader()
        writer.writerows(runs)
    claims_plots.plot(table, args.out + ".png", runs, args.aggregate)
    claims_plots.plot_reliability(table, args.out + "_reliability.png")
    print(text.split("\n\nPer dataset")[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
