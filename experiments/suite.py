"""The experiment suite: every (dataset, seed, method) of a protocol, one JSON line per finished run.

  python experiments/suite.py --protocol=cpu --data_dir=/path/to/talent
  python experiments/suite.py --protocol=cpu --data_dir=/path/to/talent --datasets=boston,cpu_act \\
      --methods=ce,genre2,lightgbm --seeds=0,1 --out=results/cpu_suite.jsonl --workroot=runs/suite
  python experiments/suite.py --protocol=paper --data_dir=/path/to/talent --out=results/paper_suite.jsonl
  python experiments/summarize.py results/cpu_suite.jsonl --out=results/cpu_suite --workroot=runs/suite

Protocols, budgets and per-dataset overrides: experiments/configs/suite_protocols.py.

Each (dataset, seed) has one workdir <workroot>/<protocol>/<dataset>/seed<k>. Every method is one
subprocess: launch.py with --config.phases=<phase>,eval (LightGBM: python -m genre_jax.gbdt), its
output in <workdir>/suite_logs/<method>.log. CE runs first, so RL (remax, grpo, genre2) and
token-level (ntl_mse, ntl_was, dist2) methods all start from that one CE checkpoint; asking for one
of them adds the ce job. Heads and LightGBM do not need CE. If CE failed, its dependents get a
failed row without a launch.

After each method the suite appends ONE line to --out: dataset, method, seed, protocol, status
("ok" or "failed"), test and val metrics (every aggregation and the distribution block of
results.json), num_samples, wall_time_s (the whole launch), versions (config.json, plus the
method's own), command, workdir, and for a failure the last error line of its log.

Resuming: a (dataset, method, seed, protocol) already in --out is skipped; a failed one too, unless
--retry_failed (the new row then supersedes it). Lines are written with one append-mode write, and
an incomplete last line (the suite was killed mid-write) is cut off on start, so a killed suite
restarts without redoing finished runs and without duplicate rows. launch.py itself resumes an
interrupted phase in the workdir. A method that starts from CE in a workdir whose CE checkpoint is
gone (a cleaned workroot, another machine) while CE's row is kept retrains CE first in the same
launch (--config.phases=ce,<phase>,eval; same seed, so the same CE), and its wall time includes it.

Parallel: --workers=N runs N workdirs at once (threads that each wait on one launch at a time);
the jobs of one workdir still run in order, CE first. Rows are appended under a lock, so the file
stays one line per run. On a CPU host with a core or more per worker, each worker's launches run
under `taskset -c <its cores>` (the cores split evenly; recorded in the row's command), so their XLA
thread pools do not fight over every core; with more workers than cores they share them, and wall
times include the sharing. On a GPU host each worker owns one GPU (its launches run under
`env CUDA_VISIBLE_DEVICES=<its GPU>`, recorded in the row's command; more workers than visible
GPUs is refused); on a TPU host every launch needs all the chips, so --workers > 1 is refused.

Several machines: --shard=K/N (K from 0) runs only the (dataset, seed) workdirs whose key hashes to
K of N (sha256 of "dataset/seed" mod N: a workdir's machine depends on that workdir alone, so every
machine computes the same partition of the whole plan, CE and its RL methods stay together, and
adding a dataset later moves nothing), into <out> with ".shard-K-of-N" before its extension;
summarize.py reads the N files together (docs/accelerators.md has a SLURM and a TPU-VM recipe).

Stopping: Ctrl-C or SIGTERM stops the running launches (SIGTERM, SIGKILL after 30 s), writes no
row for them and exits with status 130 and one line; the same command then resumes.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import shlex
import glob
import hashlib
import signal
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)  # `python experiments/suite.py` puts experiments/, not the repository, first

from experiments.configs import suite_protocols as sp  # noqa: E402
from experiments.launches import (  # noqa: E402
    DeviceSlots, Launcher, SubprocessLauncher, last_error_line, read_text, run_in_parallel, sigterm_as_interrupt)
from experiments.rows import append_row, read_json, read_rows, row_key  # noqa: E402
from genre_jax import methods  # noqa: E402
from genre_jax.errors import GenreError  # noqa: E402

LAUNCH = os.path.join(REPO, "launch.py")

@dataclasses.dataclass(frozen=True)
class Job:
    dataset: str
    seed: int
    method: str
    protocol: str

    @property
    def key(self) -> tuple:
        return (self.dataset, self.method, self.seed, self.protocol)

    @property
    def workdir_key(self) -> tuple:
        """The jobs that share one workdir (and its CE checkpoint) share this."""
        return (self.dataset, self.seed, self.protocol)


def split_list(text: str) -> list[str]:
    return [s.strip() for s in str(text).split(",") if s.strip()]


def list_jobs(datasets, seeds, method_names, protocol: str) -> list[Job]:
    """Every job, dataset-major, so one workdir's CE is trained before the methods that use it."""
    ordered = methods.with_dependencies(method_names)
    return [Job(d, int(s), m, protocol) for d in datasets for s in seeds for m in ordered]


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``--shard=K/N`` -> (K, N) with 0 <= K < N; None (no sharding) for None or ""."""
    if not text:
        return None
    k, sep, n = str(text).partition("/")
    if not (sep and k.strip().isdigit() and n.strip().isdigit() and 0 <= int(k) < int(n)):
        raise ValueError(f"--shard={text}: expected K/N with 0 <= K < N, e.g. --shard=0/4")
    return int(k), int(n)


def in_shard(group: tuple, shard: tuple[int, int] | None) -> bool:
    """Whether the runs of ``group`` (dataset, seed[, CE tag]: one CE and the runs that start from it)
    belong to ``shard``. The hash reads the group alone, not the plan around it, so every machine
    assigns every group alike."""
    if shard is None:
        return True
    # sha256, not crc32: crc32 is linear over GF(2), and its low bit alone put all six of
    # (toy|toy2, seed 0-2) in one of two shards
    digest = hashlib.sha256("/".join(str(part) for part in group).encode()).digest()
    return int.from_bytes(digest[:8], "big") % shard[1] == shard[0]


def shard_path(path: str, shard: tuple[int, int] | None) -> str:
    """The row file of one shard: ``results/x.jsonl`` -> ``results/x.shard-1-of-4.jsonl``."""
    if shard is None:
        return path
    stem, ext = os.path.splitext(path)
    return f"{stem}.shard-{shard[0]}-of-{shard[1]}{ext}"


def row_files(path: str) -> list[str]:
    """``path`` and every shard file written beside it (``shard_path``), which together hold one study."""
    stem, ext = os.path.splitext(path)
    return [path] + sorted(glob.glob(glob.escape(stem) + ".shard-*-of-*" + glob.escape(ext)))


def list_datasets(data_dir: str) -> list[str]:
    """Every sub-folder of data_dir that holds a TALENT dataset (y_train.npy), sorted."""
    if not os.path.isdir(data_dir):
        raise ValueError(f"data_dir {data_dir} is not a directory")
    return sorted(n for n in os.listdir(data_dir) if os.path.isfile(os.path.join(data_dir, n, "y_train.npy")))


def workdir_for(workroot: str, job: Job) -> str:
    return os.path.join(workroot, job.protocol, job.dataset, f"seed{job.seed}")


# ---------------------------------------------------------------------------------------------
# Resuming


def finished_keys(rows, retry_failed: bool = False) -> set:
    """Keys that need no new run: succeeded ones, and failed ones unless retry_failed."""
    latest = {}
    for row in rows:
        key = row_key(row)
        if latest.get(key) != "ok":  # a success is never undone by a later failure
            latest[key] = row.get("status", "ok")
    return {k for k, status in latest.items() if status == "ok" or not retry_failed}


def pending_jobs(jobs, rows, retry_failed: bool = False) -> list[Job]:
    done = finished_keys(rows, retry_failed)
    return [j for j in jobs if j.key not in done]


# ---------------------------------------------------------------------------------------------
# One job


def ce_checkpoint_present(workdir: str) -> bool:
    """Whether the workdir holds a finished CE best checkpoint (an Orbax step folder in ce/best)."""
    best = os.path.join(workdir, methods.METHODS[methods.BASELINE].folder, "best")
    return os.path.isdir(best) and any(n.isdigit() for n in os.listdir(best))


def launch_command(job: Job, config, data_dir: str, workdir: str, python: str = sys.executable,
                   authors: dict | None = None, with_ce: bool = False) -> list[str]:
    """``with_ce``: the job starts from CE but the workdir lost its CE checkpoint (a new machine, a
    cleaned workroot) while CE's row is kept: the launch retrains CE first (same seed, same numbers)."""
    method = methods.METHODS[job.method]
    if method.phase_kind.cli is not None:  # a kind with its own command line (the LightGBM reference)
        return [python, "-m", method.phase_kind.cli, f"--data_dir={data_dir}", f"--dataset={job.dataset}",
                f"--workdir={workdir}", f"--seed={job.seed}"]
    cfg_path, _, variant = config.config.partition(":")
    cfg_path = cfg_path if os.path.isabs(cfg_path) else os.path.join(REPO, cfg_path)
    cmd = [python, LAUNCH, f"--config={cfg_path}" + (f":{variant}" if variant else ""), f"--workdir={workdir}",
           f"--config.data_dir={data_dir}", f"--config.dataset={job.dataset}", f"--config.seed={job.seed}",
           *method.launch_flags(with_ce)]
    return cmd + sp.launch_overrides(config, job.dataset, job.method, data_dir, authors)


