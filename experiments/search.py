"""Per-dataset hyperparameter search of the CE recipe with Optuna, as the paper's authors did it;
the best trial of each dataset becomes its row of authors_hparams.csv (source=search).

  python experiments/search.py --data_dir=/path/to/talent --datasets=boston,stock --trials=25 \\
      --out=results/search/authors_hparams.csv --storage=runs/search/optuna.journal --workroot=runs/search
  python experiments/search.py --data_dir=/path/to/talent --datasets=boston --budget=paper --dry_run
  python experiments/search.py --data_dir=/path/to/talent --datasets=boston \\
      --out=/path/to/talent/authors_hparams.csv   # straight into the file the suite reads (other rows kept)

Space, trial count and seeds: experiments/configs/search.py. Sampler: TPE, each trial's sampler
seeded from (--seed, dataset, trial number). Objective: validation R² of the mean of the sampled
predictions (results.json phases.ce.splits.val.mean.r2), maximized.

Each trial is one launch.py run, --config.phases=ce,eval, in <workroot>/<budget>/<dataset>/trial<k>
(log: search.log there), at a budget:
  cpu    the cpu suite protocol's CE: the quick variant, ~1200 optimizer steps
         (suite_protocols.budget_overrides), 32 samples;
  paper  the paper variant's CE (up to 200 epochs, patience 20), 128 samples.
The searched values reach launch.py through suite_protocols.authors_overrides, the function that
maps the CSV for the suite, so a trial trains exactly the model its row describes. A launch that
fails, or finishes without a finite validation R², is a FAIL trial with its error in the user
attribute "error"; the search goes on.

Resuming: the studies live in --storage (an Optuna journal file; a sqlite:///... URL works too),
one per (budget, dataset). The same command continues each study up to --trials finished trials
(failed ones count). A trial left RUNNING (the search was killed during it) is marked FAIL and its
parameters are enqueued as a new trial that reuses its workdir, so launch.py resumes the
interrupted training; the interrupted trial does not count. Run one search per storage at a time:
a RUNNING trial is taken to be a dead one. Trial folders that no trial of the study knows (a
deleted storage, a reused workroot) are an error rather than resumed as if they were the trial.

--out is rewritten (atomically) whenever a dataset's search has all its trials: one row per
dataset, merged with the rows already there (other datasets and columns are kept, a searched
dataset's row replaced). Ctrl-C or SIGTERM stops the running launch, exits 130 with one line, and
the same command resumes.
"""
from __future__ import annotations

import argparse
import csv
import math
import os
import re
import shlex
import signal
import sys
import tempfile
import threading
import zlib

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)  # `python experiments/search.py` puts experiments/, not the repository, first

from experiments import launches, suite  # noqa: E402
from experiments.configs import search as search_config  # noqa: E402
from experiments.configs import suite_protocols as sp  # noqa: E402
from genre_jax.errors import GenreError  # noqa: E402

try:
    import optuna
except ImportError:  # reported as one error line by main
    optuna = None

BUDGETS = ("cpu", "paper")
# authors_hparams.csv as the authors' file lays it out (suite_protocols.read_authors_hparams reads it)
COLUMNS = ("dataset", "train_size", "learning_rate", "base", "digits", "d_model", "nhead", "num_decoder_layers",
           "dim_feedforward", "mlp_hidden", "source", "authors_val_r2")
# search config field (and Optuna parameter name) -> CSV column
MODEL_COLUMNS = {"d_model": "d_model", "num_heads": "nhead", "num_layers": "num_decoder_layers",
                 "d_ff": "dim_feedforward", "mlp_hidden": "mlp_hidden"}
SEARCHED_FLAGS = ("ce.learning_rate", "tokenizer.base", "tokenizer.digits", "model.d_model", "model.num_heads",
                  "model.num_layers", "model.mlp_layers", "model.d_ff", "model.mlp_hidden")


# ---------------------------------------------------------------------------------------------
# The space


def check_space(cfg) -> None:
    low, high = (float(v) for v in cfg.learning_rate)
    if not 0 < low < high:
        raise ValueError(f"search config: learning_rate must be (low, high) with 0 < low < high, "
                         f"got {cfg.learning_rate}")
    for base, digits in cfg.tokenizers:
        if int(base) < 2 or int(digits) < 1:
            raise ValueError(f"search config: tokenizer (base, digits) ({base}, {digits}) needs base >= 2, digits >= 1")
    for field in ("tokenizers", *MODEL_COLUMNS):
        if not cfg[field]:
            raise ValueError(f"search config: {field} has no choices")
    for field in MODEL_COLUMNS:
        if any(int(v) != v or v < 1 for v in cfg[field]):
            raise ValueError(f"search config: {field} choices must be positive integers, got {cfg[field]}")
    if int(cfg.n_startup_trials) < 0:
        raise ValueError(f"search config: n_startup_trials must be >= 0, got {cfg.n_startup_trials}")


