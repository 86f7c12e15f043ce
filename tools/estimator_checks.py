"""Runs scikit-learn's estimator checks on GenReRegressor one by one, printing one JSON line per check
(name, passed | failed | skipped, seconds, reason), so a long run reports as it goes:

  python tools/estimator_checks.py > estimator_checks.jsonl

Each check that fits trains a tiny model (config "tiny", 1 CE and 1 RL epoch), so the whole list
takes a long time on 2 CPU cores (check_fit_score_takes_y alone took ~15 minutes on a shared
machine); the test suite runs the estimator's own tests instead (tests/test_estimator.py).
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
    estimator = GenReRegressor(config="tiny", ce_epochs=1, rl_epochs=1, num_samples=8)
    for est, check in estimator_checks_generator(estimator, mark="skip"):
        name = check.func.__name__ if isinstance(check, functools.partial) else getattr(check, "__name__", str(check))
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
