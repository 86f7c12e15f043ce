"""Where to take the RL gradient: through the sampling pass, or by a teacher-forced re-forward.

  python benchmarks/grad_pass.py --out benchmarks/results/grad_pass_cpu.json

genre_jax's RL step draws G rollouts (KV-cache sampler, ``lax.scan`` over the L positions), then
differentiates a teacher-forced re-forward over the B·G rollouts. The alternative keeps the sampling
pass's activations and differentiates through the scan itself (no second forward). Both compute the
same policy-gradient loss, -mean(A · sum_t log pi(a_t)), with A from the drawn values; this script
times ``jax.value_and_grad`` of each (jitted, median of ``--repeats`` after a warm-up) at the peer's
``paper`` and ``tiny`` sizes (benchmarks/vs_peer.py) and checks that loss and gradient agree.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from genre_jax import sampling  # noqa: E402
from vs_peer import SIZES, build  # noqa: E402


def losses(size: str):
    _, tok, model, params, batch = build(size)
    x, key, G = jnp.asarray(batch["x"]), jax.random.key(1), SIZES[size]["G"]

    def advantage(tokens_BGL):  # any function of the drawn values; no gradient flows through it
        values_BG = tok.decode(tokens_BGL)
        return values_BG.mean(1, keepdims=True) - values_BG

    def reforward(p):
        tokens_BGL = sampling.sample(model, p, x, key, tok, G, greedy=True).tokens_BGL
        logits = sampling.mask_logits(sampling.rollout_logits(model, p, x, tokens_BGL, tok, masked=False), tok.allowed)
        return -jnp.mean(sampling.token_logprobs(logits, tokens_BGL).sum(-1) * advantage(tokens_BGL))

    def through_sampling(p):
        drawn = sampling.sample(model, p, x, key, tok, G, greedy=True)
        return -jnp.mean(drawn.logp_BGL.sum(-1) * advantage(drawn.tokens_BGL))

    return params, {"reforward": reforward, "through_sampling": through_sampling}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="paper,tiny")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default="benchmarks/results/grad_pass_cpu.json")
    args = ap.parse_args()
    rows = []
    for size in args.sizes.split(","):
        params, fns = losses(size)
        out = {}
        for name, fn in fns.items():
            f = jax.jit(jax.value_and_grad(fn))
            out[name] = jax.block_until_ready(f(params))
            calls = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                jax.block_until_ready(f(params))
                calls.append(time.perf_counter() - start)
            rows.append({"size": size, "gradient": name, "median_s": statistics.median(calls), "calls_s": calls})
        (la, ga), (lb, gb) = out["reforward"], out["through_sampling"]
        gap = max(float(jnp.max(jnp.abs(a - b)) / (jnp.max(jnp.abs(a)) + 1e-12))
                  for a, b in zip(jax.tree.leaves(ga), jax.tree.leaves(gb)))
        rows[-1]["loss_gap"] = rows[-2]["loss_gap"] = abs(float(la) - float(lb))
        rows[-1]["max_rel_grad_gap"] = rows[-2]["max_rel_grad_gap"] = gap
    record = {"command": " ".join(sys.argv), "date": time.strftime("%Y-%m-%d %H:%M"), "jax": jax.__version__,
              "devices": [str(d) for d in jax.devices()], "rows": rows}
    with open(args.out, "w") as f:
        json.dump(record, f, indent=1)
    print("| size | gradient | median s | loss gap | max rel. gradient gap |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['size']} | {r['gradient']} | {r['median_s']:.4f} | {r['loss_gap']:.1e} | {r['max_rel_grad_gap']:.1e} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
