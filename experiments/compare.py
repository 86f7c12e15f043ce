"""Two suite results side by side: for every dataset with rows in both, one table line per file, a
column per method, and a last line of what changed (mean difference, wins).

  python experiments/compare.py results/cpu_suite.jsonl results/cpu_rerun_tokenizer.jsonl \\
      --labels="(2, 8);authors'" --methods=ce,remax,grpo,genre2,ntl_mse,ntl_was,dist2
  python experiments/compare.py results/cpu_suite.jsonl+results/cpu_rerun_tokenizer.jsonl \\
      results/paper_suite.jsonl --labels="cpu;paper" --datasets=boston,stock --wall

A side may be several files joined by '+', read as one (a key's later rows win, as in summarize.py):
the committed `cpu` table is the first pass plus the tokenizer reruns.

A cell is the test metric of the method's row (``--metric`` rmse by default, of the ``--aggregation``
mean; point predictors carry the same numbers under every aggregation), the mean over seeds when a
file has several (a note names datasets whose seeds differ between the files); ``--wall`` appends the
launch's wall time in minutes (mean over seeds). A dataset enters when the second file has an ``ok``
row for at least one listed method (with ``--complete``: when both files have one for every listed
method); a missing or failed run, or a method with a failed seed, is "–".
Each file must hold one protocol (pass ``--protocols=a,b`` otherwise).
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)  # `python experiments/compare.py` puts experiments/, not the repository, first

from experiments.rows import latest_rows, read_rows  # noqa: E402
from experiments.summarize import split_metrics, pick_protocol  # noqa: E402
from experiments.suite import split_list  # noqa: E402
from genre_jax.methods import NAMES  # noqa: E402

HIGHER_IS_BETTER = ("r2", "spearman")


def cells(latest: dict, metric: str, aggregation: str) -> dict:
    """{(dataset, method): (metric mean over seeds, mean wall minutes, seeds)}, for the (dataset,
    method) pairs whose every seed succeeded."""
    by_key: dict = {}
    for (dataset, method, seed, _), row in latest.items():
        ok = row.get("status") == "ok"
        value = split_metrics(row.get("test"), aggregation)[metric] if ok else None
        by_key.setdefault((dataset, method), []).append((seed, value, row.get("wall_time_s", np.nan) / 60))
    return {k: (float(np.mean([v for _, v, _ in vs])), float(np.mean([w for _, _, w in vs])),
                tuple(sorted(s for s, _, _ in vs)))
            for k, vs in by_key.items() if all(v is not None for _, v, _ in vs)}


def compare(a: dict, b: dict, methods, datasets, labels, metric: str, wall: bool) -> str:
    """The markdown table of cells a and b (from ``cells``) for these datasets and methods."""
    def fmt(cell):
        if cell is None or not np.isfinite(cell[0]):
            return "–"
        return f"{cell[0]:.4f}" + (f" ({cell[1]:.0f} min)" if wall else "")

    header = ["dataset", "rows", *methods]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    diffs = {m: [] for m in methods}
    for dataset in datasets:
        for label, side in zip(labels, (a, b)):
            lines.append("| " + " | ".join([dataset, label] + [fmt(side.get((dataset, m))) for m in methods]) + " |")
        for m in methods:
            if (dataset, m) in a and (dataset, m) in b:
                diff = b[(dataset, m)][0] - a[(dataset, m)][0]
                if np.isfinite(diff):  # a metric a point predictor has no value for (crps) stays out
                    diffs[m].append(diff)
    sign = 1 if metric in HIGHER_IS_BETTER else -1

    def summary(values):
        if not values:
            return "–"
        better = sum(sign * d > 0 for d in values)
        return f"{np.mean(values):+.4f}, {better}/{len(values)} better"

    lines.append("| " + " | ".join(["mean change", f"{labels[1]} − {labels[0]}"]
                                   + [summary(diffs[m]) for m in methods]) + " |")
    return "\n".join(lines) + "\n"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("first", help="suite JSONL: the reference rows ('a.jsonl+b.jsonl': read as one)")
    parser.add_argument("second", help="suite JSONL: the rows compared with them ('+' joins files too)")
    parser.add_argument("--labels", default=None, help="two names separated by ';' (default: the file names)")
    parser.add_argument("--methods", default=None, help="comma list (default: every method of the second file)")
    parser.add_argument("--datasets", default=None, help="comma list (default: every dataset of the second file)")
    parser.add_argument("--metric", default="rmse", choices=("rmse", "mae", "r2", "spearman", "crps", "coverage_90"))
    parser.add_argument("--aggregation", default="mean", choices=("mean", "median", "greedy"))
    parser.add_argument("--protocols", default=None, help="the protocol of each file, when one holds several")
    parser.add_argument("--wall", action="store_true", help="add each run's wall time (minutes)")
    parser.add_argument("--complete", action="store_true",
                        help="only datasets where both files have an ok row for every listed method")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        labels = [s.strip() for s in args.labels.split(";")] if args.labels else \
            [os.path.basename(args.first), os.path.basename(args.second)]
        if len(labels) != 2:
            raise ValueError(f"--labels: {args.labels!r} has {len(labels)} names; expected two, separated by ';'")
        protocols = split_list(args.protocols) if args.protocols else [None, None]
        if len(protocols) != 2:
            raise ValueError(f"--protocols: {args.protocols!r}; expected one protocol per file, comma-separated")
        sides = []
        for path, protocol in zip((args.first, args.second), protocols):
            rows = []
            for part in path.split("+"):
                part_rows = read_rows(part)
                if not part_rows:
                    raise ValueError(f"{part}: no rows")
                rows += part_rows
            try:
                protocol = pick_protocol(rows, protocol)
            except ValueError as e:
                raise ValueError(f"{path}: {e}".replace("--protocol", "--protocols=<first>,<second>")) from None
            sides.append(cells(latest_rows(rows, protocol), args.metric, args.aggregation))
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    a, b = sides
    methods = split_list(args.methods) if args.methods else \
        sorted({m for _, m in b}, key=lambda m: (NAMES.index(m) if m in NAMES else len(NAMES), m))
    datasets = split_list(args.datasets) if args.datasets else \
        sorted({d for d, m in b if m in methods}, key=str.lower)
    if args.complete:
        datasets = [d for d in datasets if all((d, m) in side for side in (a, b) for m in methods)]
    unequal = sorted({d for d in datasets for m in methods if (d, m) in a and (d, m) in b and a[d, m][2] != b[d, m][2]})
    if unequal:
        print(f"note: the two files have different seeds for {', '.join(unequal)}; cells are means over each "
              f"file's own seeds", file=sys.stderr)
    print(compare(a, b, methods, datasets, labels, args.metric, args.wall), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
