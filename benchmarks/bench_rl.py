"""Throughput of the RL inner loop: KV-cache vs full-recompute sampling, and one GenRe² train step.

For each model size, on all local devices (1-D ``data`` mesh, batch sharded, params replicated):
  * kv_cache        ``sampling.sample(..., greedy=True)``: G samples + 1 greedy decode per input, KV cache;
  * full_recompute  ``sampling.full_recompute_sample``: G samples, the whole prefix re-run each step;
  * rl_step         ``rl.make_rl_update`` jitted by ``loop.jit_update`` (what ``rl.make_rl_steps`` calls), with the paper's genre2 RL config (one update).
Each is compiled ahead of time (``jit(f).lower(...).compile()``, timed), called once to warm up,
then timed ``--repeats`` times with ``jax.block_until_ready``; the median is reported.

Two FLOP counts are recorded. ``xla_flops`` is XLA's cost analysis of the compiled program, which
counts a while loop's body once, not once per iteration: the L-step ``lax.scan`` of the KV-cache
sampler (also inside the RL step) is undercounted about L-fold. ``model_flops`` is an analytic
count of the matmul/attention FLOPs (backward = 2x forward), cross-checked against XLA on the
loop-free full-recompute sampler; GFLOP/s and the fraction of peak use ``model_flops``.
Peak = best median rate of a jitted float32 square matmul on device 0 (default precision), measured
before and after the model benchmarks, so a change in machine load shows up as a difference.

  .venv/bin/python benchmarks/bench_rl.py --sizes paper,quick,tiny --repeats 5 --out benchmarks/results/rl_cpu.json
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # genre_jax and experiments/ live at the repository root

import flax  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from experiments.configs import tabular  # noqa: E402
from genre_jax import loop, models, parallel, rl, sampling, settings  # noqa: E402
from genre_jax.tokenizers import NormalizedTokenizer  # noqa: E402

SIZES = {
    "paper": dict(d_model=256, num_layers=3, num_heads=4, d_ff=1024, mlp_hidden=256, mlp_layers=2),
    # the claim studies' model (experiments/configs/tabular.py quick), with that variant's RL section
    "quick": dict(d_model=128, num_layers=2, num_heads=4, d_ff=512, mlp_hidden=256, mlp_layers=2),
    "tiny": dict(d_model=32, num_layers=1, num_heads=2, d_ff=64, mlp_hidden=32, mlp_layers=2),
}
BATCH, ROLLOUTS, FEATURES = 128, 16, 21
RL_VARIANT = {"quick": "quick"}  # the tabular.py variant whose RL section rl_step runs; "paper" otherwise
TOKENIZER = NormalizedTokenizer(2, 8, -3.0, 3.0)  # L = 8 binary digits over z in [-3, 3]


def model_flops(size: dict, batch: int, rollouts: int, length: int, features: int, vocab: int,
                reforward_positions: int | None = None) -> dict:
    """Analytic matmul + attention FLOPs (2 per multiply-add) of each benchmarked function.

    ``reforward_positions``: the token positions per input the RL step's teacher-forced re-forward
    decodes: G·L for a plain re-forward (the default), or the shared-prefix count
    (``sum(sampling.prefix_capacities(tok, G))``, 79 for binary digits, L = 8, G = 16).

    Elementwise work (layer norms, softmax, sampling, the optimizer update) is left out: it is a few
    percent of the total at these widths, which the full-recompute XLA cross-check confirms.
    """
    d, layers, d_ff = size["d_model"], size["num_layers"], size["d_ff"]
    hidden, mlp_layers = size["mlp_hidden"], size["mlp_layers"]
    encoder = 2 * batch * (features * hidden + (mlp_layers - 1) * hidden * hidden + hidden * d)
    # Cross-attention over the one memory vector: its softmax is over a single key, so the output is
    # cross_out(v) for every query (models.DecoderBlock._cross): the K/V projection (2d²) and the
    # output projection (d²) run once per input and layer, and no per-token query or attention.
    memory = 2 * batch * layers * 3 * d * d

    def decoder(num_tokens, keys):
        # per token and layer: qkv 3d², self-out d², FFN 2·d·d_ff; self-attention over `keys`
        # positions (scores + weighted sum); then the output projection d·V.
        per_layer = 2 * (4 * d * d + 2 * d * d_ff) + 4 * keys * d
        return num_tokens * (layers * per_layer + 2 * d * vocab)

    # The sampler decodes position 0 (BOS) once per input and shares it with the G rollouts and the
    # greedy decode; each of those then runs L - 1 cached steps attending over the whole (masked)
    # cache of length L, as models.DecoderBlock.step does.
    kv_cache = encoder + memory + decoder(batch * (1 + (rollouts + 1) * (length - 1)), length)
    # Each step re-runs the full L-token decoder (and its memory projections). Step 0 reads only
    # constants (BOS then zero padding), so under vmap it stays unbatched: computed once, not once per rollout.
    full_recompute = (encoder + length * memory + decoder(batch * length, length)
                      + (length - 1) * decoder(batch * rollouts * length, length))
    positions = rollouts * length if reforward_positions is None else reforward_positions
    teacher_forced = encoder + memory + decoder(batch * positions, length)
    return {"kv_cache": kv_cache, "full_recompute": full_recompute,
            "rl_step": kv_cache + 3 * teacher_forced}  # forward + backward of the loss ≈ 3x forward


def reforward_positions(tok, rollouts: int) -> int:
    """Positions per input the RL step's re-forward decodes in this code: the shared-prefix count
    where ``sampling.shared_prefix_logits`` exists (older code re-forwards all G·L)."""
    if hasattr(sampling, "prefix_capacities"):
        return sum(sampling.prefix_capacities(tok, rollouts))
    return rollouts * tok.length


def xla_flops(compiled):
    """'flops' of XLA's cost analysis (dict, or list of dicts in older JAX); None when unavailable."""
    try:
        analysis = compiled.cost_analysis()
    except Exception:  # some backends do not implement it
        return None
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else None
    if not analysis or analysis.get("flops") is None or analysis["flops"] < 0:
        return None
    return float(analysis["flops"])


