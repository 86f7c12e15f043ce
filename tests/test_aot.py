"""The RL update and the CE epoch, built by the library's own factories and sharded by parallel.py,
compile for an 8-chip TPU v5e slice (compile-only devices from libtpu, no TPU): the gradient is
all-reduced once, about the parameters' bytes, and the program fits a v5e chip's 16 GB.

Runs ``benchmarks/aot.py`` as a subprocess at the ``tiny`` size, so libtpu is only ever loaded in
a process of its own (never in the pytest workers, whose XLA flags and CPU backend other tests
rely on). ``scripts/setup.sh`` installs libtpu into ``.libtpu/``; the test is skipped only where
it is not there (a machine that cannot download it).
"""
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIBTPU = os.environ.get("TPU_LIBRARY_PATH") or os.path.join(REPO, ".libtpu", "libtpu", "libtpu.so")
V5E_HBM_BYTES = 16e9  # https://cloud.google.com/tpu/docs/v5e


@pytest.mark.skipif(not os.path.isfile(LIBTPU), reason=f"libtpu not installed at {LIBTPU} "
                    "(bash scripts/setup.sh installs it; GENRE_JAX_LIBTPU=0 skipped it)")
def test_rl_update_and_ce_epoch_compile_for_a_v5e_slice(tmp_path):
    out = tmp_path / "aot.json"
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_COMPILATION_CACHE_DIR")}
    done = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", "aot.py"), "--topology=v5e:2x4",
                           "--variant=tiny", "--dtypes=float32", "--programs=ce_epoch,rl_update", f"--out={out}"],
                          env={**env, "JAX_PLATFORMS": "cpu", "TPU_LIBRARY_PATH": LIBTPU}, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["chips"] == 8 and result["processes"] == {"0": {"rows": 512, "blocks": [0]}}
    programs = {r["program"]: r for r in result["programs"]}
    assert set(programs) == {"ce_epoch", "rl_update"}
    for name, r in programs.items():
        assert 0 < r["per_chip_bytes"] < V5E_HBM_BYTES and r["fits_hbm"], name
        assert r["host_round_trips"] == [], (name, r["host_round_trips"])  # nothing leaves the chip mid-step
        gradients = sorted((c for c in r["collectives"] if c["op"] == "all-reduce" and c["bytes"] > 64),
                           key=lambda c: -c["bytes"])
        # One combined all-reduce of the gradient: the parameters' bytes less the cross-attention
        # query and its LayerNorm, which a single memory slot leaves without gradient (models.py).
        assert gradients and 0.85 * r["param_bytes"] <= gradients[0]["bytes"] <= r["param_bytes"], (
            name, gradients, r["param_bytes"])
        # Besides it, in the RL update: the shared-prefix re-forward (sampling.shared_prefix_logits) looks
        # its suffixes' tokens up in a chunk of its own, whose token-embedding gradient (a scatter-add
        # into the V x d_model table: 3 x 16 floats at tiny) XLA reduces apart; CE none.
        extra = gradients[1:]
        assert len(extra) <= (1 if name == "rl_update" else 0), (name, r["collectives"])
        assert all(c["bytes"] <= 3 * 16 * 4 for c in extra), (name, extra)
        # and otherwise only scalar statistics (the weighted mean's denominator, stacked epoch sums)
        assert all(c["bytes"] <= 64 for c in r["collectives"] if c not in gradients), (name, r["collectives"])
        assert {c["op"] for c in r["collectives"]} == {"all-reduce"}, name
    # the epoch is one compiled loop over its batches; the RL update runs the sampler's L - 1 steps
    assert [w["trip_count"] for w in programs["ce_epoch"]["while_loops"]] == [4]
    assert sorted(w["trip_count"] for w in programs["rl_update"]["while_loops"]) == [7, 7]
