"""Runs one claim study (experiments/configs/claims.py): a CE model per (dataset, seed, tokenizer),
then every (variant, budget) RL run from a copy of it, appending one JSONL row per finished run.

  python experiments/claims.py --study=budget --data_dir=/path/to/talent [--datasets=a,b] [--seeds=0,1]
      [--budgets=cpu,1/8] [--variants=genre2@reward] [--out=results/claims/budget.jsonl]
      [--workroot=runs/claims] [--dry_run]

Layout: <workroot>/<study>/<dataset>/seed<k>/ce[-<tokenizer>] trains CE (row method "ce", protocol
"claims/<study>/ce[-<tokenizer>]"); each RL run gets <...>/<variant>@<budget>, starting from a copy
of that CE folder (row protocol "claims/<study>/<variant>@<budget>", method the RL method). Rows
carry test/val metrics, the RL selection record and the calibration block, like the suite's.

Resuming: a (dataset, method, seed, protocol) already in --out is skipped (failed ones too, unless
--retry_failed); a lost CE checkpoint (another machine) is retrained before its first RL run, its
row kept. Each launch writes its log to <workdir>/claims.log.
"""
from __future__ import annotations

import argparse
import math
import os
import shutil
import signal
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from experiments import launches, suite  # noqa: E402
from experiments.configs import claims as claims_config  # noqa: E402
from experiments.configs import suite_protocols as sp  # noqa: E402
from experiments.rows import append_row, read_rows  # noqa: E402
from genre_jax.errors import GenreError  # noqa: E402


def budget_epochs(budget: str, n_train: int, batch_size: int = 128, cpu_steps: int = 60) -> int:
    """RL epochs of a budget: a fraction of the paper's 100 epochs ("1/8" -> 13), or "cpu" (the cpu
    protocol's ~60 updates of 128 inputs as full epochs)."""
    if budget == "cpu":
        return max(1, math.ceil(cpu_steps * batch_size / n_train))
    num, _, den = budget.partition("/")
    try:
        fraction = float(num) / float(den or 1)
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"--budgets: {budget!r} is not 'cpu' or a fraction such as 1/8") from None
    if not 0 < fraction <= 10:
        raise ValueError(f"--budgets: {budget!r} must be a fraction in (0, 10]")
    return max(1, math.ceil(claims_config.PAPER_ROLLOUT_EPOCHS * fraction))


def rl_flags(config, method: str, budget: str, n_train: int) -> list[str]:
    epochs = budget_epochs(budget, n_train)
    updates = epochs * math.ceil(n_train / 128)
    return [f"--config.rl.method={method}", f"--config.rl.max_epochs={epochs}",
            f"--config.rl.learning_rate={config.rl_learning_rate}",
            f"--config.rl.warmup_steps={min(100, max(1, updates // 10))}", *config.rl]


def base_command(config, data_dir: str, dataset: str, seed: int, workdir: str, tokenizer: str, authors) -> list:
    cfg_path, _, variant = config.config.partition(":")
    cmd = [sys.executable, os.path.join(REPO, "launch.py"), f"--config={os.path.join(REPO, cfg_path)}:{variant}",
           f"--workdir={workdir}", f"--config.data_dir={data_dir}", f"--config.dataset={dataset}",
           f"--config.seed={seed}", *config.common]
    if tokenizer:
        return cmd + list(claims_config.TOKENIZERS[tokenizer])
    return cmd + sp.authors_overrides(authors.get(dataset), "base,digits")


def plan(config, datasets, seeds, budgets, variant_names):
    """[(dataset, seed, ce tag, variant, budget, method, tokenizer, extra flags)] in run order: one
    CE per (dataset, seed, tokenizer) before the RL runs that start from it."""
    out = []
    for dataset in datasets:
        for seed in seeds:
            for budget in budgets:
                for name in variant_names:
                    method, tokenizer, extra = config.variants[name]
                    out.append((dataset, seed, f"ce-{tokenizer}" if tokenizer else "ce", name, budget, method,
                                tokenizer, list(extra)))
    return out


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--study", default="budget", choices=claims_config.STUDIES)
    p.add_argument("--data_dir", default=sp.DEFAULT_DATA_DIR)
    p.add_argument("--datasets", default=None)
    p.add_argument("--seeds", default=None)
    p.add_argument("--budgets", default=None)
    p.add_argument("--variants", default=None, help="comma list of the study's variant names")
    p.add_argument("--out", default=None, help="JSONL (default: results/claims/<study>.jsonl)")
    p.add_argument("--workroot", default="runs/claims")
    p.add_argument("--retry_failed", action="store_true")
    p.add_argument("--dry_run", action="store_true")
    return p.parse_args(argv)


