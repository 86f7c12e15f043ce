"""The phases of one run, in order: validate everything, then train, then evaluate.

Phases (``config.phases``) are the method kinds of ``methods.py`` plus ``eval``: ``ce`` (decoder CE
pretraining), ``rl`` (``config.rl.method`` from the CE checkpoint), ``token`` (``config.token.method``
fine-tuned from the CE checkpoint), ``head`` (``config.head.method``, trained from scratch), ``gbdt``
(the LightGBM reference) and ``eval``. Each method keeps its own checkpoint folder, so one workdir
can hold CE and every method started from it; ``results.json`` accumulates one entry per method, and
an entry whose checkpoint and evaluation settings are unchanged is not recomputed.
"""
from __future__ import annotations

import copy
import importlib.metadata
import os
import platform
import sys
from typing import Any, NamedTuple

import jax

from genre_jax import (checkpoint, evaluate, gbdt, loop, methods, models, parallel, paths, preemption, rl, settings,
                       train)
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


# kind -> (ctx, starting params) -> (best params, progress); rl and token start from CE's best params.
TRAINERS = {
    "ce": lambda ctx, params: (train.run_ce_phase(ctx, params), {}),
    "rl": rl.run_rl_phase,
    "token": lambda ctx, params: (train.run_token_phase(ctx, params), {}),
    "head": lambda ctx, params: (train.run_head_phase(ctx), {}),
}


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


def run(config, workdir: str, profile_steps: int = 0, profile_dir: str = "") -> dict:
    """Runs the configured phases; returns the results of this run (also merged into results.json).
    ``profile_steps`` > 0 traces that many training steps into ``profile_dir`` (<workdir>/profile)."""
    # Everything that can reject the input runs before the workdir is touched.
    if not str(workdir).strip():
        raise GenreError("--workdir is empty; expected the run's folder (created if missing)")
    settings.parse_phases(config.phases)
    data = load_for_config(config)
    tokenizer = make_tokenizer(config.tokenizer, data.splits["train"].z)
    model = models.make_model(config.model, tokenizer)
    run_settings = settings.resolve(config, tokenizer)
    workdir = paths.resolve(workdir)  # a local folder (made absolute) or a bucket URI such as gs://b/run
    paths.check_backend(workdir)
    profile_dir = paths.resolve(profile_dir or os.path.join(workdir, "profile"))
    if profile_steps > 0 and paths.is_remote(profile_dir):  # jax.profiler writes its Perfetto trace locally
        raise GenreError(f"--profile writes to a local folder, not {profile_dir}; pass --profile_dir=<local folder>")
    if paths.exists(workdir) and not paths.isdir(workdir):
        raise GenreError(f"--workdir {workdir} is a file; expected a folder (created if missing)")
    checkpoint.check_workdir_matches(workdir, config)
    params = models.init_params(model, data.preprocessor.num_features, tokenizer.length,
                                jax.random.key(run_settings.seed))
    arrays, clipped = encode_splits(data, tokenizer)
    meta = {"config": config.to_dict(), "tokenizer": tokenizer.spec(), "preprocessor": data.preprocessor.to_dict()}
    profiler = loop.StepProfiler(profile_steps, profile_dir) \
        if profile_steps > 0 else None
    ctx = RunContext(run_settings, arrays, float(data.preprocessor.y_std), model, tokenizer, config.model.to_dict(),
                     parallel.data_mesh(), workdir, meta, data, profiler)

    created = not paths.exists(workdir)
    with checkpoint.WorkdirLock(workdir):  # a second launch on this workdir stops here, with one line
        write_json_atomic(os.path.join(workdir, "config.json"), {
            "config": config.to_dict(), "seed": ctx.seed, "identity": checkpoint.model_identity(config),
            "versions": versions(), "devices": [str(d) for d in jax.devices()], "command": sys.argv,
            "tokenizer": tokenizer.spec(), "clipped_targets": clipped})
        earlier = read_phases(workdir, config.dataset, ctx.seed)
        phases, results = run_settings.phases, {}
        try:
            trained = _train(ctx, params) if run_settings.trains() else _restore_existing(ctx, params)
            if "eval" in phases:
                _evaluate(ctx, trained, earlier, results)
            if "gbdt" in phases:
                results[gbdt.METHOD] = gbdt.evaluate_lightgbm(data, gbdt.fit_lightgbm(data, seed=ctx.seed))
        except (GenreError, OSError):
            if created and not PhaseCheckpoints(workdir, methods.only("ce").folder).has("best"):
                paths.rmtree(workdir)  # nothing worth resuming: leave no half-written folder
            raise
        finally:
            if profiler is not None:
                profiler.close()
            if results and paths.isdir(workdir):  # what finished is kept, also when a later step fails or stops
                _write_results(workdir, config.dataset, ctx.seed, results)
    return {"dataset": config.dataset, "seed": ctx.seed, "phases": results}


