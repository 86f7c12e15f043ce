"""Where an RL epoch's time goes at the claim studies' shapes: one update against one validation batch.

  python benchmarks/bench_rl_epoch.py --tokenizers 2x8,4x6 --out benchmarks/results/rl_epoch_cpu.json

For each tokenizer (base x digits), with the claim studies' model and RL section
(``experiments/configs/tabular.py:quick``, GenRe², batch 128, G = 16, ``eval.decode=auto``), times
the jitted train update (``rl.make_rl_update`` through ``loop.jit_update``, as ``run_rl_phase`` runs
it) and the jitted validation step of one batch under two settings: the ``reward`` rule alone
(G sampled rollouts and the greedy decode) and both rules (``rl.both_selections``: the
``aggregate_rmse`` rule's mean is exact where the tokenizer allows at most 4,096 sequences, so the
whole prefix tree is decoded for every validation input, each epoch). From those it splits an epoch
of ``--train_rows`` / ``--val_rows`` (bank8FM's ~5.2k / 1.3k by default) into updates and validation.
Random parameters: the time of a step does not depend on their values. Medians of ``--repeats``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from experiments.configs import tabular  # noqa: E402
from genre_jax import exact, loop, models, parallel, rl, settings  # noqa: E402
from genre_jax.tokenizers import NormalizedTokenizer  # noqa: E402

FEATURES, BATCH = 8, 128


def median_time(fn, repeats: int) -> tuple[float, float]:
    """(first call, compile included; median of ``repeats`` further calls), seconds."""
    start = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return first, statistics.median(times)


def bench_tokenizer(base: int, digits: int, repeats: int, mesh) -> dict:
    tok = NormalizedTokenizer(base, digits, -3.0, 3.0)
    rng = np.random.default_rng(0)
    z = rng.normal(size=BATCH).astype(np.float32)
    batch = parallel.shard_batch({"x": rng.normal(size=(BATCH, FEATURES)).astype(np.float32),
                                  "tokens": tok.encode(z)[0].astype(np.int32), "z": z,
                                  "weight": np.ones(BATCH, np.float32)}, mesh)
    key = parallel.replicate(jax.random.key(1), mesh)
    row = {"tokenizer": f"{base}x{digits}", "sequences": exact.num_sequences(tok)}
    config = tabular.get_config("quick")
    config.tokenizer.update(base=base, digits=digits)
    config.eval.update(decode="auto", num_samples=128)
    config.rl.update(method="genre2", batch_size=BATCH, num_rollouts=16, keep_start=False, requantize_targets=True)
    model = models.make_model(config.model, tok)
    params = parallel.replicate(models.init_params(model, FEATURES, tok.length, jax.random.key(0)), mesh)
    for name, both in (("reward", False), ("both_rules", True)):
        config.rl.both_selections = both
        run = settings.resolve(config, tok)
        tx = loop.make_optimizer(run.rl.loop.optim, 1000)
        update, val_fn = rl.make_rl_update(model, tok, run.rl, tx)
        val_step = loop.jit_eval(val_fn, mesh)
        row[f"val_{name}_first_s"], row[f"val_{name}_s"] = median_time(lambda: val_step(params, batch, key), repeats)
        row[f"val_{name}_exact_mean"] = run.rl.selection_decode == "exact" and both
        if not both:  # the update is the same under either rule
            train_step = loop.jit_update(update, mesh)
            state = [parallel.replicate(loop.TrainState(jnp.zeros((), jnp.int32), jax.tree.map(jnp.copy, params),
                                                         tx.init(params)), mesh)]

            def step():
                state[0], stats = train_step(state[0], batch, (params, key))
                return stats

            row["update_first_s"], row["update_s"] = median_time(step, repeats)
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokenizers", default="2x8,4x6", help="comma-separated base x digits")
    ap.add_argument("--train_rows", type=int, default=5243)
    ap.add_argument("--val_rows", type=int, default=1311)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=None, help="JSON path (default: print only)")
    args = ap.parse_args(argv)
    try:
        shapes = [tuple(int(n) for n in t.split("x")) for t in args.tokenizers.split(",")]
    except ValueError:
        ap.error(f"--tokenizers: expected base x digits pairs like 2x8,4x6, got {args.tokenizers!r}")
    mesh = parallel.data_mesh()
    if BATCH % mesh.size:
        sys.exit(f"bench_rl_epoch.py: batch {BATCH} is not divisible by the {mesh.size} devices")
    started = datetime.datetime.now(datetime.timezone.utc)
    rows = [bench_tokenizer(base, digits, args.repeats, mesh) for base, digits in shapes]
    updates, val_batches = math.ceil(args.train_rows / BATCH), math.ceil(args.val_rows / BATCH)
    print(f"{jax.devices()[0].device_kind} x {mesh.size}; batch {BATCH}, G 16; an epoch of {args.train_rows} train "
          f"rows ({updates} updates) and {args.val_rows} validation rows ({val_batches} batches)")
    print("| tokenizer | sequences | update s | val batch s: reward / both rules | epoch s: updates + val (both) "
          "| validation's share |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        train, val = updates * r["update_s"], val_batches * r["val_both_rules_s"]
        r.update(epoch_updates_s=train, epoch_val_both_rules_s=val, val_share=val / (train + val))
        print(f"| {r['tokenizer']} | {r['sequences']} | {r['update_s']:.3f} | {r['val_reward_s']:.3f} / "
              f"{r['val_both_rules_s']:.3f}{' (exact mean)' if r['val_both_rules_exact_mean'] else ''} | "
              f"{train:.1f} + {val:.1f} | {100 * r['val_share']:.0f} % |")
    if args.out:
        result = {"command": " ".join(["python", *sys.argv]), "date_utc": started.isoformat(timespec="seconds"),
                  "device": {"kind": jax.devices()[0].device_kind, "count": mesh.size, "host": platform.node(),
                             "cpu_count": os.cpu_count()},
                  "versions": {"jax": jax.__version__, "python": platform.python_version()},
                  "setup": {"batch": BATCH, "rollouts": 16, "features": FEATURES, "train_rows": args.train_rows,
                            "val_rows": args.val_rows, "repeats": args.repeats, "config": "tabular.py:quick, genre2"},
                  "rows": rows}
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
