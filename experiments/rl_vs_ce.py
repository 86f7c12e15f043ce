"""CE vs RL fine-tuning (ReMax, GenRe²) from the same CE checkpoint on a few datasets.

Runs launch.py once per (dataset, method) in <workroot>/<dataset>: the first method trains CE,
later ones reuse it. Finished (dataset, method) pairs are skipped, so an interrupted run resumes.
Prints a markdown table of test RMSE (z units) and writes <workroot>/summary.json.

  python experiments/rl_vs_ce.py --data_dir=/path/to/talent \\
      --datasets=cpu_act:3,airfoil_self_noise:15,concrete_compressive_strength:20 --methods=remax,genre2
(the number after a dataset is its RL epoch budget: about 120 RL steps each at batch 128.)
"""
import argparse
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)  # `python experiments/rl_vs_ce.py` puts experiments/, not the repository, first

from experiments.rows import method_entries  # noqa: E402
from genre_jax import methods  # noqa: E402
from genre_jax.errors import GenreError  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", default="")
    parser.add_argument("--datasets", default="cpu_act:3")
    parser.add_argument("--methods", default="remax,genre2")
    parser.add_argument("--workroot", default="runs/rl_vs_ce")
    parser.add_argument("--config", default=os.path.join(REPO, "experiments", "configs", "tabular.py"))
    parser.add_argument("--extra", default="", help="further launch.py flags, space-separated")
    args = parser.parse_args()
    try:
        chosen = [methods.get(name, kind="rl", field="--methods") for name in args.methods.split(",")]
    except GenreError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    summary = {}
    for item in args.datasets.split(","):
        name, _, epochs = item.partition(":")
        workdir = os.path.join(args.workroot, name)
        for method in chosen:
            if method.name not in method_entries(workdir):
                cmd = [sys.executable, os.path.join(REPO, "launch.py"), f"--config={args.config}",
                       f"--workdir={workdir}", f"--config.data_dir={args.data_dir}", f"--config.dataset={name}",
                       *method.launch_flags(with_ce=True), *args.extra.split()]
                if epochs:
                    cmd.append(f"--config.rl.max_epochs={epochs}")
                print(" ".join(cmd), flush=True)
                subprocess.run(cmd, check=True)
            summary[name] = method_entries(workdir)
    rows = ["| dataset | method | test RMSE mean | test RMSE median | test RMSE greedy | test R² mean | CRPS | "
            "coverage 90% |", "|---|---|---|---|---|---|---|---|"]
    for name, phases in summary.items():
        for method in [methods.BASELINE, *(m.name for m in chosen)]:
            test = phases[method]["splits"]["test"]
            rows.append(f"| {name} | {method} | {test['mean']['rmse']:.4f} | {test['median']['rmse']:.4f} | "
                        f"{test['greedy']['rmse']:.4f} | {test['mean']['r2']:.4f} | "
                        f"{test['distribution']['crps']:.4f} | {test['distribution']['coverage_90']:.3f} |")
    print("\n".join(rows))
    with open(os.path.join(args.workroot, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