def _write_results(workdir: str, dataset: str, seed: int, results: dict) -> None:
    # timings apart, so two runs of one seed write byte-identical results.json files
    timings = {name: {"wall_time_s": entry.pop("wall_time_s")} for name, entry in results.items()
               if "wall_time_s" in entry}
    merge_into_results(workdir, dataset, seed, results)
    if timings:
        merge_timings(workdir, timings)


def _train(ctx, params) -> dict[str, Trained]:
    """Runs the training phases in order; returns {method name: Trained}."""
    phases, trained, ce_params = ctx.settings.phases, {}, None
    if "ce" not in phases and any(kind in phases for kind in methods.FROM_CE):
        ce_params = _restore_best(ctx, methods.only("ce"), params, "add 'ce' to --config.phases")
    for kind, trainer in TRAINERS.items():
        if kind not in phases:
            continue
        method = ctx.settings.method(kind)
        best, progress = trainer(ctx, ce_params if method.from_ce else params)
        trained[method.name] = Trained(method, best, progress)
        trained.update(also_selected(method, progress, lambda which, like=best: PhaseCheckpoints(
            ctx.workdir, method.folder).restore(which, like)[0]))
        if kind == "ce":
            ce_params = best
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
    for kind in TRAINERS:
        method = ctx.settings.method(kind)
        if not paths.isdir(os.path.join(ctx.workdir, method.folder)):
            continue
        ckpt = PhaseCheckpoints(ctx.workdir, method.folder)
        if not ckpt.has("best"):
            continue
        if kind == "head":
            found[method.name] = Trained(method, ckpt.restore("best", train.init_head_params(ctx))[0], {})
        else:
            progress = ckpt.meta("last") or {}
            found[method.name] = Trained(method, ckpt.restore("best", params)[0], progress)
            found.update(also_selected(method, progress, lambda which: ckpt.restore(which, params)[0]))
    if not found:
        raise GenreError(f"{ctx.workdir}: no checkpoint to evaluate; add a training phase to --config.phases")
    return found


def _evaluate(ctx, trained: dict[str, Trained], earlier: dict, results: dict) -> None:
    """Evaluates every trained method into ``results`` ({name: entry}), one method at a time."""
    config = ctx.meta["config"]
    for name, (method, params, progress, which, rule) in trained.items():
        ckpt = PhaseCheckpoints(ctx.workdir, method.folder)
        # ``params`` came through a checksum-verified restore, so a damaged best checkpoint never gets
        # here; a replaced one (same step, other values) is evaluated again. The digest is of the
        # values, not the folder, whose Orbax metadata holds write times: identical runs keep
        # byte-identical results.json files.
        stamp = {"best_step": ckpt.best_step(which), "params_digest": checkpoint.tree_digest(params),
                 "eval": settings.without_later_fields("eval", config["eval"])}
        if method.kind == "head":  # heads sample with their own settings
            stamp["head"] = settings.without_later_fields("head", config["head"])
        if earlier.get(name, {}).get("stamp") == stamp:
            results[name] = earlier[name]  # same checkpoint, same evaluation: nothing to recompute
            continue
        out_dir = os.path.join(ctx.workdir, "eval", name)
        # both selection rules often pick the same epoch: its evaluation (which depends on the params,
        # the seed and the settings, not on the entry's name) is copied, predictions included
        primary = (results.get(method.name) or {}).get("stamp", {}) if rule is not None else {}
        if (primary.get("params_digest"), primary.get("eval")) == (stamp["params_digest"], stamp["eval"]):
            results[name] = {k: copy.deepcopy(v) for k, v in results[method.name].items() if k != "wall_time_s"}
            results[name]["method"] = name
            paths.copytree(os.path.join(ctx.workdir, "eval", method.name), out_dir)
        elif method.kind == "head":
            results[name] = evaluate.evaluate_head(ctx, params, train.head_model(ctx), out_dir)
        else:
            results[name] = evaluate.evaluate(ctx, params, out_dir, method=name)
        results[name]["stamp"] = stamp
        if progress:
            results[name]["selection"] = {k: progress.get(k) for k in ("best_epoch", "start_val", "best_val")}
            if rule is not None:
                results[name]["selection"]["rule"] = rule
        preemption.check(f"evaluating {name}")
