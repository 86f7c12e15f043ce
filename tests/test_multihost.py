"""Two real processes (2 CPU devices each) joined by jax.distributed give the same results as one
process with 4 devices: the multi-host data feeding and collectives are exercised, not mocked."""
import json
import os
import socket
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_run_matches_single_process(tmp_path, toy_data_dir):
    common = [sys.executable, os.path.join(REPO, "launch.py"), f"--config={REPO}/experiments/configs/tabular.py:tiny",
              f"--config.data_dir={toy_data_dir}", "--config.dataset=toy", "--config.ce.max_epochs=2",
              "--config.rl.max_epochs=1"]
    base_env = {**os.environ, "JAX_PLATFORMS": "cpu", "GENRE_JAX_CACHE_DIR": str(tmp_path / "cache")}
    # conftest's XLA flags (compile settings) for the subprocesses, with their own device counts
    fast_compile = " ".join(f for f in os.environ["XLA_FLAGS"].split() if "device_count" not in f)
    port = _free_port()
    procs = []
    for pid in range(2):
        env = {**base_env, "XLA_FLAGS": f"--xla_force_host_platform_device_count=2 {fast_compile}",
               "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": str(pid)}
        procs.append(subprocess.Popen([*common, "--multihost", f"--workdir={tmp_path / 'multi'}"], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    # the single-process reference runs at the same time (its own workdir and compilation cache)
    single = subprocess.Popen([*common, f"--workdir={tmp_path / 'single'}"], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True,
                              env={**base_env, "GENRE_JAX_CACHE_DIR": str(tmp_path / "cache1"),
                                   "XLA_FLAGS": f"--xla_force_host_platform_device_count=4 {fast_compile}"})
    outputs = [p.communicate(timeout=400)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs[0][-3000:] + outputs[1][-3000:]
    single_out = single.communicate(timeout=400)[0]
    assert single.returncode == 0, single_out[-3000:]
    multi = json.load(open(tmp_path / "multi" / "results.json"))["phases"]
    ref = json.load(open(tmp_path / "single" / "results.json"))["phases"]
    assert set(multi) == set(ref) == {"ce", "genre2"}
    for phase in ref:
        for split in ("val", "test"):
            for agg in ("mean", "median", "greedy"):
                for metric, value in ref[phase]["splits"][split][agg].items():
                    got = multi[phase]["splits"][split][agg][metric]
                    assert abs(got - value) <= 1e-4 * max(1.0, abs(value)), (phase, split, agg, metric, got, value)
    # only process 0 writes the run's log
    log = (tmp_path / "multi" / "ce" / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in log] == [0, 1]


_INTERLEAVED = """
import os, sys
import jax, numpy as np
from genre_jax import parallel
parallel.initialize_multihost()
mesh = parallel.data_mesh([d for pair in zip(*[[d for d in jax.devices() if d.process_index == p] for p in (0, 1)])
                           for d in pair])
assert [d.process_index for d in mesh.devices.flat] == [0, 1, 0, 1], mesh.devices
batch = {"x": np.arange(16, dtype=np.float32).reshape(8, 2), "w": np.arange(8, dtype=np.float32)}
placed = parallel.shard_batch(batch, mesh)
double = parallel.data_parallel(lambda p, b: b["x"] * p, mesh, batch_out=True)
out = parallel.to_host(double(np.float32(2.0), placed))
held = np.sort(np.concatenate([np.asarray(s.data)[:, 1] for s in placed["x"].addressable_shards]))
assert np.array_equal(out, 2 * batch["x"]), out
assert np.array_equal(held // 2, parallel.process_rows(mesh, 8)[jax.process_index()]), held
print("ok", jax.process_index())
"""


def test_rows_follow_the_mesh_when_one_process_holds_interleaved_blocks(tmp_path):
    """A TPU slice's mesh interleaves the processes along the data axis (see parallel.shard_batch):
    every row must still reach its own device, and per-row outputs come back in the batch's order."""
    fast_compile = " ".join(f for f in os.environ["XLA_FLAGS"].split() if "device_count" not in f)
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, "-c", _INTERLEAVED], cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True,
                              env={**os.environ, "JAX_PLATFORMS": "cpu", "JAX_NUM_PROCESSES": "2",
                                   "JAX_PROCESS_ID": str(pid), "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
                                   "XLA_FLAGS": f"--xla_force_host_platform_device_count=2 {fast_compile}"})
             for pid in range(2)]
    outputs = [p.communicate(timeout=200)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
