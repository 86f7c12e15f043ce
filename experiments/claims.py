"""Runs one claim study (experiments/configs/claims.py): a CE model per (dataset, seed, tokenizer),
then every (variant, budget) RL run from a copy of it, appending one JSONL row per finished run.

  python experiments/claims.py --study=budget --data_dir=/path/to/talent [--datasets=a,b] [--seeds=0,1]
      [--budgets=cpu,1/8] [--variants=genre2@reward] [--out=results/claims/budget.jsonl]
      [--workroot=runs/claims] [--workers=N] [--dry_run]

Layout: <workroot>/<study>/<dataset>/seed<k>/ce[-<tokenizer>] trains CE (row method "ce", protocol
"claims/<study>/ce[-<tokenizer>]"); each RL run gets <...>/<variant>@<budget>, starting from a copy
of that CE folder (row protocol "claims/<study>/<variant>@<budget>", method the RL method; a
token-level variant the same way, with the RL recipe's optimizer for the same updates). A paired
variant (``config.paired``: the other selection rule of the same run) gets its row from its source
variant's run, from the results entry "<method>@<rule>", where both rows are pending. Rows
carry test/val metrics, the RL selection record and the calibration block, like the suite's, plus the
one-sample RMSE (``one_sample_rmse``) and, for an RL run, the CE it started from (``ce``: its digest,
metrics, calibration, one-sample RMSE and versions, CPU included), which the report measures the
run's gain against: a retrained CE (below) writes no row, and need not equal its row's training.

Resuming: a (dataset, method, seed, protocol) already in --out is skipped (failed ones too, unless
--retry_failed; a failed CE also holds back its RL runs); a lost CE checkpoint (another machine) is
retrained before its first RL run, its row kept; a CE counts as there only once its results.json
has its entry (a stopped training keeps a best checkpoint that is not yet the CE). Each launch writes
its log to <workdir>/claims.log.
A launch that cannot start, or a CE checkpoint that cannot be copied (a full disk), is that run's
failed row, not the end of the runner.

Reuse: a study whose config names ``reuse_from`` (the expert study: the budget study) copies that
study's finished CE (row and checkpoint) instead of training one, and then the runs it declares the
same (``reuse``) instead of launching them; each copied row names its source in ``reused_from``.

Opt-in variants (the config's ``opt_in``, a pilot) are planned only where --variants names them.

Order and parallelism: every pending CE first, then the RL runs, each stage --workers launches at a
time (the RL runs of one CE are independent: each copies it). On a GPU host each worker owns one GPU
(`env CUDA_VISIBLE_DEVICES=<gpu>`, as in the suite); on a TPU host --workers > 1 is refused; on CPU
each worker gets its own cores (`taskset -c`, as in the suite) where there are enough. Ctrl-C or
SIGTERM stops the running launches (they write no row) and the same command resumes.

Each run's command line, budget and plan: experiments/claims_commands.py.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import threading
from typing import NamedTuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from experiments import claims_commands as commands  # noqa: E402
from experiments import launches, suite  # noqa: E402
from experiments.configs import claims as claims_config  # noqa: E402
from experiments.configs import suite_protocols as sp  # noqa: E402
from experiments.rows import append_row, method_entries, one_sample_rmse, read_json, read_rows, row_key  # noqa: E402
from genre_jax import methods  # noqa: E402
from genre_jax.errors import GenreError  # noqa: E402


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
    p.add_argument("--workers", type=int, default=1,
                   help="launches at once (a GPU each on a GPU host, its own cores on CPU)")
    p.add_argument("--retry_failed", action="store_true")
    p.add_argument("--dry_run", action="store_true")
    p.add_argument("--shard", default=None, help="K/N: this machine's share of the study (K from 0), by (dataset, "
                   "seed, CE), as experiments/suite.py --shard; rows go to <out> with .shard-K-of-N before .jsonl")
    return p.parse_args(argv)


class Launch(NamedTuple):
    job: suite.Job
    cmd: list
    workdir: str
    group: tuple  # (dataset, seed, CE tag): the CE an RL launch starts from
    new_row: bool = True  # False: a CE retrained for a lost checkpoint, whose row is kept
    reuse: dict | None = None  # the source study's finished row of the same run: copied, nothing launched
    also: tuple = ()  # ((job, results entry), ...): the paired variants' rows this run writes too


def source_rows(config, out: str) -> dict:
    """{(dataset, seed, tag): ok row} of the study ``config.reuse_from`` (its JSONL beside ``out``)."""
    if not config.get("reuse_from"):
        return {}
    path = os.path.join(os.path.dirname(out), f"{config.reuse_from}.jsonl")
    return {(r["dataset"], int(r["seed"]), r["protocol"].split("/", 2)[-1]): r
            for p in suite.row_files(path) for r in read_rows(p) if r.get("status") == "ok"}


def reused_row(row: dict, job: suite.Job) -> dict:
    """The source study's row as this study's: its own protocol and method, the source named."""
    return {**row, "method": job.method, "protocol": job.protocol, "reused_from": row["protocol"]}


def ce_finished(workdir: str) -> bool:
    """A CE trained and evaluated to the end: its checkpoint and its results.json entry (written last;
    a stopped CE training keeps its best checkpoint so far, which is not the CE)."""
    return suite.ce_checkpoint_present(workdir) and "ce" in method_entries(workdir)


def copy_ce(source_workdir: str, workdir: str, whole: bool = False) -> None:
    """<source_workdir>/ce to <workdir>/ce, replacing what is there, through a temporary sibling: an
    interrupted copy leaves no half-copied checkpoint behind to be taken for a finished one. ``whole``
    (a CE copied from another study) also copies its config.json, then its results.json, the CE's
    record, last: ``ce_finished`` holds only once everything is there."""
    final = os.path.join(workdir, "ce")
    partial = final + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(os.path.join(source_workdir, "ce"), partial)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(partial, final)
    for name in ("config.json", "results.json") if whole else ():
        shutil.copyfile(os.path.join(source_workdir, name), os.path.join(workdir, name + ".partial"))
        os.replace(os.path.join(workdir, name + ".partial"), os.path.join(workdir, name))


def copy_error(source_workdir: str, workdir: str, whole: bool = False) -> str | None:
    """copy_ce, returning what went wrong (a full disk, a source checkpoint gone) instead of raising:
    the launch's row then says so, where a traceback would end the runner."""
    try:
        copy_ce(source_workdir, workdir, whole)
    except OSError as e:
        return f"could not copy the CE checkpoint from {source_workdir}/ce: {e}"
    return None


