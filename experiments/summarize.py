"""Paper-style summary of a suite JSONL: a markdown table, a per-dataset CSV and plots.

  python experiments/summarize.py results/cpu_suite.jsonl --out=results/cpu_suite
  python experiments/summarize.py results/cpu_suite.jsonl --out=results/cpu_suite --workroot=runs/suite \\
      --aggregation=median --methods=ce,remax,genre2,lightgbm --tie_tol=1e-3
  python experiments/summarize.py results/a.jsonl results/b.jsonl --out=results/ab   # files read as one
  python experiments/summarize.py results/cpu_suite.jsonl results/cpu_suite_seeds.jsonl \\
      --datasets=boston,concrete_compressive_strength,weather_izmir,airfoil_self_noise,Wine_Quality_white \\
      --out=results/cpu_suite_3seeds

Outputs in --out:
  table.md          per method: mean test RMSE, MAE, R², Spearman (z units), average rank by test
                    RMSE (ties get the average rank), wins/ties/losses against --baseline (ce; a tie
                    is |ΔRMSE| < --tie_tol), the number of datasets and the launches' summed wall
                    time on them (minutes; the header gives the total over every run, failures
                    included). Only datasets where every
                    compared method succeeded for every seed enter means and ranks; the header says
                    how many and which were left out. Metrics are averaged over seeds first; with
                    several seeds a last column gives the seed spread (per-dataset sd of test RMSE,
                    averaged over datasets).
  per_dataset.csv   one line per (dataset, method): status, seeds, test metrics, RMSE sd over seeds, CRPS, coverage,
                    pinball loss, 90 % interval score, log score (exact rows; NaN where a row lacks one), val RMSE, wall time, whether the dataset is complete, and its rank there.
  r2_by_method.png, genre2_vs_ce_rmse.png, error_vs_samples.png, distribution_by_method.png;
                    a plot whose methods are absent is skipped (and said so).

--aggregation picks mean, median or greedy for the sampling methods; point predictors (pointwise,
lightgbm) carry the same numbers under every aggregation. error_vs_samples.png needs the saved
predictions <workdir>/eval/<method>/predictions_test.npz; the workdir is the row's own, or
<workroot>/<protocol>/<dataset>/seed<k> when --workroot is given.
"""
from __future__ import annotations

import argparse
import csv
import os
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)  # `python experiments/summarize.py` puts experiments/, not the repository, first

from experiments.rows import latest_rows, read_rows  # noqa: E402
from experiments.suite import split_list  # noqa: E402
from genre_jax.methods import BASELINE, FLAGSHIP, METHODS, NAMES  # noqa: E402

POINT_METRICS = ("rmse", "mae", "r2", "spearman")
# The distribution block's scores (scores.distribution_scores); rows written before pinball, interval
# and log scores existed lack them (NaN here), and sampled rows have no log score (None -> NaN).
DIST_METRICS = ("crps", "coverage_90", "pinball", "interval_score_90", "log_score")


def pick_protocol(rows, protocol: str | None) -> str:
    found = sorted({r["protocol"] for r in rows})
    if protocol is not None:
        if protocol not in found:
            raise ValueError(f"protocol {protocol!r} has no rows; the file has {found}")
        return protocol
    if len(found) != 1:
        raise ValueError(f"the file has rows of protocols {found}; pick one with --protocol")
    return found[0]


def split_metrics(split: dict | None, aggregation: str) -> dict:
    """One split's point metrics of ``aggregation`` (falling back to the mean's) with the
    distribution's CRPS, 90 % coverage, pinball loss, 90 % interval score and log score; NaN where the
    row lacks one."""
    split = split or {}
    point = split.get(aggregation) or split.get("mean") or {}
    dist = dict(split.get("distribution") or {})
    dist["interval_score_90"] = (dist.get("interval_score") or {}).get("0.9")
    return {**{m: point.get(m, np.nan) for m in POINT_METRICS},
            **{m: np.nan if dist.get(m) is None else dist[m] for m in DIST_METRICS}}