def measure(jitted, args, repeats: int, feeds_state: bool = False) -> dict:
    """AOT compile time, XLA FLOPs, first-call time and ``repeats`` steady-state times of one function."""
    load_before = os.getloadavg()
    start = time.perf_counter()
    lowered = jitted.lower(*args)
    lowered_at = time.perf_counter()
    compiled = lowered.compile()
    compiled_at = time.perf_counter()
    args = list(args)

    def call():
        out = jax.block_until_ready(compiled(*args))
        if feeds_state:  # the train step donates its state: the old buffers are gone
            args[0] = out[0]

    first = time.perf_counter()
    call()
    first_call_s = time.perf_counter() - first
    times = []
    cpu_start, wall_start = time.process_time(), time.perf_counter()
    for _ in range(repeats):
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
    # Process CPU seconds per wall second while timing: ~ cores actually obtained on a CPU backend.
    cpu_per_wall = (time.process_time() - cpu_start) / max(time.perf_counter() - wall_start, 1e-9)
    return {"trace_lower_s": lowered_at - start, "compile_s": compiled_at - lowered_at,
            "first_call_s": first_call_s, "times_s": times, "median_s": statistics.median(times),
            "min_s": min(times), "repeats": repeats, "xla_flops": xla_flops(compiled),
            "process_cpu_per_wall_s": cpu_per_wall, "loadavg_before": load_before,
            "loadavg_after": os.getloadavg()}


def matmul_peak(sizes, repeats: int, device) -> list[dict]:
    out = []
    for n in sizes:
        keys = jax.random.split(jax.random.key(n), 2)
        a, b = (jax.device_put(jax.random.normal(k, (n, n), jnp.float32), device) for k in keys)
        compiled = jax.jit(jnp.matmul).lower(a, b).compile()
        jax.block_until_ready(compiled(a, b))
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            jax.block_until_ready(compiled(a, b))
            times.append(time.perf_counter() - t)
        median = statistics.median(times)
        out.append({"n": n, "times_s": times, "median_s": median, "gflops_per_s": 2 * n ** 3 / median / 1e9})
    return out