def pending(args, config, data_dir: str, root: str, rows: list, sources: dict | None = None):
    """(CE launches, RL launches, groups skipped because their CE failed) still to run, in plan order.

    A CE runs only for a pending RL run: when its row is missing, or its checkpoint is (another
    machine). A CE whose latest row failed skips its RL runs (``--retry_failed`` retries it). With
    ``config.reuse_from`` (``sources``: ``source_rows``) a CE the source study has finished, with its
    checkpoint, is copied rather than trained, and then the RL runs the study declares the same as
    the source's are copied rather than launched: a copied row always sits on a copied CE."""
    sources = sources or {}
    reuse = dict(config.get("reuse") or {})
    done = suite.finished_keys(rows, args.retry_failed)
    latest = {}
    for row in rows:
        latest[row_key(row)] = row
    datasets = suite.split_list(args.datasets if args.datasets is not None else config.datasets)
    seeds = [int(s) for s in suite.split_list(args.seeds if args.seeds is not None else config.seeds)]
    budgets = suite.split_list(args.budgets or config.budgets)
    opt_in = set(config.get("opt_in") or ())  # run only when --variants names them (a pilot)
    names = suite.split_list(args.variants) if args.variants else [n for n in config.variants if n not in opt_in]
    unknown = [n for n in names if n not in config.variants]
    if unknown:
        raise ValueError(f"--variants: {unknown} not in study {args.study} ({sorted(config.variants)})")
    missing = [d for d in datasets if not os.path.isfile(os.path.join(data_dir, d, "y_train.npy"))]
    if missing:
        raise ValueError(f"dataset folder(s) {missing} not in {data_dir}")
    for b in budgets:
        commands.budget_epochs(b, 1000)
    authors = sp.read_authors_hparams(os.path.join(data_dir, "authors_hparams.csv"))
    sizes = {d: sp.train_size(data_dir, d) for d in datasets}
    groups, rl_launches, skipped, seen = {}, [], [], set()
    shard = suite.parse_shard(getattr(args, "shard", None))
    for dataset, seed, ce_tag, name, budget, method, tokenizer, extra in commands.plan(config, datasets, seeds, budgets, names):
        if not suite.in_shard((dataset, seed, ce_tag), shard):  # a CE and every run from it on one machine
            continue
        tag = f"{name}@{claims_config.budget_tag(budget)}"
        job = suite.Job(dataset, seed, method, f"claims/{args.study}/{tag}")
        if job.key in done or job.key in seen:
            continue
        seen.add(job.key)
        seed_dir = os.path.join(root, dataset, f"seed{seed}")
        group = (dataset, seed, ce_tag)
        base = lambda workdir: commands.base_command(config, data_dir, dataset, seed, workdir, tokenizer, authors)  # noqa: E731
        why = commands.refusal(method, base(seed_dir) + extra)
        if why is not None:
            print(f"left out {dataset} seed{seed} {tag}: {why}", file=sys.stderr)
            continue
        if group not in groups:
            ce_job = suite.Job(dataset, seed, "ce", f"claims/{args.study}/{ce_tag}")
            ce_row = latest.get(ce_job.key)
            if ce_row is not None and ce_row.get("status") != "ok" and not args.retry_failed:
                skipped.append(group)
            source = sources.get((dataset, seed, reuse[ce_tag])) if ce_tag in reuse else None
            if source is not None and not ce_finished(source["workdir"]):
                source = None
            copied = source is not None and (ce_job.key not in done or bool(ce_row.get("reused_from")))
            ce_dir = os.path.join(seed_dir, ce_tag)
            cmd = base(ce_dir) + ["--config.phases=ce,eval",
                                  *sp.budget_overrides(commands.sp_budget(config), "ce", sizes[dataset])]
            groups[group] = {"launch": Launch(ce_job, cmd, ce_dir, group, ce_job.key not in done,
                                              source if copied else None),
                             "needs_checkpoint": False}
        if group in skipped:
            continue
        ce = groups[group]
        workdir = os.path.join(seed_dir, tag)
        cmd = base(workdir) + [*commands.run_flags(config, method, budget, sizes[dataset]), *extra]
        source = (sources.get((dataset, seed, f"{reuse[name]}@{claims_config.budget_tag(budget)}"))
                  if name in reuse and ce["launch"].reuse is not None else None)
        rl_launches.append(Launch(job, cmd, workdir, group, reuse=source))
        ce["needs_checkpoint"] |= source is None
    rl_launches = with_pairs(config, rl_launches)
    ce_launches = [g["launch"] for key, g in groups.items() if key not in skipped and (
        g["launch"].new_row or (g["needs_checkpoint"] and not ce_finished(g["launch"].workdir)))]
    return ce_launches, rl_launches, skipped