def collect(latest: dict, aggregation: str = "mean") -> dict:
    """{(dataset, method): record} with test metrics averaged over the seeds that succeeded.

    A record is "ok" only when every seed that appears for its dataset succeeded for this method.
    """
    seeds_of = {}
    for (dataset, _, seed, _) in latest:
        seeds_of.setdefault(dataset, set()).add(seed)
    groups = {}
    for (dataset, method, seed, _), row in latest.items():
        groups.setdefault((dataset, method), {})[seed] = row
    records = {}
    for (dataset, method), by_seed in groups.items():
        ok = [r for r in by_seed.values() if r.get("status") == "ok"]
        test = [split_metrics(r.get("test"), aggregation) for r in ok]
        record = {k: float(np.mean([t[k] for t in test])) if test else np.nan for k in split_metrics({}, "mean")}
        # Seed spread says which differences between methods are noise; one seed has none to give.
        record["rmse_sd"] = float(np.std([t["rmse"] for t in test], ddof=1)) if len(test) > 1 else np.nan
        record["val_rmse"] = float(np.mean([split_metrics(r.get("val"), aggregation)["rmse"] for r in ok])) \
            if ok else np.nan
        record["wall_time_s"] = float(np.mean([r.get("wall_time_s", np.nan) for r in by_seed.values()]))
        record["wall_time_total_s"] = float(np.nansum([r.get("wall_time_s", np.nan) for r in by_seed.values()]))
        complete = len(ok) == len(seeds_of[dataset])
        failed = [r for r in by_seed.values() if r.get("status") != "ok"]
        record.update(status="ok" if complete else "failed" if failed else "missing", seeds=len(ok),
                      error=failed[-1].get("error", "") if failed else "")
        records[(dataset, method)] = record
    return records


def summarize(records: dict, methods, baseline: str = BASELINE, tie_tol: float = 1e-4) -> dict:
    """Means, average ranks and wins/ties/losses over the datasets complete for all ``methods``."""
    import scipy.stats
    datasets = sorted({d for d, _ in records})
    complete = [d for d in datasets if all(records.get((d, m), {}).get("status") == "ok" for m in methods)]
    excluded = {d: [m for m in methods if records.get((d, m), {}).get("status") != "ok"]
                for d in datasets if d not in complete}
    ranks = {}
    for d in complete:
        for m, r in zip(methods, scipy.stats.rankdata([records[(d, m)]["rmse"] for m in methods], method="average")):
            ranks[(d, m)] = float(r)
    per_method = {}
    for m in methods:
        rows = [records[(d, m)] for d in complete]
        stats = {k: float(np.mean([r[k] for r in rows])) if rows else np.nan
                 for k in (*POINT_METRICS, *DIST_METRICS)}
        sds = [r["rmse_sd"] for r in rows if np.isfinite(r["rmse_sd"])]
        stats["rmse_sd"] = float(np.mean(sds)) if sds else np.nan
        stats["avg_rank"] = float(np.mean([ranks[(d, m)] for d in complete])) if complete else np.nan
        stats["datasets"] = len(complete)
        stats["wall_min"] = float(sum(records[(d, m)]["wall_time_total_s"] for d in complete)) / 60
        if baseline in methods and m != baseline:
            delta = np.array([records[(d, m)]["rmse"] - records[(d, baseline)]["rmse"] for d in complete])
            tie = np.abs(delta) < tie_tol
            stats["wins"] = int(np.sum(~tie & (delta < 0)))
            stats["ties"] = int(np.sum(tie))
            stats["losses"] = int(np.sum(~tie & (delta > 0)))
        per_method[m] = stats
    total_s = float(sum(r["wall_time_total_s"] for (_, m), r in records.items() if m in methods))
    return {"methods": list(methods), "baseline": baseline, "tie_tol": tie_tol, "datasets": datasets,
            "total_wall_h": total_s / 3600,
            "complete": complete, "excluded": excluded, "ranks": ranks, "per_method": per_method}


