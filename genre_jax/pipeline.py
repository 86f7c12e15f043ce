"""The phases of one run, in order: validate everything, then train, then evaluate.

Phases (``config.phases``): ``ce`` (decoder CE pretraining), ``rl`` (``config.rl.method`` from the
CE checkpoint), ``token`` (a token-level loss ``config.token.method`` fine-tuned from the CE
checkpoint), ``head`` (a traditional regression head ``config.head.method``, trained from scratch),
``gbdt`` (the LightGBM reference) and ``eval``. Each method keeps its own checkpoint folder, so one
workdir can hold CE and every method started from it; ``results.json`` accumulates one entry per
method, and an entry whose checkpoint and evaluation settings are unchanged is not recomputed.
"""
from __future__ import annotations

import os
import platform
import shutil
import sys

import jax

from genre_jax import checkpoint, evaluate, models, parallel, rl, train
from genre_jax.data import load_for_config
from genre_jax.errors import GenreError
from genre_jax.results_file import merge_into_results, read_phases, write_json_atomic
from genre_jax.tokenizers import make_tokenizer

PHASES = ("ce", "rl", "token", "head", "gbdt", "eval")
TRAINING_PHASES = ("ce", "rl", "token", "head", "gbdt")


def parse_phases(config) -> list[str]:
    phases = [p.strip() for p in config.phases.split(",") if p.strip()]
    unknown = [p for p in phases if p not in PHASES]
    if unknown or not phases:
        raise GenreError(f"config.phases: unknown phase(s) {unknown or phases}; expected a comma-separated "
                         f"subset of {list(PHASES)}")
    return phases