def with_pairs(config, launches_: list) -> list:
    """The launches with each paired variant (``config.paired``) folded into its source variant's
    launch of the same dataset, seed and budget, where that one runs too (not copied from another
    study): one run, both rows. A paired variant whose source is not launched keeps its own run."""
    paired = dict(config.get("paired") or {})
    by_tag = {(l.job.dataset, l.job.seed, l.job.protocol): i for i, l in enumerate(launches_) if l.reuse is None}
    folded, out = {}, list(launches_)
    for i, launch in enumerate(launches_):
        study, _, tag = launch.job.protocol.rpartition("/")
        name, _, budget = tag.rpartition("@")
        if name not in paired or launch.reuse is not None:
            continue
        source, rule = paired[name]
        j = by_tag.get((launch.job.dataset, launch.job.seed, f"{study}/{source}@{budget}"))
        if j is not None:
            folded.setdefault(j, []).append((launch.job, f"{launch.job.method}@{rule}"))
            out[i] = None
    for j, pairs in folded.items():
        out[j] = out[j]._replace(also=out[j].also + tuple(pairs))
    return [l for l in out if l is not None]


def paired_rows(launch: Launch, row: dict) -> list[dict]:
    """The rows of ``launch.also`` from the same run: its failure, or each entry's metrics."""
    out = []
    for job, entry in launch.also:
        if row["status"] != "ok":
            out.append({**row, "method": job.method, "protocol": job.protocol})
            continue
        results = read_json(os.path.join(launch.workdir, "results.json")) or {}
        phases = results.get("phases") or {}
        if entry not in phases:
            out.append(suite.build_row(job, launch.workdir, launch.cmd, row["wall_time_s"], error=(
                f"launch exited 0 but {launch.workdir}/results.json has no {entry!r} entry"),
                config_json=read_json(os.path.join(launch.workdir, "config.json"))))
            continue
        view = {**results, "phases": {job.method: phases[entry]}}  # the entry, read as the method's
        paired = suite.build_row(job, launch.workdir, launch.cmd, row["wall_time_s"], view,
                                 read_json(os.path.join(launch.workdir, "config.json")))
        paired.update(results_entry=entry, one_sample_rmse=one_sample_rmse(launch.workdir, entry),
                      finished_at=row["finished_at"], **({"ce": row["ce"]} if "ce" in row else {}))
        out.append(paired)
    return out


