"""LightGBM reference: gradient-boosted trees on the same preprocessed features and z targets.

It sees exactly what the neural methods see (``load_tabular``: train-fitted imputation and
standardization, categorical columns as standardized ordinal codes) and is scored with the same
metrics in the same ``results.json`` schema, so the suite can place it in one table with them. It is
the ``gbdt`` phase kind of ``methods.PHASE_KINDS`` (launch.py ``--config.phases=gbdt,eval``) and has
its own command line too (below), which the suite calls.

Protocol: L2 regression on z, early stopping on the val split's L2 (at most
``num_boost_round`` rounds, stop after ``early_stopping_rounds`` without improvement), the
best-iteration model is evaluated. ``deterministic=True``, ``force_row_wise=True`` and a fixed
``seed`` with ``num_threads`` = 1 make a re-run reproduce the same trees.

Schema notes (a point predictor has no samples):
  * ``mean``, ``median`` and ``greedy`` all hold the metrics of the one point prediction;
  * ``distribution.crps`` is the CRPS of a point mass at the prediction, which equals its MAE;
  * ``distribution.coverage_90`` is 0: a point mass has an empty central interval, so it covers
    a target only by exact equality. Compare the distribution columns across samplers only.
  * ``num_samples`` is 1.

  python -m genre_jax.gbdt --data_dir=/path/to/talent --dataset=cpu_act --workdir=runs/x --seed=0
"""
from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import sys
import time

import numpy as np

from genre_jax import methods, metrics, paths, scores
from genre_jax.data import load_tabular
from genre_jax.errors import GenreError
from genre_jax.results_file import merge_into_results

METHOD = methods.only("gbdt").name  # the results.json entry it writes

# Booster parameters; the two round counts are arguments of lightgbm.train, split off in fit_lightgbm.
DEFAULT_PARAMS: dict = {
    "objective": "regression",  # L2 on z, the loss the RMSE column measures
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_data_in_leaf": 20,
    "feature_fraction": 1.0,  # no column or row subsampling: nothing random beyond the seed
    "bagging_fraction": 1.0,
    "lambda_l2": 0.0,
    # One thread: on a 2-core machine that is also training a network, LightGBM's OpenMP threads
    # spin-wait on each other (cpu_act: 0.8 s with 1 thread, 180 s with 2 under load), same trees.
    "num_threads": 1,
    "num_boost_round": 2000,  # upper bound; early stopping on val decides
    "early_stopping_rounds": 100,
}
_ROUND_KEYS = ("num_boost_round", "early_stopping_rounds")


def _lightgbm():
    try:
        import lightgbm
    except ImportError:
        raise GenreError("the LightGBM baseline needs the lightgbm package, which is not installed; "
                         "pip install lightgbm==4.7.0 (pinned in requirements.txt)") from None
    return lightgbm


def resolve_params(params: dict | None, seed: int) -> tuple[dict, int, int]:
    """(booster params, num_boost_round, early_stopping_rounds) with defaults filled in."""
    if params is not None and not isinstance(params, dict):
        raise GenreError(f"LightGBM params: expected a dict, got {type(params).__name__}")
    merged = {**DEFAULT_PARAMS, **(params or {})}
    rounds, patience = (int(merged.pop(k)) for k in _ROUND_KEYS)
    if rounds < 1 or patience < 1:
        raise GenreError(f"LightGBM params: num_boost_round and early_stopping_rounds must be >= 1, got "
                         f"{rounds} and {patience}")
    merged.update(seed=int(seed), deterministic=True, force_row_wise=True, verbosity=-1)
    return merged, rounds, patience


