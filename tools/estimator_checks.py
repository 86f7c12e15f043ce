"""Runs scikit-learn's estimator checks on GenReRegressor one by one, printing one JSON line per check
(name, passed | failed | skipped, seconds, reason), so a long run reports as it goes:

  python tools/estimator_checks.py > estimator_checks.jsonl

Each check that fits trains a tiny model (config "tiny", 1 CE and 1 RL epoch) but the score check,
which trains the quick model for 30 CE epochs; compiled steps come from the persistent compilation
cache, so most checks take under a minute on 2 CPU cores. The test suite runs the estimator's own
tests instead (tests/test_estimator.py).
"""
import functools
import json
import os
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sklearn.utils.estimator_checks import estimator_checks_generator  # noqa: E402

from genre_jax.estimator import GenReRegressor  # noqa: E402


def main() -> int:
    warnings.filterwarnings("ignore")
    import jax
    # every check fits again, mostly on the same shapes: compiled steps come from the disk cache
    jax.config.update("jax_compilation_cache_dir", os.environ.get(
        "GENRE_JAX_CACHE_DIR", os.path.expanduser("~/.cache/genre_jax/xla")))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    estimator = GenReRegressor(config="tiny", ce_epochs=1, rl_epochs=1, num_samples=8)
    # check_regressors_train asks for R² > 0.5 on a 200-row linear problem: one tiny epoch cannot
    # fit it (R² -0.69 after 30 tiny epochs), the quick model with 30 CE epochs does (0.71).
    fits = GenReRegressor(config="quick", ce_epochs=30, rl_epochs=2, num_samples=8)
    for est, check in estimator_checks_generator(estimator, mark="skip"):
        name = check.func.__name__ if isinstance(check, functools.partial) else getattr(check, "__name__", str(check))
        if name == "check_regressors_train":
            est = fits
        start = time.time()
        try:
            check(est)
            status, why = "passed", ""
        except Exception as exc:  # a check's failure is a row, not the end of the run
            skipped = type(exc).__name__ == "SkipTest"
            status, why = ("skipped", str(exc)) if skipped else ("failed", f"{type(exc).__name__}: {exc}")
        print(json.dumps({"check": name, "status": status, "s": round(time.time() - start, 1),
                          "why": " ".join(why.split())[:300]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
