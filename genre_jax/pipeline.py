"""The phases of one run, in order: validate everything (``prepare``), then train, then evaluate
(``run_phases``); ``run`` does both, for launch.py.

Phases (``config.phases``) are the method kinds of ``methods.py`` plus ``eval``: ``ce`` (decoder CE
pretraining), ``rl`` (``config.rl.method`` from the CE checkpoint), ``token`` (``config.token.method``
fine-tuned from the CE checkpoint), ``head`` (``config.head.method``, trained from scratch), ``gbdt``
(the LightGBM reference, no checkpoint) and ``eval``. How each kind trains, restores and evaluates is
its ``methods.PhaseKind`` record. Each method keeps its own checkpoint folder, so one workdir can hold
CE and every method started from it; ``results.json`` accumulates one entry per method, and an entry
whose checkpoint and evaluation settings are unchanged is not recomputed. The data come from the
config's TALENT folder (or code-metric files), or in memory (``prepare(..., data=...)``: the estimator).
"""
from __future__ import annotations

import copy
import importlib.metadata
import os
import platform
import sys
from typing import Any, NamedTuple

import jax

from genre_jax import checkpoint, loop, methods, models, parallel, paths, preemption, runlog, settings
from genre_jax.checkpoint import PhaseCheckpoints
from genre_jax.context import RunContext, encode_splits
from genre_jax.data import load_for_config
from genre_jax.errors import GenreError
from genre_jax.results_file import merge_into_results, merge_timings, read_phases, write_json_atomic
from genre_jax.tokenizers import make_tokenizer


class Trained(NamedTuple):
    method: methods.Method
    params: Any
    progress: dict  # the loop's selection record (RL), reported beside the metrics
    which: str = "best"  # its checkpoint in the method's folder: "best", or a further rule's best_<rule>
    rule: str | None = None  # that further rule (rl.both_selections), named in the entry's selection


def also_selected(method: methods.Method, progress: dict, restore) -> dict[str, Trained]:
    """{"<method>@<rule>": Trained} for each further rule the loop kept a best checkpoint by
    (``loop.Selection``; RL with rl.both_selections), each restored by ``restore(which)``, with the
    rule's own selection record."""
    out = {}
    for rule, record in (progress.get("also") or {}).items():
        which = loop.best_checkpoint(rule)
        out[f"{method.name}@{rule}"] = Trained(method, restore(which), record, which, rule)
    return out


