"""Code-metric regression table: CE, ReMax, GenRe² and a pointwise head per target, from one CE.

For each target (memory, latency) runs launch.py in <workroot>/<target>: CE + GenRe², then ReMax
(phases rl,eval), then the pointwise head (phases head,eval); pairs already in that workdir's
results.json are skipped, so an interrupted run resumes. Then writes <out>.json and <out>.md:
test Spearman rho, Kendall tau and RMSE (normalized units) per method, decoders scored by the
median of their samples (the paper's prediction), the head by its point prediction.

  python experiments/code_table.py --workroot=runs/code --out=results/code_metrics
  python experiments/code_table.py --targets=memory --variant=tiny --workroot=/tmp/code   # smoke
"""
import argparse
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)  # `python experiments/code_table.py` puts experiments/, not the repository, first

from experiments.rows import method_entries  # noqa: E402
from genre_jax import methods  # noqa: E402
from genre_jax.errors import GenreError  # noqa: E402

CONFIG = os.path.join(REPO, "experiments", "configs", "code_metrics.py")


def trains_ce(chosen: list[methods.Method]) -> methods.Method | None:
    """The method whose launch trains CE too: the first that starts from it, unless ce is run before it."""
    for method in chosen:
        if method.name == methods.BASELINE:
            return None
        if method.from_ce:
            return method
    return None


def table_rows(results: dict[str, dict], names=methods.NAMES) -> list[dict]:
    """One row per (target, method of ``names``) with the test metrics of its reported aggregate."""
    rows = []
    for target, phases in results.items():
        for method in names:
            if method not in phases:
                continue
            # a point predictor's greedy aggregate is its one prediction
            agg = "greedy" if methods.METHODS[method].point_predictor else "median"
            test = phases[method]["splits"]["test"]
            rows.append({"target": target, "method": method, "aggregate": agg, **{
                k: test[agg][k] for k in ("spearman", "kendall", "rmse")}, "crps": test["distribution"]["crps"],
                "num_samples": phases[method].get("num_samples")})
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| target | method | prediction | Spearman ρ | Kendall τ | RMSE (normalized) | CRPS |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        pred = "point" if r["aggregate"] == "greedy" else f"median of {r['num_samples']}"
        lines.append(f"| {r['target']} | {r['method']} | {pred} | {r['spearman']:.4f} | {r['kendall']:.4f} | "
                     f"{r['rmse']:.4f} | {r['crps']:.4f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", default="memory,latency")
    parser.add_argument("--methods", default="genre2,remax,pointwise",
                        help="comma list, run in this order; the first that starts from CE trains it")
    parser.add_argument("--variant", default="quick")
    parser.add_argument("--workroot", default="runs/code")
    parser.add_argument("--out", default="results/code_metrics")
    parser.add_argument("--extra", default="", help="further launch.py flags, space-separated")
    args = parser.parse_args(argv)
    try:
        chosen = [methods.get(name, field="--methods") for name in args.methods.split(",")]
    except GenreError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    with_ce = trains_ce(chosen)
    results, walls = {}, {}
    for target in args.targets.split(","):
        workdir = os.path.join(args.workroot, target)
        for method in chosen:
            if method.name in method_entries(workdir):
                continue
            cmd = [sys.executable, os.path.join(REPO, "launch.py"), f"--config={CONFIG}:{target}-{args.variant}",
                   f"--workdir={workdir}", *method.launch_flags(with_ce=method is with_ce), *args.extra.split()]
            print(" ".join(cmd), flush=True)
            start = time.time()
            subprocess.run(cmd, check=True)
            walls[f"{target}/{method.name}"] = round(time.time() - start, 1)
        results[target] = method_entries(workdir)
    rows = table_rows(results, methods.with_dependencies([m.name for m in chosen]))
    print(markdown(rows))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out + ".json", "w") as f:
        json.dump({"rows": rows, "wall_time_s": walls, "variant": args.variant}, f, indent=2)
    with open(args.out + ".md", "w") as f:
        f.write(markdown(rows) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