def main(argv=None, launcher=None) -> int:
    args = parse_args(argv)
    config = claims_config.get_config(args.study)
    launcher = launcher or launches.SubprocessLauncher()
    data_dir = os.path.abspath(args.data_dir)
    out = os.path.abspath(args.out or os.path.join(REPO, "results", "claims", f"{args.study}.jsonl"))
    root = os.path.join(os.path.abspath(args.workroot), args.study)
    try:
        datasets = suite.split_list(args.datasets if args.datasets is not None else config.datasets)
        seeds = [int(s) for s in suite.split_list(args.seeds if args.seeds is not None else config.seeds)]
        budgets = suite.split_list(args.budgets or config.budgets)
        names = suite.split_list(args.variants) if args.variants else list(config.variants)
        unknown = [n for n in names if n not in config.variants]
        if unknown:
            raise ValueError(f"--variants: {unknown} not in study {args.study} ({sorted(config.variants)})")
        missing = [d for d in datasets if not os.path.isfile(os.path.join(data_dir, d, "y_train.npy"))]
        if missing:
            raise ValueError(f"dataset folder(s) {missing} not in {data_dir}")
        for b in budgets:
            budget_epochs(b, 1000)
        authors = sp.read_authors_hparams(os.path.join(data_dir, "authors_hparams.csv"))
    except (GenreError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    os.makedirs(os.path.dirname(out), exist_ok=True)
    done = suite.finished_keys(read_rows(out, repair=not args.dry_run), args.retry_failed)
    sizes = {d: sp.train_size(data_dir, d) for d in datasets}
    ce_failed, printed_ce, ran, failures = set(), set(), 0, 0
    previous = signal.signal(signal.SIGTERM, launches.sigterm_as_interrupt)
    try:
        for dataset, seed, ce_tag, name, budget, method, tokenizer, extra in plan(config, datasets, seeds, budgets,
                                                                                  names):
            seed_dir = os.path.join(root, dataset, f"seed{seed}")
            ce_dir = os.path.join(seed_dir, ce_tag)
            ce_job = suite.Job(dataset, seed, "ce", f"claims/{args.study}/{ce_tag}")
            tag = f"{name}@{budget.replace('/', 'of')}"  # 1/8 -> 1of8: one folder level
            job = suite.Job(dataset, seed, method, f"claims/{args.study}/{tag}")
            if job.key in done or (dataset, seed, ce_tag) in ce_failed:
                continue
            base = lambda workdir: base_command(config, data_dir, dataset, seed, workdir, tokenizer, authors)  # noqa: E731
            if ce_dir not in printed_ce and (ce_job.key not in done or not suite.ce_checkpoint_present(ce_dir)):
                cmd = base(ce_dir) + ["--config.phases=ce,eval", *sp.budget_overrides(
                    sp_budget(config), "ce", sizes[dataset])]
                if args.dry_run:
                    print(" ".join(cmd))
                    printed_ce.add(ce_dir)
                else:
                    row = _run(launcher, ce_job, cmd, ce_dir)
                    ran += 1
                    if ce_job.key not in done:
                        append_row(out, row)
                        done.add(ce_job.key)
                    if row["status"] != "ok":
                        failures += 1
                        ce_failed.add((dataset, seed, ce_tag))
                        print(f"FAILED  {dataset} seed{seed} {ce_tag}: {row['error']}", flush=True)
                        continue
            workdir = os.path.join(seed_dir, tag)
            cmd = base(workdir) + ["--config.phases=rl,eval", *rl_flags(config, method, budget, sizes[dataset]), *extra]
            if args.dry_run:
                print(" ".join(cmd))
                continue
            if not os.path.isdir(os.path.join(workdir, "ce")):
                os.makedirs(workdir, exist_ok=True)
                shutil.copytree(os.path.join(ce_dir, "ce"), os.path.join(workdir, "ce"))
            row = _run(launcher, job, cmd, workdir)
            append_row(out, row)
            done.add(job.key)
            ran += 1
            failures += row["status"] != "ok"
            rmse = ((row.get("test") or {}).get("mean") or {}).get("rmse", float("nan"))
            print(f"{row['status']:<7} {dataset} seed{seed} {tag}: test RMSE (z) {rmse:.4f}, "
                  f"{row['wall_time_s']:.0f}s", flush=True)
    except KeyboardInterrupt:
        print(f"interrupted: {ran} launch(es) finished this time, rows in {out}; the same command resumes",
              file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(f"{ran} launch(es) this time, {failures} failed; rows in {out}")
    return 0


def sp_budget(config):
    """The cpu protocol's budget fields with this study's CE steps (for sp.budget_overrides)."""
    c = sp.get_config("cpu")
    c.budget.ce_steps = config.ce_steps
    return c


def _run(launcher, job, cmd: list, workdir: str) -> dict:
    os.makedirs(workdir, exist_ok=True)
    return suite.launch_row(job, cmd, workdir, os.path.join(workdir, "claims.log"), launcher)


if __name__ == "__main__":
    sys.exit(main())