def fit_lightgbm(data, params: dict | None = None, seed: int = 0):
    """Fits on data.splits['train'] (x, z) with early stopping on 'val'; returns the Booster.

    ``params`` override DEFAULT_PARAMS (any LightGBM parameter is passed through). The Booster's
    ``best_iteration`` is the early-stopped round count that evaluate_lightgbm uses.
    """
    lgb = _lightgbm()
    booster_params, rounds, patience = resolve_params(params, seed)
    train, val = data.splits["train"], data.splits["val"]
    start = time.time()
    train_set = lgb.Dataset(np.asarray(train.x, np.float64), label=np.asarray(train.z, np.float64),
                            free_raw_data=False)
    val_set = lgb.Dataset(np.asarray(val.x, np.float64), label=np.asarray(val.z, np.float64), reference=train_set)
    model = lgb.train(booster_params, train_set, num_boost_round=rounds, valid_sets=[val_set],
                      valid_names=["val"], callbacks=[lgb.early_stopping(patience, verbose=False)])
    # evaluate_lightgbm reports fit + predict time as the method's wall time, like the decoder phases
    model.genre_fit_time_s = time.time() - start
    model.genre_params = {**booster_params, "num_boost_round": rounds, "early_stopping_rounds": patience}
    return model


def _best_iteration(model) -> int:
    best = int(getattr(model, "best_iteration", 0) or 0)
    return best if best > 0 else int(model.current_iteration())


def evaluate_lightgbm(data, model, splits=("val", "test")) -> dict:
    """The results.json phase entry for ``model`` (see the module docstring for the schema)."""
    start = time.time()
    best = _best_iteration(model)
    y_std = float(data.preprocessor.y_std)
    result = {"method": METHOD, "num_samples": 1, "splits": {}}
    for split in splits:
        part = data.splits[split]
        point = np.asarray(model.predict(np.asarray(part.x, np.float64), num_iteration=best), np.float64)
        target = np.asarray(part.z, np.float64)
        entry = metrics.prediction_metrics(point[:, None], point, target, y_std)
        entry["distribution"] = {"crps": scores.crps(point[:, None], target), "coverage_90": 0.0}
        result["splits"][split] = entry
    result["wall_time_s"] = round(float(getattr(model, "genre_fit_time_s", 0.0)) + time.time() - start, 2)
    result["best_iteration"] = best
    result["params"] = dict(getattr(model, "genre_params", {}))
    result["versions"] = {"lightgbm": md.version("lightgbm"), "numpy": np.__version__}
    return result


def train_phase(ctx, _decoder_params):
    """The ``gbdt`` PhaseKind's training: the default booster on the run's data and seed (no checkpoint:
    a launch that asks for the phase fits again, in seconds)."""
    return fit_lightgbm(ctx.data, seed=ctx.seed), {}


def evaluate_phase(ctx, model, out_dir: str, name: str) -> dict:
    """The ``gbdt`` PhaseKind's evaluation: the entry ``evaluate_lightgbm`` writes (val and test)."""
    return evaluate_lightgbm(ctx.data, model)


def run_lightgbm(data_dir, dataset: str, workdir: str, seed: int = 0, params: dict | None = None) -> dict:
    """Fits, evaluates and merges the ``METHOD`` entry into <workdir>/results.json.

    Returns {"dataset", "seed", "phases": {METHOD: entry}} like launch.run.
    """
    _lightgbm()  # fail before reading data when the package is missing
    paths.check_backend(workdir)  # likewise a bucket --workdir without its file-system package
    data = load_tabular(data_dir or None, dataset)
    entry = evaluate_lightgbm(data, fit_lightgbm(data, params, seed))
    merge_into_results(workdir, dataset, seed, {METHOD: entry})
    return {"dataset": dataset, "seed": int(seed), "phases": {METHOD: entry}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", default="", help="folder of TALENT datasets ('' = the bundled datasets/)")
    parser.add_argument("--dataset", default="cpu_act")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--params", default="{}", help="JSON dict overriding DEFAULT_PARAMS")
    args = parser.parse_args(argv)
    start = time.time()
    try:
        params = json.loads(args.params)
        summary = run_lightgbm(args.data_dir, args.dataset, args.workdir, args.seed, params)
    except json.JSONDecodeError as e:
        print(f"error: --params is not JSON ({e})", file=sys.stderr)
        return 2
    except GenreError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    test = summary["phases"][METHOD]["splits"]["test"]["mean"]
    print(f"lightgbm {args.dataset}: test RMSE (z) {test['rmse']:.4f}, R² {test['r2']:.4f}, "
          f"best iteration {summary['phases'][METHOD]['best_iteration']}")
    print(f"done in {time.time() - start:.1f}s; outputs in {paths.resolve(args.workdir)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