def versions() -> dict:
    import importlib.metadata as md
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("genre_jax", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "chex", "ml-collections", "numpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


def _phase_dirs(config) -> dict[str, str]:
    """Checkpoint folder of every decoder-or-head method this config names."""
    dirs = {config.rl.method: rl.phase_dir(config.rl.method), config.token.method: f"token/{config.token.method}",
            config.head.method: f"head/{config.head.method}"}
    return {"ce": "ce", **{m: d for m, d in dirs.items() if m != "ce"}}  # "ce" always means the CE phase


def _validate_settings(config, phases, tokenizer) -> None:
    """Rejects bad method names and sizes up front, before any training time is spent."""
    from genre_jax.data import SPLITS
    splits = [s.strip() for s in config.eval.splits.split(",") if s.strip()]
    if not splits or any(s not in SPLITS for s in splits):
        raise GenreError(f"config.eval.splits: expected a comma-separated subset of {list(SPLITS)}, "
                         f"got {config.eval.splits!r}")
    for section in ("ce", "rl", "token", "head", "eval"):
        if int(config[section].batch_size) <= 0:
            raise GenreError(f"config.{section}.batch_size: expected a positive integer, got {config[section].batch_size}")
    for field in ("d_model", "num_heads", "num_layers", "d_ff", "mlp_hidden", "enc_layers", "memory_slots",
                  "patch_size"):
        if field in config.model and int(config.model[field]) <= 0:
            raise GenreError(f"config.model.{field}: expected a positive integer, got {config.model[field]}")
    if int(config.eval.num_samples) <= 0:
        raise GenreError(f"config.eval.num_samples: expected a positive integer, got {config.eval.num_samples}")
    if "token" in phases and config.token.method == "ce":
        raise GenreError("config.token.method: 'ce' is the CE phase itself; expected ntl_mse, ntl_was or dist2")
    if "gbdt" in phases and config.get("data_format", "talent") != "talent":
        raise GenreError("config.phases: 'gbdt' needs tabular features; it does not apply to "
                         f"data_format={config.data_format!r}")
    if "rl" in phases:
        rl.resolve(config.rl, tokenizer)
    if "token" in phases:
        from genre_jax import objectives
        objectives.make_token_objective(config.token.method, tokenizer, config.token.weight, config.token.tau)
    if "head" in phases:
        from genre_jax import heads
        if config.head.method not in heads.HEADS:
            raise GenreError(f"config.head.method: unknown head {config.head.method!r}; expected one of "
                             f"{sorted(heads.HEADS)}")


def run(config, workdir: str) -> dict:
    """Runs the configured phases; returns the results of this run (also merged into results.json)."""
    # Everything that can reject the input runs before the workdir is touched.
    phases = parse_phases(config)
    data = load_for_config(config)
    tokenizer = make_tokenizer(config.tokenizer, data.splits["train"].z)
    model = models.make_model(config.model, tokenizer)
    _validate_settings(config, phases, tokenizer)
    workdir = os.path.abspath(workdir)
    checkpoint.check_workdir_matches(workdir, config)
    params = models.init_params(model, data.preprocessor.num_features, tokenizer.length,
                                jax.random.key(int(config.seed)))
    arrays, clipped = train.encode_splits(data, tokenizer)
    task = train.Task(model, tokenizer, arrays)
    mesh = parallel.data_mesh()

    created = not os.path.exists(workdir)
    os.makedirs(workdir, exist_ok=True)
    write_json_atomic(os.path.join(workdir, "config.json"), {
        "config": config.to_dict(), "seed": int(config.seed), "identity": checkpoint.model_identity(config),
        "versions": versions(), "devices": [str(d) for d in jax.devices()], "command": sys.argv,
        "tokenizer": tokenizer.spec(), "clipped_targets": clipped})
    meta = {"config": config.to_dict(), "tokenizer": tokenizer.spec(), "preprocessor": data.preprocessor.to_dict()}
    earlier = read_phases(workdir, config.dataset, int(config.seed))
    try:
        trained = _train(config, phases, task, data, params, workdir, mesh, meta)
        results = _evaluate(config, phases, task, data, trained, workdir, mesh, earlier) if "eval" in phases else {}
        if "gbdt" in phases:
            from genre_jax import gbdt
            results["lightgbm"] = gbdt.evaluate_lightgbm(data, gbdt.fit_lightgbm(data, seed=int(config.seed)))
    except GenreError:
        if created and not checkpoint.PhaseCheckpoints(workdir, "ce").has("best"):
            shutil.rmtree(workdir, ignore_errors=True)  # nothing worth resuming: leave no half-written folder
        raise
    summary = {"dataset": config.dataset, "seed": int(config.seed), "phases": results}
    if results:
        merge_into_results(workdir, config.dataset, int(config.seed), results)
    return summary


def _train(config, phases, task, data, params, workdir, mesh, meta) -> dict:
    """Runs the training phases; returns {method: (kind, params, selection info)}."""
    trained = {}
    ce_params = None
    ce_ckpt = checkpoint.PhaseCheckpoints(workdir, "ce")
    if "ce" in phases:
        ce_params = train.run_ce_phase(config, task, params, workdir, mesh, meta)
        trained["ce"] = ("decoder", ce_params, {})
    elif "rl" in phases or "token" in phases:
        if not ce_ckpt.has("best"):
            raise GenreError(f"{workdir}/ce: no CE checkpoint to start from; add 'ce' to --config.phases")
        ce_params = ce_ckpt.restore("best", params)[0]
    if "rl" in phases:
        rl_params, progress = rl.run_rl_phase(config, task, ce_params, workdir, mesh, meta)
        trained[config.rl.method] = ("decoder", rl_params, progress)
    if "token" in phases:
        trained[config.token.method] = ("decoder", train.run_token_phase(config, task, ce_params, workdir, mesh, meta),
                                        {})
    if "head" in phases:
        from genre_jax import heads
        head_params = heads.run_head_phase(config, task.arrays, data.preprocessor.num_features, workdir, mesh, meta)
        trained[config.head.method] = ("head", head_params, {})
    if not any(p in phases for p in TRAINING_PHASES):
        trained = _restore_existing(config, task, data, params, workdir)
    return trained


def _restore_existing(config, task, data, params, workdir) -> dict:
    """``eval`` alone: every checkpoint of the configured methods that exists in the workdir."""
    found = {}
    for method, phase_dir in _phase_dirs(config).items():
        ckpt = checkpoint.PhaseCheckpoints(workdir, phase_dir) if os.path.isdir(os.path.join(workdir, phase_dir)) \
            else None
        if ckpt is None or not ckpt.has("best"):
            continue
        if phase_dir.startswith("head/"):
            from genre_jax import heads
            like = heads.init_head_params(config, data.preprocessor.num_features)
            found[method] = ("head", ckpt.restore("best", like)[0], {})
        else:
            found[method] = ("decoder", ckpt.restore("best", params)[0], ckpt.meta("last") or {})
    if not found:
        raise GenreError(f"{workdir}: no checkpoint to evaluate; add a training phase to --config.phases")
    return found


def _evaluate(config, phases, task, data, trained, workdir, mesh, earlier) -> dict:
    results = {}
    y_std = data.preprocessor.y_std
    for method, (kind, params, progress) in trained.items():
        ckpt = checkpoint.PhaseCheckpoints(workdir, _phase_dirs(config)[method])
        stamp = {"best_step": ckpt.best_step(), "eval": config.eval.to_dict()}
        if kind == "head":  # heads sample with their own settings
            stamp["head"] = config.head.to_dict()
        if earlier.get(method, {}).get("stamp") == stamp:
            results[method] = earlier[method]  # same checkpoint, same evaluation: nothing to recompute
            continue
        out_dir = os.path.join(workdir, "eval", method)
        if kind == "head":
            from genre_jax import heads
            results[method] = heads.evaluate_head(config, task.arrays, params, y_std, mesh, out_dir)
        else:
            results[method] = evaluate.evaluate(config, task, params, y_std, mesh, out_dir, method=method)
        results[method]["stamp"] = stamp
        if progress:
            results[method]["selection"] = {k: progress.get(k) for k in ("best_epoch", "start_val", "best_val")}
    return results