def suggest(trial, cfg) -> dict:
    """The trial's parameters: {learning_rate, tokenizer ("BxD"), d_model, num_heads, ...}."""
    # Optuna stores categorical choices as JSON scalars, so a (base, digits) pair is one "BxD" string.
    params = {"learning_rate": trial.suggest_float("learning_rate", *map(float, cfg.learning_rate), log=True),
              "tokenizer": trial.suggest_categorical("tokenizer", [f"{b}x{d}" for b, d in cfg.tokenizers])}
    for field in MODEL_COLUMNS:
        params[field] = trial.suggest_categorical(field, [int(v) for v in cfg[field]])
    return params


def csv_row(dataset: str, params: dict, n_train: int, val_r2: float | None = None) -> dict:
    """The authors_hparams.csv row of a trial's parameters."""
    base, _, digits = params["tokenizer"].partition("x")
    row = {"dataset": dataset, "train_size": str(n_train),
           # 3 significant digits as in the authors' file; the trial trains with this rounded value
           "learning_rate": f"{params['learning_rate']:.2e}", "base": base, "digits": digits,
           "source": "search", "authors_val_r2": "" if val_r2 is None else f"{val_r2:.4f}"}
    row.update({column: str(params[field]) for field, column in MODEL_COLUMNS.items()})
    return row


def make_sampler(cfg, seed: int, dataset: str, number: int):
    """TPE seeded per trial, so a resumed search suggests what an uninterrupted one would have (one
    sampler seeded once would replay its first random suggestions after every restart)."""
    entropy = np.random.SeedSequence([int(seed), zlib.crc32(dataset.encode()), int(number)])
    return optuna.samplers.TPESampler(seed=int(entropy.generate_state(1)[0]),
                                      n_startup_trials=int(cfg.n_startup_trials))


# ---------------------------------------------------------------------------------------------
# Launches


def merge_flags(cmd: list, extra) -> list:
    """cmd + extra where a later --config.x=... replaces an earlier one of the same field."""
    out = []
    for flag in [*cmd, *extra]:
        key = flag.partition("=")[0] if flag.startswith("--config.") else None
        if key is not None:
            out = [f for f in out if f.partition("=")[0] != key]
        out.append(flag)
    return out


def protocol_config(budget: str):
    """The suite protocol a budget trains CE with, taking every searched CSV column."""
    config = sp.get_config(budget)
    config.authors_columns = ""
    return config


def trial_command(cfg, budget: str, data_dir: str, dataset: str, workdir: str, row: dict | None) -> list:
    job = suite.Job(dataset, int(cfg.train_seed), "ce", f"search/{budget}")
    cmd = suite.launch_command(job, protocol_config(budget), data_dir, workdir,
                               authors={dataset: row} if row else {})
    return merge_flags(cmd, list(cfg.overrides))


def val_r2(result_row: dict) -> float | None:
    value = ((result_row.get("val") or {}).get("mean") or {}).get("r2")
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


# ---------------------------------------------------------------------------------------------
# Studies


def open_storage(spec: str, create: bool = True):
    """An Optuna storage: a URL (sqlite:///...) as is, else a journal file; None when ``create`` is
    False and the journal file does not exist (a dry run writes nothing)."""
    if "://" in spec:
        return spec
    if not os.path.exists(spec):
        if not create:
            return None
        os.makedirs(os.path.dirname(os.path.abspath(spec)), exist_ok=True)
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(spec))


def study_name(budget: str, dataset: str) -> str:
    return f"search/{budget}/{dataset}"


def open_study(storage, budget: str, dataset: str, create: bool = True):
    """The dataset's study; None when ``create`` is False and it does not exist yet."""
    name = study_name(budget, dataset)
    if storage is None or (not create and name not in optuna.get_all_study_names(storage)):
        return None
    return optuna.create_study(storage=storage, study_name=name, direction="maximize", load_if_exists=True)


def counted_trials(study) -> list:
    """Finished trials that count towards --trials: all but the interrupted ones that were re-enqueued."""
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    return [t for t in trials if t.state.is_finished() and t.number not in retried]


