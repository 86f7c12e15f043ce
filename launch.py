"""Entry point: a config, a workdir, and the phases to run.

  python launch.py                                       # default job: quick CE + eval on bundled cpu_act
  python launch.py --config=experiments/configs/tabular.py:paper --workdir=runs/x --config.dataset=NAME \
      --config.data_dir=/path/to/talent --config.phases=ce,eval

Every run writes <workdir>/config.json (resolved config, seed, versions, devices) and
<workdir>/results.json (metrics per evaluated phase, split and aggregation). Re-running with the
same workdir resumes: finished phases are restored, an interrupted phase continues.
Bad input ends with one line on stderr and exit code 2.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import time

from absl import app, flags, logging
from ml_collections import config_flags

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "experiments", "configs", "tabular.py")


def _define_flags() -> None:
    # config_flags parses the default config and every --config.x override while defining the flag.
    config_flags.DEFINE_config_file("config", DEFAULT_CONFIG, "Config file (path[:variant]).", lock_config=True)
    flags.DEFINE_string("workdir", "runs/default", "Output folder; re-using one resumes its run.")
    flags.DEFINE_bool("multihost", False, "Call jax.distributed.initialize() first (TPU pod slices, multi-node GPU).")


FLAGS = flags.FLAGS

PHASES = ("ce", "rl", "eval")


def _versions() -> dict:
    import importlib.metadata as md
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("genre_jax", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "chex", "ml-collections", "numpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


def _write_json(path: str, obj) -> None:
    """Atomic write by process 0: readers never see a half-written file."""
    import jax
    if jax.process_index() != 0:
        return
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
    os.replace(tmp, path)


def _phases(config) -> list[str]:
    from genre_jax.errors import GenreError
    phases = [p.strip() for p in config.phases.split(",") if p.strip()]
    unknown = [p for p in phases if p not in PHASES]
    if unknown or not phases:
        raise GenreError(f"config.phases: unknown phase(s) {unknown or phases}; expected a comma-separated "
                         f"subset of {list(PHASES)}")
    return phases


def run(config, workdir: str) -> dict:
    """Runs the configured phases; returns the results dict that is also written to results.json."""
    import jax

    from genre_jax import checkpoint, evaluate, models, parallel, rl, train
    from genre_jax.data import load_tabular
    from genre_jax.errors import GenreError
    from genre_jax.tokenizers import make_tokenizer

    # Everything that can reject the input runs before the workdir is touched.
    phases = _phases(config)
    data = load_tabular(config.data_dir or None, config.dataset)
    tokenizer = make_tokenizer(config.tokenizer, data.splits["train"].z)
    model = models.make_model(config.model, tokenizer)
    if "rl" in phases:
        rl.resolve(config.rl, tokenizer)  # reject a bad method/reward before any work
    workdir = os.path.abspath(workdir)
    checkpoint.check_workdir_matches(workdir, config)
    params = models.init_params(model, data.preprocessor.num_features, tokenizer.length,
                                jax.random.key(int(config.seed)))
    arrays, clipped = train.encode_splits(data, tokenizer)
    task = train.Task(model, tokenizer, arrays)
    mesh = parallel.data_mesh()

    created = not os.path.exists(workdir)
    os.makedirs(workdir, exist_ok=True)
    _write_json(os.path.join(workdir, "config.json"), {
        "config": config.to_dict(), "seed": int(config.seed), "identity": checkpoint.model_identity(config),
        "versions": _versions(), "devices": [str(d) for d in jax.devices()], "command": sys.argv,
        "tokenizer": tokenizer.spec(), "clipped_targets": clipped})
    meta = {"config": config.to_dict(), "tokenizer": tokenizer.spec(), "preprocessor": data.preprocessor.to_dict()}
    try:
        ce_ckpt = checkpoint.PhaseCheckpoints(workdir, "ce")
        if "ce" in phases:
            params = train.run_ce_phase(config, task, params, workdir, mesh, meta)
        elif ce_ckpt.has("best"):
            params = ce_ckpt.restore("best", params)[0]
        else:
            raise GenreError(f"{workdir}/ce: no CE checkpoint; add 'ce' to --config.phases")
        evaluated = {"ce": (params, {})}
        method = config.rl.method
        rl_ckpt = checkpoint.PhaseCheckpoints(workdir, rl.phase_dir(method))
        if "rl" in phases:
            rl_params, progress = rl.run_rl_phase(config, task, params, workdir, mesh, meta)
            evaluated[method] = (rl_params, progress)
        elif rl_ckpt.has("best"):  # evaluate an RL run made earlier in this workdir
            evaluated[method] = (rl_ckpt.restore("best", params)[0], rl_ckpt.meta("last") or {})
        results = {}
        if "eval" in phases:
            for name, (p, progress) in evaluated.items():
                results[name] = evaluate.evaluate(config, task, p, data.preprocessor.y_std, mesh,
                                                  os.path.join(workdir, "eval", name), method=name)
                if progress:
                    results[name]["selection"] = {k: progress.get(k) for k in ("best_epoch", "start_val", "best_val")}
    except GenreError:
        if created and not checkpoint.PhaseCheckpoints(workdir, "ce").has("best"):
            shutil.rmtree(workdir, ignore_errors=True)  # nothing worth resuming: leave no half-written folder
        raise
    summary = {"dataset": config.dataset, "seed": int(config.seed), "phases": results}
    if results:
        # results.json accumulates: evaluating another RL method later keeps the earlier rows
        path = os.path.join(workdir, "results.json")
        earlier = json.load(open(path)).get("phases", {}) if os.path.exists(path) else {}
        _write_json(path, {**summary, "phases": {**earlier, **results}})
    return summary


def _enable_compilation_cache() -> None:
    import jax
    cache = os.environ.get("GENRE_JAX_CACHE_DIR", os.path.expanduser("~/.cache/genre_jax/xla"))
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def main(argv) -> int:
    if len(argv) > 1:
        print(f"error: unexpected arguments {argv[1:]}; use --config.<field>=value", file=sys.stderr)
        return 2
    from genre_jax.errors import GenreError
    from genre_jax.evaluate import format_table
    logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO
    _enable_compilation_cache()
    if FLAGS.multihost:
        from genre_jax import parallel
        parallel.initialize_multihost()
    start = time.time()
    try:
        config = FLAGS.config
        config.to_dict()  # a config file that failed to load only raises on first use
    except (OSError, KeyError, AttributeError, ValueError) as e:  # a config file that failed to load
        _config_error(e)
    try:
        summary = run(config, FLAGS.workdir)
    except GenreError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if summary["phases"]:
        print(format_table(summary["phases"]))
    print(f"done in {time.time() - start:.1f}s; outputs in {os.path.abspath(FLAGS.workdir)}")
    return 0


def _one_line(e: BaseException) -> str:
    text = str(e)
    if "Traceback" in text:  # config_flags embeds the config module's traceback in its message
        text = [line for line in text.splitlines() if line.strip()][-1]
    return " ".join(text.split()).strip("\"'")


def _config_error(e: BaseException) -> None:
    if isinstance(e, (KeyError, AttributeError)):
        print(f"error: unknown config field {_one_line(e)!r} in a --config.<field> override", file=sys.stderr)
    else:
        print(f"error: bad --config or override ({type(e).__name__}): {_one_line(e)}", file=sys.stderr)
    sys.exit(2)


def _parse_flags(argv):
    try:
        return FLAGS(argv)
    except (flags.Error, KeyError, AttributeError, ValueError, TypeError, OSError) as e:
        _config_error(e)


if __name__ == "__main__":
    try:
        _define_flags()
    except (flags.Error, KeyError, AttributeError, ValueError, TypeError, OSError) as e:
        _config_error(e)
    app.run(lambda argv: sys.exit(main(argv)), flags_parser=_parse_flags)