def bench_size(name: str, size: dict, repeats: int, mesh) -> list[dict]:
    tok, batch_size, rollouts = TOKENIZER, BATCH, ROLLOUTS
    model = models.TabularRegressor(vocab_size=tok.vocab_size, max_length=tok.length, dropout=0.1, **size)
    params = models.init_params(model, FEATURES, tok.length, jax.random.key(0))
    rng = np.random.default_rng(0)
    z = rng.normal(size=batch_size).astype(np.float32)
    host_batch = {"x": rng.normal(size=(batch_size, FEATURES)).astype(np.float32),
                  "tokens": tok.encode(z)[0].astype(np.int32), "z": z,
                  "weight": np.ones(batch_size, np.float32)}
    rep, data = parallel.replicated(mesh), parallel.batch_sharding(mesh)
    key = parallel.replicate(jax.random.key(1), mesh)
    x = parallel.shard_batch(host_batch["x"], mesh)
    params = parallel.replicate(params, mesh)

    kv_cache = jax.jit(lambda p, x_BF, k: sampling.sample(model, p, x_BF, k, tok, rollouts, 1.0, greedy=True),
                       in_shardings=(rep, data, rep))
    full = jax.jit(lambda p, x_BF, k: sampling.full_recompute_sample(model, p, x_BF, k, tok, rollouts, 1.0),
                   in_shardings=(rep, data, rep))

    config = tabular.get_config(RL_VARIANT.get(name, "paper"))
    config.rl.num_rollouts, config.rl.batch_size = rollouts, batch_size
    rl_settings = settings.resolve(config, tok).rl
    # The optimizer run_rl_phase builds for the paper config (lr 1e-4 as inherited from CE).
    tx = loop.make_optimizer(rl_settings.loop.optim, 1000)
    # The jitted update itself (make_rl_steps wraps it in a plain function), so it can be lowered AOT.
    train_step = loop.jit_update(rl.make_rl_update(model, tok, rl_settings, tx)[0], mesh)
    # A separate copy: donating the state must not free the reference params' buffers.
    state = parallel.replicate(loop.TrainState(jnp.zeros((), jnp.int32), jax.tree.map(jnp.copy, params),
                                                tx.init(params)), mesh)

    analytic = model_flops(size, batch_size, rollouts, tok.length, FEATURES, tok.vocab_size,
                           reforward_positions(tok, rollouts))
    runs = [("kv_cache", kv_cache, (params, x, key), False),
            ("full_recompute", full, (params, x, key), False),
            ("rl_step", train_step, (state, parallel.shard_batch(host_batch, mesh), (params, key)), True)]
    rows = []
    for fn_name, jitted, args, feeds_state in runs:
        print(f"[{name}] {fn_name}: compiling and timing {repeats} calls ...", flush=True)
        r = measure(jitted, args, repeats, feeds_state)
        r.update(size=name, function=fn_name, model_flops=float(analytic[fn_name]),
                 rollouts_per_call=batch_size * rollouts, rollouts_per_s=batch_size * rollouts / r["median_s"])
        rows.append(r)
    return rows


def add_rates(rows, peak_per_device: float, num_devices: int) -> None:
    peak = peak_per_device * num_devices  # samplers and the step are data-parallel over all devices
    for r in rows:
        r["model_flops_per_s"] = r["model_flops"] / r["median_s"]
        r["fraction_of_peak"] = r["model_flops_per_s"] / peak if peak else None
        # XLA analyses the per-device SPMD program; scale by the device count for the whole call.
        xla = None if r["xla_flops"] is None else r["xla_flops"] * num_devices
        r["xla_flops_per_s"] = None if xla is None else xla / r["median_s"]
        r["xla_over_model"] = None if xla is None else xla / r["model_flops"]


