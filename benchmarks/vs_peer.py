"""genre_jax against the PyTorch peer of the authors' RL step (../shared/peers/torch_remax), side by side.

  python benchmarks/vs_peer.py --peer_python=/tmp/torchpeer-venv/bin/python --rounds 2 \
      --out benchmarks/results/vs_peer_cpu.json

Both sides build the same model (the peer's ``paper`` and ``tiny`` sizes: d_model, layers, heads, FFN,
MLP encoder, B inputs, G rollouts, base 2 x 8 digits, 21 features) and time three operations:

  sample   G rollouts + the greedy decode of B inputs, decoded to values
  rl_step  one GenRe² update as released: G rollouts + greedy, rewards against re-quantized targets,
           ReMax advantages, policy loss + 0.05 x expert CE on raw logits, AdamW (no clipping)
  ce_step  one teacher-forced CE update of B inputs (dropout on)

Rounds alternate A B A B (peer, then genre_jax, per size), so drift on a shared machine hits both;
the table reports the median over all timed calls of each side. genre_jax times one jitted call per
operation after compiling, each ended by ``jax.block_until_ready``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from experiments.configs import tabular  # noqa: E402
from genre_jax import loop, models, parallel, rl, sampling, settings, supervised  # noqa: E402
from genre_jax.tokenizers import NormalizedTokenizer  # noqa: E402

PEER_DIR = os.path.normpath(os.path.join(REPO, "..", "shared", "peers", "torch_remax"))
# The peer's sizes (its bench.py SIZES), in genre_jax's config fields.
SIZES = {
    "paper": dict(d_model=256, num_layers=3, num_heads=4, d_ff=1024, mlp_hidden=1024, mlp_layers=3, batch=128, G=16),
    "tiny": dict(d_model=64, num_layers=2, num_heads=4, d_ff=256, mlp_hidden=256, mlp_layers=2, batch=32, G=8),
}
OPS = ("sample", "rl_step", "ce_step")
FEATURES = 21


def build(size: str, seed: int = 0, dtype: str = "float32"):
    """The peer's model at ``size`` as genre_jax builds it, the paper variant's RL section with its
    B and G: (config, tokenizer, model, params, a host batch of B random inputs and targets)."""
    s = SIZES[size]
    config = tabular.get_config("paper")
    config.model.update({k: v for k, v in s.items() if k in config.model})
    config.model.dtype = dtype
    config.rl.update(num_rollouts=s["G"], batch_size=s["batch"], learning_rate=1e-5)
    tok = NormalizedTokenizer(2, 8, -2.5, 3.5)
    model = models.make_model(config.model, tok)
    rng = np.random.default_rng(seed)
    z = rng.uniform(-2.5, 3.5, s["batch"]).astype(np.float32)
    batch = {"x": rng.standard_normal((s["batch"], FEATURES)).astype(np.float32), "tokens": tok.encode(z)[0], "z": z,
             "weight": np.ones(s["batch"], np.float32)}
    params = models.init_params(model, FEATURES, tok.length, jax.random.key(seed))
    return config, tok, model, params, batch


def genre_jax_ops(size: str, seed: int = 0, dtype: str = "float32"):
    """{op: timed callable} at ``size``, as released (the paper variant's RL section)."""
    s = SIZES[size]
    config, tok, model, params, batch = build(size, seed, dtype)
    resolved = settings.resolve(config, tok)
    mesh = parallel.data_mesh()
    sharded = parallel.shard_batch(batch, mesh)
    key = jax.random.key(1)

    def fresh_state(tx):
        p = jax.tree.map(jnp.copy, params)
        return parallel.replicate(loop.TrainState(jnp.zeros((), jnp.int32), p, tx.init(p)), mesh)

    rl_tx = loop.make_optimizer(resolved.rl.loop.optim, 1000)
    rl_step = rl.make_rl_steps(model, tok, resolved.rl, rl_tx, mesh)[0]
    ce_tx = loop.make_optimizer(resolved.ce.optim, 1000)
    ce_step = supervised.supervised_steps(supervised.decoder_loss_fn(model, tok, masked=False), ce_tx, mesh, key)[0]
    predict = jax.jit(lambda p, x, k: sampling.predict(model, p, x, k, tok, s["G"]))
    states = {"rl": fresh_state(rl_tx), "ce": fresh_state(ce_tx)}

    def run_rl():
        states["rl"] = rl_step(states["rl"], params, sharded, key)[0]
        return states["rl"]

    def run_ce():
        states["ce"] = ce_step(states["ce"], {k: sharded[k] for k in ("x", "tokens", "weight")})[0]
        return states["ce"]

    return {"sample": lambda: predict(params, sharded["x"], key), "rl_step": run_rl, "ce_step": run_ce}


def time_calls(fn, repeats: int, warmup: int = 1) -> list[float]:
    for _ in range(warmup):
        jax.block_until_ready(fn())
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        out.append(time.perf_counter() - start)
    return out


def run_peer(python: str, size: str, repeats: int, threads: int) -> dict[str, list[float]]:
    """The peer's own bench.py at ``size``: {op: [median, min, max]} (it reports those, not every call)."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        path = f.name
    subprocess.run([python, os.path.join(PEER_DIR, "bench.py"), "--sizes", size, "--threads", str(threads),
                    "--repeats", str(repeats), "--warmup", "1", "--json", path], check=True,
                   stdout=subprocess.DEVNULL)
    with open(path) as f:
        records = json.load(f)
    os.unlink(path)
    return {r["op"]: [r["median_s"], r["min_s"], r["max_s"]] for r in records}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--peer_python", default="/tmp/torchpeer-venv/bin/python", help='"" = genre_jax only')
    ap.add_argument("--dtype", default="float32", help="genre_jax's config.model.dtype (float32 | bfloat16)")
    ap.add_argument("--sizes", default="paper,tiny")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5, help="timed calls per side, op and round")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="the peer's torch threads")
    ap.add_argument("--out", default="benchmarks/results/vs_peer_cpu.json")
    args = ap.parse_args()
    sizes = [s for s in args.sizes.split(",") if s]
    ours = {s: genre_jax_ops(s, dtype=args.dtype) for s in sizes}
    compile_s = {}
    for s in sizes:  # compile outside the timed rounds
        for op, fn in ours[s].items():
            start = time.perf_counter()
            jax.block_until_ready(fn())
            compile_s[(s, op)] = time.perf_counter() - start
    timings = {(side, s, op): [] for side in ("peer", "genre_jax") for s in sizes for op in OPS}
    started = time.time()
    for _ in range(args.rounds):
        for s in sizes:
            peer = run_peer(args.peer_python, s, args.repeats, args.threads) if args.peer_python else {}
            for op, (median, low, high) in peer.items():
                timings[("peer", s, op)].append(median)
            for op, fn in ours[s].items():
                timings[("genre_jax", s, op)].extend(time_calls(fn, args.repeats))
    rows = []
    for s in sizes:
        for op in OPS:
            mine = statistics.median(timings[("genre_jax", s, op)])
            peer = statistics.median(timings[("peer", s, op)]) if timings[("peer", s, op)] else float("nan")
            rows.append({"size": s, "op": op, "peer_median_s": peer, "genre_jax_median_s": mine,
                         "speedup": peer / mine, "genre_jax_compile_s": compile_s[(s, op)], "dtype": args.dtype,
                         "peer_round_medians_s": timings[("peer", s, op)],
                         "genre_jax_calls_s": timings[("genre_jax", s, op)], **SIZES[s]})
    record = {"command": " ".join(sys.argv), "date": time.strftime("%Y-%m-%d %H:%M"), "wall_s": time.time() - started,
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus",
              "devices": [str(d) for d in jax.devices()], "jax": jax.__version__,
              "loadavg_end": os.getloadavg(), "rounds": args.rounds, "repeats": args.repeats, "rows": rows}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(record, f, indent=1)
    print("| size | op | PyTorch peer (median s) | genre_jax (median s) | speed-up |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['size']} | {r['op']} | {r['peer_median_s']:.4f} | {r['genre_jax_median_s']:.4f} | "
              f"{r['speedup']:.1f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