def host_cpu() -> str:
    """The CPU's model name: XLA:CPU compiles for the host's instruction set, so float results of one
    seed differ between CPU families (an AVX-512 Xeon and an AVX2 EPYC trained different CE models)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions() -> dict:
    """What a run's numbers depend on besides config and seed. On CPU that includes how many cores the
    process may use: XLA splits reductions over its threads, so 1 and 2 cores give other floats."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    out = {"python": platform.python_version(), "platform": platform.platform(), "cpu": host_cpu(),
           "cpu_cores": cores}
    for pkg in ("genre_jax", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "chex", "ml-collections", "numpy"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = None
    return out


class Prepared(NamedTuple):
    """A run validated and built, before its workdir is touched (``prepare``); ``run_phases`` runs it."""
    ctx: RunContext
    params: Any  # the decoder's freshly initialized (seeded) params: where CE starts
    record: dict  # what <workdir>/config.json records


def prepare(config, workdir: str, data=None, progress: bool = True, profile_steps: int = 0,
            profile_dir: str = "") -> Prepared:
    """Validates the config (resolved once into ``settings.Settings``), loads the data and builds the
    model and the context. ``data``: a dataset object already in memory (``genre_jax.data.from_splits``:
    arrays plus the preprocessing fitted on their train split); None = the one ``config.data_format``,
    ``config.data_dir`` and ``config.dataset`` name (a TALENT folder by default). ``progress``: the
    loop's progress bars. ``profile_steps`` > 0 traces that many training steps into ``profile_dir``
    (<workdir>/profile). Everything that can reject the input runs here, before the workdir is touched."""
    if not str(workdir).strip():
        raise GenreError("--workdir is empty; expected the run's folder (created if missing)")
    settings.parse_phases(config.phases)  # before a data set is read: a typo costs no loading time
    data = load_for_config(config) if data is None else data
    tokenizer = make_tokenizer(config.tokenizer, data.splits["train"].z)
    model = models.make_model(config.model, tokenizer)
    run_settings = settings.resolve(config, tokenizer)  # from here on, the records: no config field is read again
    workdir = paths.resolve(workdir)  # a local folder (made absolute) or a bucket URI such as gs://b/run
    paths.check_backend(workdir)
    profile_dir = paths.resolve(profile_dir or os.path.join(workdir, "profile"))
    if profile_steps > 0 and paths.is_remote(profile_dir):  # jax.profiler writes its Perfetto trace locally
        raise GenreError(f"--profile writes to a local folder, not {profile_dir}; pass --profile_dir=<local folder>")
    if paths.exists(workdir) and not paths.isdir(workdir):
        raise GenreError(f"--workdir {workdir} is a file; expected a folder (created if missing)")
    full = run_settings.config
    checkpoint.check_workdir_matches(workdir, full)
    params = models.init_params(model, data.preprocessor.num_features, tokenizer.length,
                                jax.random.key(run_settings.seed))
    arrays, clipped = encode_splits(data, tokenizer)
    meta = {"config": full, "tokenizer": tokenizer.spec(), "preprocessor": data.preprocessor.to_dict()}
    profiler = runlog.StepProfiler(profile_steps, profile_dir) if profile_steps > 0 else None
    ctx = RunContext(run_settings, arrays, float(data.preprocessor.y_std), model, tokenizer, full["model"],
                     parallel.data_mesh(), workdir, meta, data, profiler, progress)
    record = {"config": full, "seed": ctx.seed, "identity": checkpoint.model_identity(full), "versions": versions(),
              "devices": [str(d) for d in jax.devices()], "command": sys.argv, "tokenizer": tokenizer.spec(),
              "clipped_targets": clipped}
    return Prepared(ctx, params, record)


def run_phases(prepared: Prepared) -> dict:
    """Runs the prepared run's phases; returns this run's results (also merged into results.json)."""
    ctx, params = prepared.ctx, prepared.params
    workdir, dataset, phases = ctx.workdir, ctx.settings.dataset, ctx.settings.phases
    created = not paths.exists(workdir)
    with checkpoint.WorkdirLock(workdir):  # a second launch on this workdir stops here, with one line
        write_json_atomic(os.path.join(workdir, "config.json"), prepared.record)
        earlier = read_phases(workdir, dataset, ctx.seed)
        results = {}
        try:
            trained = _train(ctx, params) if ctx.settings.trains() else _restore_existing(ctx, params)
            if "eval" in phases:
                _evaluate(ctx, trained, earlier, results)
        except (GenreError, OSError):
            if created and not PhaseCheckpoints(workdir, methods.METHODS[methods.BASELINE].folder).has("best"):
                paths.rmtree(workdir)  # nothing worth resuming: leave no half-written folder
            raise
        finally:
            if ctx.profiler is not None:
                ctx.profiler.close()
            if results and paths.isdir(workdir):  # what finished is kept, also when a later step fails or stops
                _write_results(workdir, dataset, ctx.seed, results)
    return {"dataset": dataset, "seed": ctx.seed, "phases": results}


def run(config, workdir: str, profile_steps: int = 0, profile_dir: str = "", data=None, progress: bool = True) -> dict:
    """``prepare`` then ``run_phases``: what launch.py runs."""
    return run_phases(prepare(config, workdir, data, progress, profile_steps, profile_dir))


def _write_results(workdir: str, dataset: str, seed: int, results: dict) -> None:
    # timings apart, so two runs of one seed write byte-identical results.json files
    timings = {name: {"wall_time_s": entry.pop("wall_time_s")} for name, entry in results.items()
               if "wall_time_s" in entry}
    merge_into_results(workdir, dataset, seed, results)
    if timings:
        merge_timings(workdir, timings)


def _train(ctx, params) -> dict[str, Trained]:
    """Runs the training phases in order (``methods.PHASE_KINDS``); returns {method name: Trained}."""
    kinds = [methods.PHASE_KINDS[k] for k in methods.KINDS if k in ctx.settings.phases]
    start = None  # the CE best params the from_ce kinds start from
    if any(k.from_ce for k in kinds) and not any(k.starts_others for k in kinds):
        base = methods.METHODS[methods.BASELINE]
        start = _restore_best(ctx, base, params, f"add '{base.kind}' to --config.phases")
    trained = {}
    for kind in kinds:
        method = ctx.settings.method(kind.name)
        best, progress = kind.train(ctx, start if kind.from_ce else params)
        trained[method.name] = Trained(method, best, progress)
        trained.update(also_selected(method, progress, lambda which, like=best: PhaseCheckpoints(
            ctx.workdir, method.folder).restore(which, like)[0]))
        if kind.starts_others:
            start = best
        preemption.check(f"the {method.name} phase")
    return trained


def _restore_best(ctx, method, like, hint: str):
    ckpt = PhaseCheckpoints(ctx.workdir, method.folder)
    if not ckpt.has("best"):
        raise GenreError(f"{ckpt.root}: no {method.name} checkpoint to start from; {hint}")
    return ckpt.restore("best", like)[0]


def _restore_existing(ctx, params) -> dict[str, Trained]:
    """``eval`` alone: every checkpoint of the configured methods that exists in the workdir."""
    found = {}
    for kind in methods.PHASE_KINDS.values():
        method = ctx.settings.method(kind.name)
        if kind.template is None or not paths.isdir(os.path.join(ctx.workdir, method.folder)):
            continue  # a kind that keeps no checkpoint (gbdt) is trained by its own phase only
        ckpt = PhaseCheckpoints(ctx.workdir, method.folder)
        if not ckpt.has("best"):
            continue
        like = kind.template(ctx, params)
        # a decoder's selection record is its last checkpoint's progress; heads report none
        progress = (ckpt.meta("last") or {}) if kind.decoder else {}
        found[method.name] = Trained(method, ckpt.restore("best", like)[0], progress)
        found.update(also_selected(method, progress, lambda which, like=like: ckpt.restore(which, like)[0]))
    if not found:
        raise GenreError(f"{ctx.workdir}: no checkpoint to evaluate; add a training phase to --config.phases")
    return found


def _evaluate(ctx, trained: dict[str, Trained], earlier: dict, results: dict) -> None:
    """Evaluates every trained method into ``results`` ({name: entry}), one method at a time."""
    for name, (method, params, progress, which, rule) in trained.items():
        kind, stamp = method.phase_kind, None
        if method.folder is not None:  # a kind without checkpoints (gbdt) is fitted anew, so evaluated anew
            # ``params`` came through a checksum-verified restore, so a damaged best checkpoint never gets
            # here; a replaced one (same step, other values) is evaluated again. The digest is of the
            # values, not the folder, whose Orbax metadata holds write times: identical runs keep
            # byte-identical results.json files.
            stamp = {"best_step": PhaseCheckpoints(ctx.workdir, method.folder).best_step(which),
                     "params_digest": checkpoint.tree_digest(params),
                     **{section: getattr(ctx.settings, section).stamp for section in kind.stamp_sections}}
            if earlier.get(name, {}).get("stamp") == stamp:
                results[name] = earlier[name]  # same checkpoint, same evaluation: nothing to recompute
                continue
        out_dir = os.path.join(ctx.workdir, "eval", name)
        # both selection rules often pick the same epoch: its evaluation (which depends on the params,
        # the seed and the settings, not on the entry's name) is copied, predictions included
        primary = (results.get(method.name) or {}).get("stamp", {})
        if rule is not None and (primary.get("params_digest"), primary.get("eval")) == \
                (stamp["params_digest"], stamp["eval"]):
            results[name] = {k: copy.deepcopy(v) for k, v in results[method.name].items() if k != "wall_time_s"}
            results[name]["method"] = name
            paths.copytree(os.path.join(ctx.workdir, "eval", method.name), out_dir)
        else:
            results[name] = kind.evaluate(ctx, params, out_dir, name)
        if stamp is not None:
            results[name]["stamp"] = stamp
        if progress:
            results[name]["selection"] = {k: progress.get(k) for k in ("best_epoch", "start_val", "best_val")}
            if rule is not None:
                results[name]["selection"]["rule"] = rule
        preemption.check(f"evaluating {name}")