def build_row(job: Job, workdir: str, command: list, wall_time_s: float, results: dict | None = None,
              config_json: dict | None = None, error: str | None = None, returncode: int | None = 0) -> dict:
    """The JSONL row of one finished job: metrics when ``error`` is None, else a failure row."""
    row = {"dataset": job.dataset, "method": job.method, "seed": job.seed, "protocol": job.protocol,
           "status": "ok" if error is None else "failed", "wall_time_s": round(float(wall_time_s), 2),
           "command": shlex.join(command), "workdir": workdir,
           "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    versions = dict((config_json or {}).get("versions") or {})
    if (config_json or {}).get("devices"):
        row["devices"] = config_json["devices"]  # which backend ran it: the numbers depend on it
    if error is not None:
        row.update(error=error, returncode=returncode, versions=versions)
        return row
    entry = results["phases"][job.method]
    splits = entry.get("splits", {})
    row.update(test=splits.get("test"), val=splits.get("val"), num_samples=entry.get("num_samples"),
               versions={**versions, **(entry.get("versions") or {})})
    for extra in ("selection", "calibration", "best_iteration"):
        if extra in entry:
            row[extra] = entry[extra]
    if (entry.get("stamp") or {}).get("params_digest"):
        row["params_digest"] = entry["stamp"]["params_digest"]  # which parameters these numbers are of
    return row


def run_job(job: Job, config, data_dir: str, workroot: str, launcher: Launcher, authors: dict | None = None,
            python: str = sys.executable, prefix: tuple[str, ...] = ()) -> dict:
    workdir = workdir_for(workroot, job)
    log_dir = os.path.join(workdir, "suite_logs")
    os.makedirs(log_dir, exist_ok=True)
    log_path = os.path.join(log_dir, f"{job.method}.log")
    with_ce = methods.METHODS[job.method].from_ce and not ce_checkpoint_present(workdir)
    cmd = [*prefix, *launch_command(job, config, data_dir, workdir, python, authors, with_ce)]
    return launch_row(job, cmd, workdir, log_path, launcher)


def launch_row(job: Job, cmd: list, workdir: str, log_path: str, launcher: Launcher) -> dict:
    """Runs one launch (logging to ``log_path``) and returns its row: metrics, or the failure."""
    start = time.monotonic()
    try:
        returncode = launcher(cmd, log_path, REPO)
    except OSError as e:  # no log to write, no interpreter to start: this run's failure, not the runner's
        return build_row(job, workdir, cmd, time.monotonic() - start, error=f"could not launch: {e}", returncode=None)
    wall = time.monotonic() - start
    results = read_json(os.path.join(workdir, "results.json"))
    config_json = read_json(os.path.join(workdir, "config.json"))
    if returncode != 0:
        error = last_error_line(read_text(log_path)) or f"exit code {returncode}"
        return build_row(job, workdir, cmd, wall, config_json=config_json, error=error, returncode=returncode)
    if not results or job.method not in results.get("phases", {}):
        error = f"launch exited 0 but {workdir}/results.json has no {job.method!r} entry"
        return build_row(job, workdir, cmd, wall, config_json=config_json, error=error, returncode=returncode)
    return build_row(job, workdir, cmd, wall, results, config_json)


def note_ce_row(ce_failed: dict, row: dict) -> None:
    """Updates {(dataset, seed, protocol): error} of workdirs whose latest CE row failed."""
    if row["method"] == methods.BASELINE:
        key = (row["dataset"], int(row["seed"]), row["protocol"])
        if row.get("status") == "ok":
            ce_failed.pop(key, None)
        else:
            ce_failed[key] = row.get("error", "")


def _ce_failures(rows) -> dict:
    """{(dataset, seed, protocol): error} for workdirs whose latest CE row failed."""
    out = {}
    for row in rows:
        note_ce_row(out, row)
    return out


def skipped_row(job: Job, workdir: str, command: list, ce_error: str) -> dict:
    return build_row(job, workdir, command, 0.0, error=f"not run: ce failed in this workdir ({ce_error})",
                     returncode=None)


class _RunState:
    """What the jobs share: the results file, CE failures per workdir, the progress bar (one lock)."""

    def __init__(self, out: str, ce_failed: dict, bar):
        self.out, self.ce_failed, self.bar, self.failures = out, ce_failed, bar, 0
        self.lock = threading.Lock()

    def ce_error(self, job: Job) -> str | None:
        with self.lock:
            return self.ce_failed.get(job.workdir_key)

    def record(self, job: Job, row: dict) -> None:
        with self.lock:
            append_row(self.out, row)
            note_ce_row(self.ce_failed, row)
            if row["status"] == "ok":
                rmse = ((row.get("test") or {}).get("mean") or {}).get("rmse", float("nan"))
                self.bar.write(f"ok      {job.dataset} seed{job.seed} {job.method}: test RMSE (z) {rmse:.4f}, "
                               f"{row['wall_time_s']:.0f}s")
            else:
                self.failures += 1
                self.bar.write(f"FAILED  {job.dataset} seed{job.seed} {job.method}: {row['error']}")
            self.bar.update(1)


def workdir_groups(jobs) -> list[list[Job]]:
    """Jobs grouped by workdir (dataset, seed), each group in its original order (CE first)."""
    groups: dict[tuple, list[Job]] = {}
    for job in jobs:
        groups.setdefault(job.workdir_key, []).append(job)
    return list(groups.values())


# ---------------------------------------------------------------------------------------------
# CLI


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--protocol", default="cpu", choices=sp.PROTOCOLS)
    parser.add_argument("--data_dir", default=None, help="folder of TALENT datasets (default: the protocol's)")
    parser.add_argument("--datasets", default=None, help="comma list (default: every dataset folder in data_dir)")
    parser.add_argument("--methods", default=None, help=f"comma list (default: {sp.get_config().methods})")
    parser.add_argument("--seeds", default=None, help="comma list of ints (default: the protocol's, 0)")
    parser.add_argument("--out", default=None, help="JSONL file (default: results/<protocol>_suite.jsonl)")
    parser.add_argument("--workroot", default="runs/suite")
    parser.add_argument("--workers", type=int, default=1,
                        help="workdirs (dataset, seed) run at once; on CPU each worker gets its own cores (taskset) "
                             "where there are enough, a GPU each on a GPU host")
    parser.add_argument("--retry_failed", action="store_true", help="re-run jobs whose row says failed")
    parser.add_argument("--dry_run", action="store_true", help="print the pending commands and exit")
    parser.add_argument("--shard", default=None, help="K/N: this machine's share of the plan (K from 0), by "
                        "(dataset, seed); rows go to <out> with .shard-K-of-N before its extension")
    return parser.parse_args(argv)


def main(argv=None, launcher: Launcher | None = None) -> int:
    from tqdm import tqdm
    args = parse_args(argv)
    launcher = launcher or SubprocessLauncher()
    config = sp.get_config(args.protocol)
    data_dir = os.path.abspath(args.data_dir or config.data_dir)
    workroot = os.path.abspath(args.workroot)
    out = os.path.abspath(args.out or os.path.join("results", f"{args.protocol}_suite.jsonl"))
    try:
        datasets = split_list(args.datasets if args.datasets is not None else config.datasets) \
            or list_datasets(data_dir)
        missing = [d for d in datasets if not os.path.isdir(os.path.join(data_dir, d))]
        if missing:
            raise ValueError(f"dataset folder(s) {missing} not in {data_dir}")
        seeds = [int(s) for s in split_list(args.seeds if args.seeds is not None else config.seeds)]
        shard = parse_shard(args.shard)
        jobs = [j for j in list_jobs(datasets, seeds, split_list(args.methods or config.methods), args.protocol)
                if in_shard(j.workdir_key[:2], shard)]
        out = shard_path(out, shard)
        authors_path = sp.authors_hparams_path(config, data_dir)
        authors = sp.read_authors_hparams(authors_path)
        slots = DeviceSlots(args.workers)
    except (GenreError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    without_row = [d for d in datasets if d not in authors]
    if authors_path and not os.path.exists(authors_path):
        print(f"note: no {authors_path}; every dataset uses the {config.config} defaults", file=sys.stderr)
    elif authors_path and without_row:
        print(f"note: {authors_path} has no row for {', '.join(without_row)}; those use the {config.config} "
              f"defaults", file=sys.stderr)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    rows = read_rows(out, repair=not args.dry_run)
    todo = pending_jobs(jobs, rows, args.retry_failed)
    if args.dry_run:
        for job in todo:
            workdir = workdir_for(workroot, job)
            with_ce = methods.METHODS[job.method].from_ce and not ce_checkpoint_present(workdir) \
                and not any(j.workdir_key == job.workdir_key and j.method == methods.BASELINE for j in todo)
            print(shlex.join(launch_command(job, config, data_dir, workdir, authors=authors, with_ce=with_ce)))
        print(f"{len(todo)} of {len(jobs)} jobs pending", file=sys.stderr)
        return 0
    ce_failed = _ce_failures(rows)
    bar = tqdm(total=len(jobs), initial=len(jobs) - len(todo), desc=f"suite:{args.protocol}", unit="run",
               dynamic_ncols=True)
    state = _RunState(out, ce_failed, bar)

    def run(job: Job) -> dict:
        ce_error = state.ce_error(job)
        workdir = workdir_for(workroot, job)
        if methods.METHODS[job.method].from_ce and ce_error is not None:
            return skipped_row(job, workdir, launch_command(job, config, data_dir, workdir, authors=authors), ce_error)
        return run_job(job, config, data_dir, workroot, launcher, authors, prefix=slots.prefix())

    # A scheduler's SIGTERM takes the same path as Ctrl-C: launches stopped, finished rows kept.
    previous = signal.signal(signal.SIGTERM, sigterm_as_interrupt) \
        if threading.current_thread() is threading.main_thread() else None
    try:
        if args.workers <= 1:
            for job in todo:
                bar.set_postfix_str(f"{job.dataset}/seed{job.seed}/{job.method}")
                state.record(job, run(job))
        else:
            run_in_parallel(workdir_groups(todo), run, state.record, args.workers, getattr(launcher, "stop_all", None))
    except KeyboardInterrupt:
        bar.close()
        print(f"interrupted: {bar.n - (len(jobs) - len(todo))} run(s) finished this time, rows in {out}; "
              f"the same command resumes", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    bar.close()
    print(f"{len(todo)} run(s) this time, {state.failures} failed; rows in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