def table(rows, speedups) -> str:
    header = ("size", "function", "median ms", "compile s", "XLA GFLOP", "model GFLOP", "GFLOP/s",
              "% peak", "rollouts/s")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        xla = "n/a" if r["xla_flops"] is None else f"{r['xla_flops'] / 1e9:.2f}"
        pct = "n/a" if r["fraction_of_peak"] is None else f"{100 * r['fraction_of_peak']:.1f}"
        cells = (r["size"], r["function"], f"{1e3 * r['median_s']:.1f}",
                 f"{r['trace_lower_s'] + r['compile_s']:.2f}", xla, f"{r['model_flops'] / 1e9:.2f}",
                 f"{r['model_flops_per_s'] / 1e9:.1f}", pct, f"{r['rollouts_per_s']:,.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    lines += [f"KV-cache speedup ({s}): full_recompute / kv_cache = {v:.2f}x" for s, v in speedups.items()]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="paper,quick,tiny", help=f"comma-separated, from {sorted(SIZES)}")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per function (median reported)")
    parser.add_argument("--paper-repeats", type=int, default=None,
                        help="timed calls for the paper size (default: --repeats); fewer keeps CPU runs short")
    parser.add_argument("--matmul-sizes", default="2048,4096", help="square float32 matmul sizes for the peak")
    parser.add_argument("--out", default=None, help="JSON path (default: benchmarks/results/rl_<platform>.json)")
    args = parser.parse_args(argv)
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        parser.error(f"--sizes: unknown {unknown}; expected some of {sorted(SIZES)}")

    started = datetime.datetime.now(datetime.timezone.utc)
    load_start = os.getloadavg()
    devices = jax.devices()
    mesh = parallel.data_mesh()
    if BATCH % mesh.size:
        sys.exit(f"bench_rl.py: batch {BATCH} is not divisible by the {mesh.size} devices")
    matmul_sizes = [int(n) for n in args.matmul_sizes.split(",")]
    print(f"devices: {len(devices)} x {devices[0].device_kind} ({devices[0].platform}); matmul peak ...", flush=True)
    peak_before = matmul_peak(matmul_sizes, args.repeats, devices[0])

    rows = []
    for name in sizes:
        repeats = args.paper_repeats if name == "paper" and args.paper_repeats else args.repeats
        rows += bench_size(name, SIZES[name], repeats, mesh)
    print("matmul peak again ...", flush=True)
    peak_after = matmul_peak(matmul_sizes, args.repeats, devices[0])
    peak = max(m["gflops_per_s"] for m in peak_before + peak_after) * 1e9
    add_rates(rows, peak, len(devices))
    speedups = {}
    for name in sizes:
        by_fn = {r["function"]: r for r in rows if r["size"] == name}
        speedups[name] = by_fn["full_recompute"]["median_s"] / by_fn["kv_cache"]["median_s"]

    print()
    print(table(rows, speedups))
    print(f"matmul peak (device 0, float32, best median): {peak / 1e9:.1f} GFLOP/s; "
          f"before {[round(m['gflops_per_s'], 1) for m in peak_before]}, "
          f"after {[round(m['gflops_per_s'], 1) for m in peak_after]} (sizes {matmul_sizes})")
    load_end = os.getloadavg()
    print(f"load average (1, 5, 15 min): start {load_start}, end {load_end}; cpu_count {os.cpu_count()}")

    result = {
        "command": shlex.join([os.path.relpath(sys.executable, ROOT) if sys.executable.startswith(ROOT)
                               else sys.executable, *sys.argv]),
        "argv": sys.argv, "date_utc": started.isoformat(timespec="seconds"),
        "wall_s": (datetime.datetime.now(datetime.timezone.utc) - started).total_seconds(),
        "device": {"kind": devices[0].device_kind, "platform": devices[0].platform, "count": len(devices),
                   "host": platform.node(), "machine": platform.machine(), "cpu_count": os.cpu_count()},
        "versions": {"python": platform.python_version(), "jax": jax.__version__,
                     "jaxlib": jax.lib.__version__ if hasattr(jax.lib, "__version__") else None,
                     "flax": flax.__version__, "numpy": np.__version__},
        "env": {k: os.environ.get(k) for k in ("XLA_FLAGS", "JAX_PLATFORMS")},
        "loadavg_start": load_start, "loadavg_end": load_end,
        "setup": {"batch": BATCH, "rollouts": ROLLOUTS, "length": TOKENIZER.length, "features": FEATURES,
                  "tokenizer": TOKENIZER.spec(), "sizes": {s: SIZES[s] for s in sizes},
                  "rl_method": tabular.get_config("paper").rl.method, "rl_variant": RL_VARIANT,
                  "reforward_positions_per_input": reforward_positions(TOKENIZER, ROLLOUTS),
                  "repeats": args.repeats,
                  "paper_repeats": args.paper_repeats or args.repeats},
        "notes": {
            "compile_s": "ahead-of-time: trace_lower_s = jit(f).lower(args), compile_s = .compile(); "
                         "the table's 'compile s' is their sum",
            "xla_flops": "XLA cost analysis of the per-device program; counts a while-loop (lax.scan) body "
                         "once, so the KV-cache sampler and the sampling inside rl_step are undercounted",
            "model_flops": "analytic matmul + attention FLOPs of the whole call; rates use this",
            "kv_cache_vs_full": "kv_cache decodes G samples + 1 greedy per input; full_recompute G samples",
            "peak": "best median rate of a jitted float32 n x n matmul on device 0, before and after",
        },
        "matmul_peak_flops_per_s": peak, "matmul_before": peak_before, "matmul_after": peak_after,
        "kv_cache_speedup": speedups, "results": rows,
    }
    if args.out is None:  # named by platform so a GPU/TPU run does not overwrite the CPU numbers
        args.out = os.path.join(ROOT, "benchmarks", "results", f"rl_{devices[0].platform}.json")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
