"""genre_jax against the PyTorch peer of the authors' RL step (../shared/peers/torch_remax), side by side.

  python benchmarks/vs_peer.py --peer_python=/tmp/torchpeer-venv/bin/python --rounds 2 \
      --out benchmarks/results/vs_peer_cpu.json
  # before/after: another checkout's genre_jax timed by the same harness, in alternation
  git worktree add /tmp/base <commit>
  python benchmarks/vs_peer.py --code before=/tmp/base --code after=. --rounds 2 --repeats 3
  # an XLA flag A/B: this checkout twice, one worker with the flag
  python benchmarks/vs_peer.py --peer_python= --code default=. --code ynn_dot=. \
      --flags ynn_dot=--xla_cpu_experimental_ynn_fusion_type=dot --out /tmp/flag_ab.json

Both sides build the same model (the peer's ``paper`` and ``tiny`` sizes, and ``quick``, the claim
studies' widths, which the peer's bench.py is given here: d_model, layers, heads, FFN, MLP encoder,
B inputs, G rollouts, base 2 x 8 digits, 21 features) and time three operations:

  sample   G rollouts + the greedy decode of B inputs, decoded to values
  rl_step  one GenRe² update as released: G rollouts + greedy, rewards against re-quantized targets,
           ReMax advantages, policy loss + 0.05 x expert CE on raw logits, AdamW (no clipping)
  ce_step  one teacher-forced CE update of B inputs (dropout on)

Rounds alternate A B A B (peer, then each genre_jax checkout, per size), so drift on a shared machine
hits all; the table reports the median over all timed calls of each side. Each genre_jax checkout
(``--code name=DIR``, default this one) runs in its own worker process that compiles once and then
times one jitted call per operation on request, each ended by ``jax.block_until_ready``. Every
worker also times a float32 2048 x 2048 matmul at each round; "% peak" is the analytic FLOPs of the
plain step (``bench_rl.model_flops``: KV-cache sampling + greedy, and a teacher-forced forward and
backward over all B·G·L rollout tokens) per second over the best such matmul rate of the run, the
same numerator for every side, so it is an *effective* fraction: a side that skips arithmetic
(the shared-prefix re-forward) can read higher than the fraction its kernels reach.
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
# A worker times the genre_jax of the checkout in VS_PEER_CODE (set by the driver), this one by default.
sys.path.insert(0, os.path.abspath(os.environ.get("VS_PEER_CODE") or REPO))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from experiments.configs import tabular  # noqa: E402
from genre_jax import loop, models, parallel, rl, sampling, settings, supervised  # noqa: E402
from genre_jax.tokenizers import NormalizedTokenizer  # noqa: E402

PEER_DIR = os.path.normpath(os.path.join(REPO, "..", "shared", "peers", "torch_remax"))
# The peer's bench.py knows paper and tiny; quick is given to it in its own fields (PEER_SIZES).
PEER_SIZES = {"quick": dict(d_model=128, n_layers=2, n_heads=4, ffn=512, mlp_hidden=(256, 256), batch=128, G=16)}
# The peer's sizes (its bench.py SIZES), in genre_jax's config fields.
SIZES = {
    "paper": dict(d_model=256, num_layers=3, num_heads=4, d_ff=1024, mlp_hidden=1024, mlp_layers=3, batch=128, G=16),
    "tiny": dict(d_model=64, num_layers=2, num_heads=4, d_ff=256, mlp_hidden=256, mlp_layers=2, batch=32, G=8),
    "quick": dict(d_model=128, num_layers=2, num_heads=4, d_ff=512, mlp_hidden=256, mlp_layers=2, batch=128, G=16),
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


def matmul_rate(n: int = 2048, repeats: int = 5) -> float:
    """Median FLOP/s of a jitted float32 n x n matmul (this machine's matmul peak, as bench_rl.py)."""
    a, b = (jax.random.normal(jax.random.key(k), (n, n), jnp.float32) for k in (0, 1))
    f = jax.jit(jnp.matmul)
    return 2 * n ** 3 / statistics.median(time_calls(lambda: f(a, b), repeats))


def worker(sizes, dtype: str) -> int:
    """Compiles every op of ``sizes`` once, then serves 'SIZE REPEATS' lines on stdin with one JSON line
    {op: [seconds...], "matmul_flops_per_s": rate} each; 'compile' answers the compile seconds."""
    ours = {s: genre_jax_ops(s, dtype=dtype) for s in sizes}
    compile_s = {}
    for s in sizes:
        for op, fn in ours[s].items():
            start = time.perf_counter()
            jax.block_until_ready(fn())
            compile_s[f"{s}/{op}"] = time.perf_counter() - start
    print(json.dumps({"ready": True, "compile_s": compile_s, "module": sys.modules["genre_jax"].__file__}), flush=True)
    for line in sys.stdin:
        size, repeats = line.split()
        out = {op: time_calls(fn, int(repeats)) for op, fn in ours[size].items()}
        out["matmul_flops_per_s"] = matmul_rate()
        print(json.dumps(out), flush=True)
    return 0


def run_peer(python: str, size: str, repeats: int, threads: int, peer_dir: str = PEER_DIR) -> dict[str, list[float]]:
    """The peer's own bench.py at ``size``: {op: [median, min, max]} (it reports those, not every call)."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        path = f.name
    argv = ["--sizes", size, "--threads", str(threads), "--repeats", str(repeats), "--warmup", "1", "--json", path]
    # The peer's own bench.py, with the sizes it lacks added to its SIZES table (nothing else changed).
    script = (f"import sys; sys.path.insert(0, {peer_dir!r}); import bench; bench.SIZES.update({PEER_SIZES!r}); "
              f"bench.main({argv!r})")
    subprocess.run([python, "-c", script], check=True, stdout=subprocess.DEVNULL, cwd=peer_dir)
    with open(path) as f:
        records = json.load(f)
    os.unlink(path)
    return {r["op"]: [r["median_s"], r["min_s"], r["max_s"]] for r in records}


def plain_step_flops(size: str) -> float:
    """Analytic FLOPs of the plain RL step at ``size`` (bench_rl.model_flops: full re-forward)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import bench_rl  # noqa: E402 (only its FLOP count; the driver runs no genre_jax op itself)
    s = SIZES[size]
    return bench_rl.model_flops(s, s["batch"], s["G"], 8, FEATURES, 3)["rl_step"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--peer_python", default="/tmp/torchpeer-venv/bin/python", help='"" = genre_jax only')
    ap.add_argument("--peer_dir", default=PEER_DIR, help="the peer's folder (its bench.py)")
    ap.add_argument("--code", action="append", default=None, metavar="NAME=DIR",
                    help="a genre_jax checkout to time (repeatable, in this order each round); default genre_jax=.")
    ap.add_argument("--flags", action="append", default=None, metavar="NAME=XLA_FLAGS",
                    help="extra XLA_FLAGS for the worker of --code NAME (an XLA flag A/B: one checkout under two names)")
    ap.add_argument("--dtype", default="float32", help="genre_jax's config.model.dtype (float32 | bfloat16)")
    ap.add_argument("--sizes", default="tiny,quick,paper")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5, help="timed calls per side, op and round")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="the peer's torch threads")
    ap.add_argument("--out", default="benchmarks/results/vs_peer_cpu.json")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    sizes = [s for s in args.sizes.split(",") if s]
    if args.worker:
        return worker(sizes, args.dtype)
    codes = [c.split("=", 1) for c in (args.code or ["genre_jax=" + REPO])]
    sides = [name for name, _ in codes]
    workers = {}
    flags = dict(f.split("=", 1) for f in args.flags or [])
    for name, path in codes:  # one process per checkout; they compile one after the other
        env = {**os.environ, "VS_PEER_CODE": os.path.abspath(path),
               "XLA_FLAGS": " ".join(filter(None, [os.environ.get("XLA_FLAGS", ""), flags.get(name, "")]))}
        workers[name] = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker", "--sizes", args.sizes,
                                          "--dtype", args.dtype], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         text=True, env=env, cwd=os.path.abspath(path))
        ready = json.loads(workers[name].stdout.readline())
        workers[name].compile_s = ready["compile_s"]
        print(f"{name}: {ready['module']} compiled in {sum(ready['compile_s'].values()):.1f} s", flush=True)
    timings = {(side, s, op): [] for side in ["peer", *sides] for s in sizes for op in OPS}
    matmul = []
    started = time.time()
    for _ in range(args.rounds):
        for s in sizes:
            peer = (run_peer(args.peer_python, s, args.repeats, args.threads, args.peer_dir) if args.peer_python
                    else {})
            for op, (median, low, high) in peer.items():
                timings[("peer", s, op)].append(median)
            for side in sides:
                workers[side].stdin.write(f"{s} {args.repeats}\n")
                workers[side].stdin.flush()
                out = json.loads(workers[side].stdout.readline())
                matmul.append(out.pop("matmul_flops_per_s"))
                for op, calls in out.items():
                    timings[(side, s, op)].extend(calls)
    for w in workers.values():
        w.stdin.close()
        w.wait()
    peak = max(matmul)
    rows = []
    for s in sizes:
        for op in OPS:
            peer = statistics.median(timings[("peer", s, op)]) if timings[("peer", s, op)] else float("nan")
            row = {"size": s, "op": op, "peer_median_s": peer, "dtype": args.dtype,
                   "peer_round_medians_s": timings[("peer", s, op)], **SIZES[s]}
            for side in sides:
                mine = statistics.median(timings[(side, s, op)])
                row.update({f"{side}_median_s": mine, f"{side}_speedup": peer / mine,
                            f"{side}_compile_s": workers[side].compile_s[f"{s}/{op}"],
                            f"{side}_calls_s": timings[(side, s, op)]})
                if op == "rl_step":
                    row[f"{side}_fraction_of_peak"] = plain_step_flops(s) / mine / peak
            if op == "rl_step":
                row["plain_step_flops"] = plain_step_flops(s)
                row["peer_fraction_of_peak"] = plain_step_flops(s) / peer / peak
            rows.append(row)
    record = {"command": " ".join(sys.argv), "date": time.strftime("%Y-%m-%d %H:%M"), "wall_s": time.time() - started,
              "machine": f"{cpu_model()}, {os.cpu_count()} cpus", "jax": jax.__version__,
              "code": dict(codes), "loadavg_end": os.getloadavg(), "rounds": args.rounds, "repeats": args.repeats,
              "matmul_peak_flops_per_s": peak, "matmul_flops_per_s": matmul,
              "note": "% peak: plain_step_flops / median time / the best 2048 x 2048 float32 matmul rate of the run "
                      "(effective: the same numerator for every side)", "rows": rows}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(record, f, indent=1)
    head = ["size", "op", "PyTorch peer (median s)"]
    for side in sides:
        head += [f"{side} (median s)", f"{side} speed-up"]
    if len(sides) == 2:
        head.append(f"{sides[1]} speed-up over {sides[0]}")
    print(f"{record['machine']}; matmul peak {peak / 1e9:.1f} GFLOP/s (float32 2048^2, best of the run)")
    print("| " + " | ".join(head) + " | % peak (rl_step: " + ", ".join(["peer", *sides]) + ") |")
    print("|" + "---|" * (len(head) + 1))
    for r in rows:
        cells = [r["size"], r["op"], f"{r['peer_median_s']:.4f}"]
        for side in sides:
            cells += [f"{r[side + '_median_s']:.4f}", f"{r[side + '_speedup']:.1f}x"]
        if len(sides) == 2:
            cells.append(f"{r[sides[0] + '_median_s'] / r[sides[1] + '_median_s']:.2f}x")
        pct = (" / ".join(f"{100 * r[k + '_fraction_of_peak']:.1f}" for k in ["peer", *sides])
               if r["op"] == "rl_step" else "")
        print("| " + " | ".join(cells) + f" | {pct} |")
    return 0


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


if __name__ == "__main__":
    sys.exit(main())
