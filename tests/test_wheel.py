"""The package as a user installs it: a wheel built from the checkout, installed outside it (no
network, no editable link), fits and predicts from a folder that is not the repository, so nothing
the library reads at run time may live outside ``genre_jax/`` (configs, data files)."""
import json
import os
import shutil
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Runs in a fresh interpreter whose cwd is outside the checkout; prints one JSON line.
FIT = """
import json, sys
import numpy as np
import genre_jax
from genre_jax import GenReRegressor
rng = np.random.default_rng(0)
X = rng.normal(size=(48, 3))
y = X @ np.array([1.0, -2.0, 0.5]) + 0.1 * rng.normal(size=48)
model = GenReRegressor(method="ce", config="tiny", ce_epochs=1, num_samples=4, calibration="none").fit(X, y)
pred = model.predict(X[:5])
print(json.dumps({"file": genre_jax.__file__, "pred": np.asarray(pred).tolist(),
                  "experiments": "experiments" in sys.modules}))
"""


def test_a_wheel_installed_outside_the_checkout_fits_and_predicts(tmp_path):
    # build from a copy of what the wheel is made of, so the checkout gets no build/ folder
    src = tmp_path / "src"
    shutil.copytree(os.path.join(REPO, "genre_jax"), src / "genre_jax",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(os.path.join(REPO, name), src / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", "-q"]
    env = {**os.environ, "PIP_NO_INDEX": "1"}  # no network: the build backend comes from this environment
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(src)],
                   check=True, env=env, cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("genre_jax-*.whl")
    site = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--no-index", "--target", str(site), str(wheel)],
                   check=True, env=env, cwd=tmp_path)
    assert not (site / "genre_jax" / "train.py").exists() and (site / "genre_jax" / "recipes.py").is_file()

    user = tmp_path / "user"
    user.mkdir()
    # one device, as a user has, with conftest's compile settings (compiling is most of the fit's time)
    fast_compile = " ".join(f for f in os.environ.get("XLA_FLAGS", "").split() if "device_count" not in f)
    run_env = {**os.environ, "XLA_FLAGS": fast_compile, "PYTHONPATH": str(site), "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", FIT], check=True, env=run_env, cwd=user, capture_output=True,
                         text=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["file"].startswith(str(site)), result["file"]  # the installed copy, not the checkout
    assert not result["experiments"]  # the estimator reads no experiments/ config file
    assert len(result["pred"]) == 5 and all(abs(p) < 1e6 for p in result["pred"])
    assert sorted(os.listdir(user)) == []  # fit wrote no data files where it ran