def main(argv=None, launcher=None) -> int:
    args = parse_args(argv)
    config = claims_config.get_config(args.study)
    launcher = launcher or launches.SubprocessLauncher()
    data_dir = os.path.abspath(args.data_dir)
    out = os.path.abspath(args.out or os.path.join(REPO, "results", "claims", f"{args.study}.jsonl"))
    root = os.path.join(os.path.abspath(args.workroot), args.study)
    try:
        gpus = launches.visible_gpus()
        # one set per stage: each stage's pool has threads of its own, and a slot is held per thread
        ce_slots, rl_slots = (launches.DeviceSlots(args.workers, gpus) for _ in range(2))
        sources = source_rows(config, out)
        out = suite.shard_path(out, suite.parse_shard(args.shard))
        ce_launches, rl_launches, skipped = pending(args, config, data_dir, root, read_rows(out, repair=not args.dry_run),
                                                    sources)
    except (GenreError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for dataset, seed, ce_tag in skipped:
        print(f"skipped {dataset} seed{seed} {ce_tag}: its CE failed (row in {out}); --retry_failed retries it",
              file=sys.stderr)
    if args.dry_run:
        for launch in ce_launches + rl_launches:
            print(f"# reuses {launch.reuse['protocol']}: {launch.reuse['workdir']}" if launch.reuse
                  else " ".join(launch.cmd))
            for job, entry in launch.also:
                print(f"#   and {job.protocol} from its {entry!r} entry")
        return 0
    os.makedirs(os.path.dirname(out), exist_ok=True)
    lock, ce_failed, counts = threading.Lock(), set(), {"ran": 0, "failed": 0, "reused": 0}

    def run(launch: Launch):
        if not starts_group(launch.job) and launch.group in ce_failed:
            return None
        error = None
        group_ce = os.path.join(os.path.dirname(launch.workdir), launch.group[2])  # the CE folder RL copies
        if launch.reuse is not None and starts_group(launch.job):
            error = copy_error(launch.reuse["workdir"], launch.workdir, whole=True)
        elif launch.reuse is None and not starts_group(launch.job):
            if not os.path.isdir(os.path.join(launch.workdir, "ce")):
                error = copy_error(group_ce, launch.workdir)
        if error is not None:
            row = suite.build_row(launch.job, launch.workdir, launch.cmd, 0.0, error=error, returncode=None)
            return [row, *paired_rows(launch, row)] if launch.also else row
        if launch.reuse is not None:
            return reused_row(launch.reuse, launch.job)  # its workdir stays the source's, where its predictions are
        ce = starts_group(launch.job)
        row = _run(launcher, launch.job, [*(ce_slots if ce else rl_slots).prefix(), *launch.cmd], launch.workdir,
                   ce_dir=None if ce else group_ce)
        return [row, *paired_rows(launch, row)] if launch.also else row

    def record(launch: Launch, rows):
        if rows is None:
            return
        for i, row in enumerate(rows if isinstance(rows, list) else [rows]):
            # a paired row is the same run's: counted once, printed under its own folder name
            _record(launch if i == 0 else launch._replace(job=launch.also[i - 1][0]), row, first=i == 0)

    def _record(launch: Launch, row, first: bool = True):
        job = launch.job
        with lock:
            if launch.reuse is None:
                counts["ran"] += first
            elif launch.new_row and row["status"] == "ok":  # a copied checkpoint whose row is here is no reused row
                counts["reused"] += 1
                print(f"reused  {job.dataset} seed{job.seed} {os.path.basename(launch.workdir)}: "
                      f"{launch.reuse['protocol']}", flush=True)
            if launch.new_row:
                append_row(out, row)
            if row["status"] != "ok":
                counts["failed"] += 1
                if starts_group(job):
                    ce_failed.add(launch.group)
                print(f"FAILED  {job.dataset} seed{job.seed} {os.path.basename(launch.workdir)}: {row['error']}",
                      flush=True)
            elif not starts_group(job) and launch.reuse is None:
                rmse = ((row.get("test") or {}).get("mean") or {}).get("rmse", float("nan"))
                print(f"ok      {job.dataset} seed{job.seed} {job.protocol.rpartition('/')[2]}: test RMSE (z) "
                      f"{rmse:.4f}, {row['wall_time_s']:.0f}s", flush=True)

    previous = signal.signal(signal.SIGTERM, launches.sigterm_as_interrupt)
    try:
        for stage in (ce_launches, rl_launches):  # every CE first: its RL runs then go side by side
            if args.workers <= 1:
                for launch in stage:
                    record(launch, run(launch))
            else:
                launches.run_in_parallel([[launch] for launch in stage], run, record, args.workers,
                                         getattr(launcher, "stop_all", None))
    except KeyboardInterrupt:
        print(f"interrupted: {counts['ran']} launch(es) finished this time, rows in {out}; the same command resumes",
              file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(f"{counts['ran']} launch(es) this time, {counts['failed']} failed"
          + (f", {counts['reused']} row(s) reused from {config.reuse_from}" if counts["reused"] else "")
          + f"; rows in {out}")
    return 0


def starts_group(job) -> bool:
    """The launch every other of its (dataset, seed, CE tag) group starts from: the CE's (the registry's
    kind whose best params the other kinds start from)."""
    return methods.get(job.method).phase_kind.starts_others


def started_from(ce_dir: str) -> dict | None:
    """The CE an RL run started from, as its row records it (``ce``): its params digest, metrics,
    calibration and one-sample RMSE. The RL run's gain is measured against this, not against the CE
    row, which may describe another training of that CE: a lost checkpoint is retrained (another
    machine), and XLA:CPU's floating-point results differ between CPU families and core counts
    (docs/reliability.md), so a retrained CE is not always the CE of its row. None only where the CE
    folder has no record (made before the record was copied along with a reused CE)."""
    entry = method_entries(ce_dir).get("ce")
    if not entry:
        return None
    splits = entry.get("splits") or {}
    return {"params_digest": (entry.get("stamp") or {}).get("params_digest"), "test": splits.get("test"),
            "val": splits.get("val"), "calibration": entry.get("calibration"),
            "one_sample_rmse": one_sample_rmse(ce_dir, "ce"),  # where it was trained: a retrained CE writes no row
            "versions": (read_json(os.path.join(ce_dir, "config.json")) or {}).get("versions")}


def _run(launcher, job, cmd: list, workdir: str, ce_dir: str | None = None) -> dict:
    """One launch's row, with its one-sample RMSE (the predictions it is computed from stay behind in
    the workdir, which a results file outlives) and, for an RL run, the CE it started from."""
    os.makedirs(workdir, exist_ok=True)
    row = suite.launch_row(job, cmd, workdir, os.path.join(workdir, "claims.log"), launcher)
    if row["status"] == "ok":
        row["one_sample_rmse"] = one_sample_rmse(workdir, job.method)  # a run may evaluate several entries
        base = started_from(ce_dir) if ce_dir is not None else None
        if base is not None:
            row["ce"] = base
    return row


if __name__ == "__main__":
    sys.exit(main())
