"""Draws a run's training curves from its per-epoch logs to one PNG:

  python experiments/plot_run.py runs/default              # -> runs/default/curves.png
  python experiments/plot_run.py runs/default --out=curves.png

One row per trained phase (every ``<phase>/log.jsonl`` in the workdir: ce, rl/<method>,
token/<method>, head/<method>). Left: the value that selects the checkpoint, train and validation
(CE loss; RL mean sampled reward, greedy reward and, with rl.selection = aggregate_rmse, validation
RMSE), with the best epoch marked. Right: the phase's other logged statistics (entropy, expert CE,
KL, |advantage|, ...) and the learning rate. For live curves use TensorBoard on
``<workdir>/tensorboard`` instead.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys

RL_MAIN, SUPERVISED_MAIN = ("reward", "greedy_reward", "rmse"), ("loss", "mse")


def read_logs(workdir: str) -> dict[str, list[dict]]:
    """{phase folder: log records} for every log.jsonl under the workdir."""
    logs = {}
    for path in sorted(glob.glob(os.path.join(workdir, "**", "log.jsonl"), recursive=True)):
        with open(path) as f:
            records = [json.loads(line) for line in f if line.strip()]
        if records:
            logs[os.path.relpath(os.path.dirname(path), workdir)] = records
    return logs


def plot(logs: dict[str, list[dict]], out: str) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(logs), 2, figsize=(11, 3.2 * len(logs)), squeeze=False)
    for (phase, records), (left, right) in zip(logs.items(), axes):
        epochs = [r["epoch"] for r in records]
        keys = [k for k in records[0] if k not in ("epoch", "lr") and not k.startswith("best_")]
        main = RL_MAIN if "val_reward" in keys else SUPERVISED_MAIN
        for key in keys:
            values = [r.get(key) for r in records]
            target = left if key.removeprefix("train_").removeprefix("val_") in main else right
            target.plot(epochs, values, marker="." if len(epochs) < 30 else None, label=key)
        best = [k for k in records[0] if k.startswith("best_")]
        if best:
            selected = best[0].removeprefix("best_")
            hits = [r["epoch"] for r in records if r.get(selected) == r.get(best[0])]
            if hits:
                left.axvline(hits[-1], color="grey", linestyle=":", label=f"best {selected}")
        if "lr" in records[0]:
            rate = right.twinx()
            rate.plot(epochs, [r["lr"] for r in records], color="black", linewidth=0.8, linestyle="--")
            rate.set_ylabel("learning rate (dashed)")
        left.set_title(f"{phase}: selection")
        right.set_title(f"{phase}: other statistics")
        for ax in (left, right):
            ax.set_xlabel("epoch")
            if ax.lines:
                ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("workdir")
    p.add_argument("--out", default=None, help="PNG path (default: <workdir>/curves.png)")
    args = p.parse_args(argv)
    logs = read_logs(args.workdir)
    if not logs:
        print(f"error: {args.workdir}: no <phase>/log.jsonl; expected a launch.py workdir", file=sys.stderr)
        return 2
    out = plot(logs, args.out or os.path.join(args.workdir, "curves.png"))
    print(f"wrote {out} ({', '.join(logs)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