def format_table(summary: dict, aggregation: str, protocol: str = "", seeds=()) -> str:
    s = summary
    with_sd = any(np.isfinite(st.get("rmse_sd", np.nan)) for st in s["per_method"].values())
    n_all, n_ok = len(s["datasets"]), len(s["complete"])
    lines = [f"Test metrics in z units (train-split standardization), `{aggregation}` aggregation for sampling "
             f"methods; protocol `{protocol}`, seeds {', '.join(map(str, seeds)) or '-'}.",
             f"Means and ranks over the {n_ok} of {n_all} datasets where all {len(s['methods'])} methods "
             f"succeeded." + (" Left out: " + "; ".join(f"{d} ({', '.join(ms)})" for d, ms in
                                                        sorted(s["excluded"].items())) + "." if s["excluded"] else ""),
             f"Rank by test RMSE per dataset (1 = best, ties averaged); W/T/L against `{s['baseline']}`, "
             f"tie = |ΔRMSE| < {s['tie_tol']:g}.",
             f"Time: launch wall time summed over those datasets' runs; over every run of the listed methods, "
             f"failures included: {s['total_wall_h']:.2f} h."]
    if with_sd:
        lines.append("RMSE seed sd: each dataset's standard deviation of test RMSE over its seeds, averaged "
                     "over the datasets with more than one seed.")
    lines += ["",
              f"| method | RMSE ↓ | MAE ↓ | R² ↑ | Spearman ↑ | avg rank ↓ | W/T/L vs {s['baseline']} | datasets "
              f"| time (min) |" + (" RMSE seed sd |" if with_sd else ""),
              "|---|---|---|---|---|---|---|---|---|" + ("---|" if with_sd else "")]
    for m in s["methods"]:
        st = s["per_method"][m]
        wtl = f"{st['wins']}/{st['ties']}/{st['losses']}" if "wins" in st else "—"
        lines.append(f"| {m} | {st['rmse']:.4f} | {st['mae']:.4f} | {st['r2']:.4f} | {st['spearman']:.4f} | "
                     f"{st['avg_rank']:.2f} | {wtl} | {st['datasets']} | {st['wall_min']:.1f} |"
                     + (f" {st['rmse_sd']:.4f} |" if with_sd else ""))
    return "\n".join(lines) + "\n"


CSV_FIELDS = ("dataset", "method", "status", "seeds", "complete", "rank", "rmse", "rmse_sd", "mae", "r2", "spearman",
              *DIST_METRICS, "val_rmse", "wall_time_s", "error")


def write_per_dataset_csv(path: str, records: dict, summary: dict) -> None:
    order = {m: i for i, m in enumerate(summary["methods"])}
    complete = set(summary["complete"])
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for (d, m), rec in sorted(records.items(), key=lambda kv: (kv[0][0], order.get(kv[0][1], 99), kv[0][1])):
            writer.writerow({"dataset": d, "method": m, "complete": d in complete,
                             "rank": summary["ranks"].get((d, m), ""),
                             **{k: rec.get(k, "") for k in CSV_FIELDS if k not in ("dataset", "method", "complete",
                                                                                    "rank")}})


# ---------------------------------------------------------------------------------------------
# Plots


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")  # files only; no display on these machines
    import matplotlib.pyplot as plt
    return plt


