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
CONFIG = os.path.join(REPO, "experiments", "configs", "code_metrics.py")
# method -> launch.py overrides (CE comes with the first RL method)
METHODS = {
    "genre2": ["--config.phases=ce,rl,eval", "--config.rl.method=genre2"],
    "remax": ["--config.phases=rl,eval", "--config.rl.method=remax"],
    "pointwise": ["--config.phases=head,eval", "--config.head.method=pointwise"],
}
ROW_METHODS = ("ce", "remax", "genre2", "pointwise")


def _results(workdir: str) -> dict:
    path = os.path.join(workdir, "results.json")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)["phases"]


def table_rows(results: dict[str, dict]) -> list[dict]:
    """One row per (target, method) with the test metrics of its reported aggregate."""
    rows = []
    for target, phases in results.items():
        for method in ROW_METHODS:
            if method not in phases:
                continue
            agg = "greedy" if method == "pointwise" else "median"  # a head's greedy = its point prediction
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", default="memory,latency")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--variant", default="quick")
    parser.add_argument("--workroot", default="runs/code")
    parser.add_argument("--out", default="results/code_metrics")
    parser.add_argument("--extra", default="", help="further launch.py flags, space-separated")
    args = parser.parse_args()
    results, walls = {}, {}
    for target in args.targets.split(","):
        workdir = os.path.join(args.workroot, target)
        for method in args.methods.split(","):
            if method in _results(workdir):
                continue
            cmd = [sys.executable, os.path.join(REPO, "launch.py"), f"--config={CONFIG}:{target}-{args.variant}",
                   f"--workdir={workdir}", *METHODS[method], *args.extra.split()]
            print(" ".join(cmd), flush=True)
            start = time.time()
            subprocess.run(cmd, check=True)
            walls[f"{target}/{method}"] = round(time.time() - start, 1)
        results[target] = _results(workdir)
    rows = table_rows(results)
    print(markdown(rows))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out + ".json", "w") as f:
        json.dump({"rows": rows, "wall_time_s": walls, "variant": args.variant}, f, indent=2)
    with open(args.out + ".md", "w") as f:
        f.write(markdown(rows) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