def requeue_interrupted(study, root: str) -> list[int]:
    """Marks RUNNING trials (their search was killed) FAIL and enqueues their parameters again, with
    their workdir so that launch.py resumes the cut training; returns their numbers."""
    out = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)
        workdir = t.user_attrs.get("workdir") or os.path.join(root, f"trial{t.number}")
        study.enqueue_trial(dict(t.params), user_attrs={"retry_of": t.number, "workdir": workdir})
        out.append(t.number)
    return out


def stray_workdirs(study, root: str) -> list[str]:
    """trial<k> folders under ``root`` that no trial of the study launched in."""
    if not os.path.isdir(root):
        return []
    trials = study.get_trials(deepcopy=False) if study is not None else []
    known = {os.path.basename(t.user_attrs["workdir"]) for t in trials if "workdir" in t.user_attrs}
    known |= {f"trial{t.number}" for t in trials}
    return sorted(n for n in os.listdir(root) if re.fullmatch(r"trial\d+", n) and n not in known)


class SpaceChanged(ValueError):
    pass


def run_trial(study, cfg, budget: str, seed: int, data_dir: str, dataset: str, root: str, n_train: int,
              launcher) -> str:
    """Asks, launches and tells one trial; returns its one-line report. An interrupt leaves the
    trial RUNNING for requeue_interrupted."""
    study.sampler = make_sampler(cfg, seed, dataset, len(study.get_trials(deepcopy=False)))
    trial = study.ask()
    try:
        params = suggest(trial, cfg)
    except ValueError as e:  # Optuna refuses a categorical space that differs from the study's trials
        trial.set_user_attr("error", str(e))
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        raise SpaceChanged(f"study {study.study_name}, trial {trial.number}: {e} (the search config's space "
                           f"differs from the one this study's trials used: restore it or use another --storage)")
    workdir = trial.user_attrs.get("workdir") or os.path.join(root, f"trial{trial.number}")
    trial.set_user_attr("workdir", workdir)
    row = csv_row(dataset, params, n_train)
    about = (f"lr {row['learning_rate']}, tokenizer {params['tokenizer']}, d_model {params['d_model']}, "
             f"heads {params['num_heads']}, layers {params['num_layers']}, d_ff {params['d_ff']}, "
             f"mlp {params['mlp_hidden']}")
    if params["d_model"] % params["num_heads"]:
        error = f"d_model {params['d_model']} is not divisible by num_heads {params['num_heads']}"
        trial.set_user_attr("error", error)
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return f"FAILED  {dataset} trial {trial.number} ({about}): {error}"
    cmd = trial_command(cfg, budget, data_dir, dataset, workdir, row)
    trial.set_user_attr("command", shlex.join(cmd))
    os.makedirs(workdir, exist_ok=True)
    job = suite.Job(dataset, int(cfg.train_seed), "ce", f"search/{budget}")
    result = suite.launch_row(job, cmd, workdir, os.path.join(workdir, "search.log"), launcher)
    value = val_r2(result) if result["status"] == "ok" else None
    if value is None:
        error = result.get("error") or f"{workdir}/results.json has no finite val mean r2"
        trial.set_user_attr("error", error)
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return f"FAILED  {dataset} trial {trial.number} ({about}): {error}"
    study.tell(trial, value)
    return f"ok      {dataset} trial {trial.number} ({about}): val R² {value:.4f}, {result['wall_time_s']:.0f}s"