def plot_r2(path: str, summary: dict) -> str | None:
    methods = summary["methods"]
    if not methods or not summary["complete"]:
        return "r2_by_method.png: no complete dataset"
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(4, 0.7 * len(methods) + 1), 3.5))
    values = [summary["per_method"][m]["r2"] for m in methods]
    ax.bar(methods, values, color="tab:blue")
    ax.set_ylabel("mean test R²")
    ax.set_title(f"Mean test R² over {len(summary['complete'])} datasets")
    ax.tick_params(axis="x", rotation=45)
    for i, v in enumerate(values):
        ax.annotate(f"{v:.3f}", (i, v), ha="center", va="bottom", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return None


def plot_scatter(path: str, records: dict, x_method: str = BASELINE, y_method: str = FLAGSHIP) -> str | None:
    datasets = sorted(d for d, m in records if m == y_method and records[(d, m)]["status"] == "ok"
                      and records.get((d, x_method), {}).get("status") == "ok")
    if not datasets:
        return f"{os.path.basename(path)}: no dataset where both {x_method} and {y_method} succeeded"
    plt = _pyplot()
    x = np.array([records[(d, x_method)]["rmse"] for d in datasets])
    y = np.array([records[(d, y_method)]["rmse"] for d in datasets])
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.scatter(x, y, s=18)
    hi = float(np.nanmax(np.concatenate([x, y]))) * 1.05
    ax.plot([0, hi], [0, hi], "k--", lw=1, label="y = x")
    ax.set_xlim(0, hi)
    ax.set_ylim(0, hi)
    ax.set_xlabel(f"{x_method} test RMSE (z)")
    ax.set_ylabel(f"{y_method} test RMSE (z)")
    below = int(np.sum(y < x))
    ax.set_title(f"{y_method} vs {x_method}: {below}/{len(datasets)} below y = x")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return None


def _prediction_file(row: dict, method: str, workroot: str | None) -> str:
    workdir = os.path.join(workroot, row["protocol"], row["dataset"], f"seed{row['seed']}") if workroot \
        else row.get("workdir", "")
    return os.path.join(workdir, "eval", method, "predictions_test.npz")


def error_vs_samples(latest: dict, datasets, methods, workroot: str | None, how: str = "mean") -> dict:
    """{"counts", "curves": {method: mean RMSE per count}, "greedy": {method: mean RMSE}, "runs"} over the
    (dataset, seed) pairs where every method's test predictions exist; {} when there are none."""
    from genre_jax import metrics
    pairs = sorted({(d, s) for (d, m, s, _) in latest if d in set(datasets)})
    found = []
    for d, s in pairs:
        files = {}
        for m in methods:
            row = next((r for k, r in latest.items() if k[:3] == (d, m, s)), None)
            path = _prediction_file(row, m, workroot) if row and row.get("status") == "ok" else ""
            if not path or not os.path.exists(path):
                break
            files[m] = path
        else:
            found.append(files)
    if not found:
        return {}
    loaded = []
    for files in found:
        run = {}
        for m, p in files.items():
            with np.load(p) as z:  # an NpzFile re-reads the archive on every access
                run[m] = {k: z[k] for k in ("samples_z", "greedy_z", "target_z")}
        loaded.append(run)
    max_s = min(arr["samples_z"].shape[1] for run in loaded for arr in run.values())
    counts = [2 ** i for i in range(int(np.log2(max_s)) + 1)]
    curves = {m: np.mean([[metrics.error_vs_num_samples(run[m]["samples_z"], run[m]["target_z"], counts, how)[k]
                           for k in counts] for run in loaded], axis=0) for m in methods}
    greedy = {m: float(np.mean([metrics.rmse(run[m]["greedy_z"], run[m]["target_z"]) for run in loaded]))
              for m in methods}
    return {"counts": counts, "curves": curves, "greedy": greedy, "runs": len(loaded)}


def plot_error_vs_samples(path: str, latest: dict, summary: dict, workroot: str | None) -> str | None:
    methods = [m for m in NAMES if METHODS[m].decoder and m in summary["methods"]]
    if not methods:
        return "error_vs_samples.png: no method that samples the number decoder compared"
    curves = error_vs_samples(latest, summary["complete"], methods, workroot)
    if not curves:
        return "error_vs_samples.png: no saved test predictions (eval/<method>/predictions_test.npz) found"
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for i, m in enumerate(methods):
        color = f"C{i}"
        ax.plot(curves["counts"], curves["curves"][m], "o-", color=color, label=f"{m} (mean of S)")
        ax.axhline(curves["greedy"][m], color=color, ls=":", lw=1)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("number of samples S")
    ax.set_ylabel("mean test RMSE (z)")
    ax.set_title(f"Error vs samples over {curves['runs']} runs (dotted: greedy)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return None


def plot_distribution(path: str, summary: dict) -> str | None:
    methods = summary["methods"]
    if not methods or not summary["complete"]:
        return "distribution_by_method.png: no complete dataset"
    plt = _pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(max(7, 1.2 * len(methods) + 2), 3.5))
    a.bar(methods, [summary["per_method"][m]["crps"] for m in methods], color="tab:orange")
    a.set_ylabel("mean test CRPS (z)")
    b.bar(methods, [summary["per_method"][m]["coverage_90"] for m in methods], color="tab:green")
    b.axhline(0.9, color="k", ls="--", lw=1, label="nominal 0.9")
    b.set_ylabel("90% interval coverage (test)")
    b.set_ylim(0, 1.15)
    b.legend(loc="upper right", fontsize=8)
    for ax in (a, b):
        ax.tick_params(axis="x", rotation=45)
    fig.suptitle("Distribution quality (point predictors: CRPS = MAE, coverage 0)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return None


def write_plots(out_dir: str, latest: dict, records: dict, summary: dict, workroot: str | None) -> list[str]:
    """Writes every plot it can; returns one message per skipped plot."""
    skipped = [plot_r2(os.path.join(out_dir, "r2_by_method.png"), summary),
               plot_distribution(os.path.join(out_dir, "distribution_by_method.png"), summary),
               plot_error_vs_samples(os.path.join(out_dir, "error_vs_samples.png"), latest, summary, workroot)]
    scatter = f"{FLAGSHIP}_vs_{BASELINE}_rmse.png"
    if FLAGSHIP in summary["methods"] and BASELINE in summary["methods"]:
        skipped.append(plot_scatter(os.path.join(out_dir, scatter), records))
    else:
        skipped.append(f"{scatter}: needs both {FLAGSHIP} and {BASELINE}")
    return [s for s in skipped if s]


# ---------------------------------------------------------------------------------------------
# CLI


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("jsonl", nargs="+", help="suite results file(s); several are read as one")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--aggregation", default="mean", choices=("mean", "median", "greedy"))
    parser.add_argument("--baseline", default=BASELINE)
    parser.add_argument("--tie_tol", type=float, default=1e-4)
    parser.add_argument("--methods", default=None, help="comma list (default: every method in the file)")
    parser.add_argument("--datasets", default=None, help="comma list (default: every dataset in the file)")
    parser.add_argument("--protocol", default=None, help="needed when the file holds several protocols")
    parser.add_argument("--workroot", default=None, help="suite workroot for saved predictions")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        rows = [row for path in args.jsonl for row in read_rows(path)]
        if not rows:
            raise ValueError(f"{', '.join(args.jsonl)}: no rows")
        protocol = pick_protocol(rows, args.protocol)
        latest = latest_rows(rows, protocol)
        if args.datasets:
            wanted = split_list(args.datasets)
            found = {dataset for (dataset, _, _, _) in latest}
            unknown = [d for d in wanted if d not in found]
            if unknown:
                raise ValueError(f"--datasets: {unknown} have no rows in {', '.join(args.jsonl)}")
            latest = {k: r for k, r in latest.items() if k[0] in wanted}
        present = {m for (_, m, _, _) in latest}
        methods = split_list(args.methods) if args.methods else \
            sorted(present, key=lambda m: (NAMES.index(m) if m in NAMES else len(NAMES), m))
        absent = [m for m in methods if m not in present]
        if absent:
            raise ValueError(f"method(s) {absent} have no rows; the file has {sorted(present)}")
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    records = collect(latest, args.aggregation)
    summary = summarize(records, methods, args.baseline, args.tie_tol)
    seeds = sorted({k[2] for k in latest})
    table = format_table(summary, args.aggregation, protocol, seeds)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write(table)
    write_per_dataset_csv(os.path.join(args.out, "per_dataset.csv"), records, summary)
    skipped = write_plots(args.out, latest, records, summary, args.workroot)
    print(table)
    for message in skipped:
        print(f"plot skipped: {message}")
    print(f"outputs in {os.path.abspath(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
