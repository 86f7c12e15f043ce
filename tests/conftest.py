"""Runs every test on CPU with 8 fake host devices, so sharded code is really exercised.

Tests check numbers, not speed, and most of their time is XLA compiling small programs, so two
compile-time switches are set here (every comparison a test makes is between two programs compiled
alike): LLVM's backend optimizations are off (a third less compile time), and fusions are emitted
by XLA:CPU's classic LLVM emitters instead of its MLIR fusion emitters (a third of the compile
time again: 55 s -> 17 s of compiling in ``test_rl_step_on_8_devices_equals_1_device``).
``scripts/test.sh`` runs the files on several worker processes (pytest-xdist), which share one
compilation cache and one tiny trained run. A worker takes a whole file at a time, in collection
order (``--no-loadscope-reorder``: xdist's default order, most tests first, put the files with few
but long tests last, leaving one worker alone at the end), so the longest files go first.
"""
import os

os.environ["JAX_PLATFORMS"] = "cpu"
for _flag in ("--xla_force_host_platform_device_count=8", "--xla_backend_optimization_level=0",
              "--xla_cpu_use_fusion_emitters=false"):
    if _flag.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _flag).strip()

import fcntl  # noqa: E402
import tempfile  # noqa: E402

# One persistent XLA compilation cache for the whole session, subprocesses included: many tests
# compile the same tiny programs (a CE step, a sampler), and a cache hit costs milliseconds instead
# of seconds. A fresh folder per session, shared by its xdist workers (or GENRE_JAX_TEST_CACHE to
# keep one), so tests never read entries from another version of the code.
_run = os.environ.get("PYTEST_XDIST_TESTRUNUID")
_cache = os.environ.get("GENRE_JAX_TEST_CACHE") or (
    os.path.join(tempfile.gettempdir(), f"genre_jax_test_xla_{_run}") if _run
    else tempfile.mkdtemp(prefix="genre_jax_test_xla_"))
os.makedirs(_cache, exist_ok=True)
os.environ["GENRE_JAX_CACHE_DIR"] = _cache  # launch.py subprocesses
os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"

import pathlib  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # launch.py, experiments/ and tools/ live at the repository root

from fakes import fake_bucket, write_talent_dataset  # noqa: E402


@pytest.fixture
def toy_data_dir(tmp_path):
    write_talent_dataset(tmp_path / "data")
    return tmp_path / "data"


@pytest.fixture
def make_context(tmp_path):
    """A RunContext for phase-level tests, from in-memory arrays (no dataset on disk).

    ``config`` defaults to the tiny tabular variant; its settings are validated as a launch would.
    """
    from experiments.configs import tabular
    from genre_jax import parallel, settings
    from genre_jax.context import RunContext
    from genre_jax.tokenizers import NormalizedTokenizer

    def make(arrays, config=None, tokenizer=None, model=None, y_std=1.0, devices=None, workdir=None):
        config = config or tabular.get_config("tiny")
        tokenizer = tokenizer or NormalizedTokenizer()
        return RunContext(settings.resolve(config, tokenizer), arrays, y_std, model, tokenizer, config.model.to_dict(),
                          parallel.data_mesh(devices), str(workdir or tmp_path), {"config": config.to_dict()})

    return make


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """One default-phases run (CE -> GenRe² -> eval) of the tiny config on the bundled dataset, shared
    read-only by the tests that need a trained workdir: (workdir, the run's summary).

    Under xdist the first worker to get here trains it (the others wait on a lock), then every
    worker's call finds it finished and returns the stored summary without training."""
    import launch
    from experiments.configs import tabular

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the folder all workers' temp folders share
    workdir = str(root / "tiny_run")
    with open(str(root / "tiny_run.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return workdir, launch.run(tabular.get_config("tiny"), workdir)


@pytest.fixture
def tiny_config():
    """Builds the tiny tabular config with ``section.field=value`` overrides (``seed=1`` for top-level)."""
    from experiments.configs import tabular

    def make(**overrides):
        config = tabular.get_config("tiny")
        for key, value in overrides.items():
            section, _, field = key.rpartition(".")
            (config[section] if section else config)[field] = value
        return config

    return make


@pytest.fixture
def bucket(tmp_path):
    """A fake ``gs://bucket`` (``bucket.URI``) whose objects are the files under ``tmp_path/bucket``
    (``fakes.FakeBucket``)."""
    (tmp_path / "bucket").mkdir()
    with fake_bucket(tmp_path / "bucket") as fake:
        yield fake


# The files that take longest (seconds of one worker, ``scripts/test.sh --durations=0``), longest first;
# every other file follows in its usual order. Re-measure when a file grows.
LONGEST_FIRST = ("test_rl.py", "test_sampling.py", "test_pipeline.py", "test_code_table.py", "test_exact.py",
                 "test_multihost.py", "test_estimator.py", "test_objectives.py", "test_models.py", "test_wheel.py",
                 "test_aot.py", "test_loop.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: tests keep their order in a file