def best_row(study, dataset: str, n_train: int) -> dict | None:
    complete = [t for t in counted_trials(study) if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        return None
    best = max(complete, key=lambda t: (t.value, -t.number))  # ties: the earlier trial
    return csv_row(dataset, best.params, n_train, best.value)


# ---------------------------------------------------------------------------------------------
# authors_hparams.csv


def write_rows(path: str, rows: list[dict]) -> None:
    """Merges ``rows`` into the CSV at ``path`` (a dataset's old row replaced in place, other rows and
    extra columns kept, new datasets appended) and replaces the file in one rename."""
    header, existing = list(COLUMNS), []
    if os.path.exists(path):
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            header += [c for c in reader.fieldnames or [] if c not in header]
            existing = list(reader)
    new = {r["dataset"]: r for r in rows}
    merged = [new.pop(r["dataset"], r) for r in existing] + list(new.values())
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".authors_hparams.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=header, restval="", lineterminator="\n")
            writer.writeheader()
            writer.writerows(merged)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


# ---------------------------------------------------------------------------------------------
# CLI


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_dir", default=sp.DEFAULT_DATA_DIR)
    p.add_argument("--datasets", default=None, help="comma list (default: every dataset folder in data_dir)")
    p.add_argument("--trials", type=int, default=None, help="trials per dataset (default: the search config's, 25)")
    p.add_argument("--seed", type=int, default=None, help="TPE seed (default: the search config's, 0)")
    p.add_argument("--budget", default="cpu", help=f"CE budget of a trial: {' or '.join(BUDGETS)}")
    p.add_argument("--out", default="results/search/authors_hparams.csv")
    p.add_argument("--storage", default="runs/search/optuna.journal",
                   help="Optuna journal file, or a storage URL such as sqlite:///runs/search/optuna.db")
    p.add_argument("--workroot", default="runs/search")
    p.add_argument("--dry_run", action="store_true", help="print each study's state and a trial's command")
    return p.parse_args(argv)


def main(argv=None, launcher=None) -> int:
    args = parse_args(argv)
    cfg = search_config.get_config()
    data_dir = os.path.abspath(args.data_dir)
    out = os.path.abspath(args.out)
    storage_spec = args.storage if "://" in args.storage else os.path.abspath(args.storage)
    trials = cfg.trials if args.trials is None else args.trials
    seed = cfg.seed if args.seed is None else args.seed
    try:
        if optuna is None:
            raise ValueError("optuna is not installed; pip install -r requirements.txt")
        optuna.logging.set_verbosity(optuna.logging.ERROR)  # one line per trial is printed here instead
        if args.budget not in BUDGETS:
            raise ValueError(f"--budget: {args.budget!r} is not one of {', '.join(BUDGETS)}")
        if trials < 1:
            raise ValueError(f"--trials must be at least 1, got {trials}")
        check_space(cfg)
        datasets = suite.split_list(args.datasets) if args.datasets is not None else suite.list_datasets(data_dir)
        missing = [d for d in datasets if not os.path.isfile(os.path.join(data_dir, d, "y_train.npy"))]
        if missing:
            raise ValueError(f"dataset folder(s) {missing} not in {data_dir}")
        if not datasets:
            raise ValueError(f"no datasets to search in {data_dir}")
        sp.read_authors_hparams(out)  # a malformed file to merge into stops us before hours of training
        sizes = {d: sp.train_size(data_dir, d) for d in datasets}
        storage = open_storage(storage_spec, create=not args.dry_run)
        studies = {d: open_study(storage, args.budget, d, create=not args.dry_run) for d in datasets}
        roots = {d: os.path.join(os.path.abspath(args.workroot), args.budget, d) for d in datasets}
        for d in datasets:
            stray = stray_workdirs(studies[d], roots[d])
            if stray:
                raise ValueError(f"{roots[d]} holds {', '.join(stray)}, which no trial of study "
                                 f"{study_name(args.budget, d)} in {args.storage} launched; remove them or use "
                                 f"another --workroot")
    except (GenreError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    if args.dry_run:
        for d in datasets:
            study = studies[d]
            done = len(counted_trials(study)) if study else 0
            running = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))) if study else 0
            print(f"{d}: {done} of {trials} trial(s) finished, {running} interrupted (to retry); "
                  f"{max(0, trials - done)} to run in {roots[d]}/trial<k>")
        print(shlex.join(trial_command(cfg, args.budget, data_dir, datasets[0], os.path.join(roots[datasets[0]],
                                                                                              "trial<k>"), None)))
        print(f"  + per trial: {', '.join('--config.' + f for f in SEARCHED_FLAGS)}")
        return 0

    launcher = launcher or launches.SubprocessLauncher()
    previous = signal.signal(signal.SIGTERM, launches.sigterm_as_interrupt) \
        if threading.current_thread() is threading.main_thread() else None
    ran = failed = 0
    current = None
    try:
        for d in datasets:
            study = current = studies[d]
            retried = requeue_interrupted(study, roots[d])
            if retried:
                print(f"{d}: trial(s) {', '.join(map(str, retried))} were interrupted; retrying them", flush=True)
            while len(counted_trials(study)) < trials:
                line = run_trial(study, cfg, args.budget, seed, data_dir, d, roots[d], sizes[d], launcher)
                ran += 1
                failed += line.startswith("FAILED")
                print(line, flush=True)
            current = None
            row = best_row(study, d, sizes[d])
            if row is None:
                print(f"{d}: no trial succeeded; no row written", flush=True)
                continue
            write_rows(out, [row])
            print(f"{d}: best val R² {row['authors_val_r2']} -> {out}", flush=True)
    except SpaceChanged as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if current is not None:
            requeue_interrupted(current, roots[d])
        print(f"interrupted: {ran} trial(s) finished this time; the same command resumes", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    print(f"{ran} trial(s) this time, {failed} failed; rows in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
