"""Code-metric regression: program text -> peak memory or wall time, with a byte-level Transformer
encoder, IEEE-like number tokens, CE pretraining and RL fine-tuning (GenRe² by default).

Argument: ``<target>[-<variant>]``; target memory (peak_memory_bytes, default) or latency
(wall_time_s); variant quick (default, sized for 2 CPU cores) or tiny (tests).
Data: ``datasets/code_metrics/cpython_tests.jsonl.gz`` (bundled; measured by
``tools/code_measure.py``), or any file in that layout or the public hub's JSONL layout via
``--config.data_dir=<folder> --config.dataset=<file stem>``. Targets are log-scaled, then
quantile-normalized on train (``genre_jax.data.code_metrics.QuantileNormal``); metrics are in those
normalized units. Reward -min((y_hat - y)^2, 50) (the paper's); expert weight 0.1 (IEEE tokens);
prediction = median of 64 samples (``median`` rows of the results).

  quick  byte encoder over the first 512 bytes in patches of 4 (128 positions), d_model 64, 2 layers,
         4 heads, FFN 256, 4 pooled memory slots; number decoder 2 layers; IEEE tokens base 10,
         1 exponent digit, 3 mantissa digits (L = 6); CE lr 1e-3 batch 64, at most 6 epochs
         (patience 2; ~2,500 steps on the bundled data); RL 2 epochs of at most 150 steps at lr 1e-4,
         G = 16; pointwise head with the CE budget; 64 evaluation samples.

Launch (one workdir per target; every method starts from the same CE checkpoint):
  python launch.py --config=experiments/configs/code_metrics.py:memory --workdir=runs/code/memory
  python launch.py --config=experiments/configs/code_metrics.py:memory --workdir=runs/code/memory \
      --config.phases=rl,eval --config.rl.method=remax
  python launch.py --config=experiments/configs/code_metrics.py:memory --workdir=runs/code/memory \
      --config.phases=head,eval --config.head.method=pointwise
  python experiments/code_table.py   # all of the above for both targets, then the results table
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import tabular  # noqa: E402  (same sections and defaults; this file changes what differs)

TARGETS = {"memory": "peak_memory_bytes", "latency": "wall_time_s"}
VARIANTS = ("quick", "tiny")


def get_config(arg: str = ""):
    target, _, variant = (arg or "memory").partition("-")
    variant = variant or "quick"
    if target not in TARGETS or variant not in VARIANTS:
        raise ValueError(f"code_metrics.py: unknown argument {arg!r}; expected <target>[-<variant>] with target in "
                         f"{sorted(TARGETS)} and variant in {VARIANTS}")
    c = tabular.get_config("quick")
    c.variant = f"{target}-{variant}"
    c.data_format = "code_metrics"
    c.data_dir = ""  # "" = the repository's datasets/code_metrics folder
    c.dataset = "cpython_tests"
    c.code = dict(target=TARGETS[target], max_bytes=512)
    c.phases = "ce,rl,eval"
    c.tokenizer.update(name="ieee", base=10, exponent_digits=1, mantissa_digits=3)
    c.model = dict(name="code_decoder", d_model=64, num_layers=2, num_heads=4, d_ff=256, dropout=0.1, enc_layers=2,
                   memory_slots=4, patch_size=4, pos_embedding="learned")
    c.ce.update(learning_rate=1e-3, batch_size=64, max_epochs=6, patience=2, warmup_steps=100)
    c.rl.update(reward="neg_mse_clip50", max_epochs=2, steps_per_epoch=150, learning_rate=1e-4, batch_size=64,
                num_rollouts=16)
    c.token.update(batch_size=64)
    c.head.update(method="pointwise", learning_rate=1e-3, batch_size=64, max_epochs=6, patience=2)
    c.eval.update(num_samples=64, batch_size=256, splits="val,test")
    if variant == "tiny":
        c.code.max_bytes = 64
        c.model.update(d_model=16, num_layers=1, num_heads=2, d_ff=32, enc_layers=1, memory_slots=2, patch_size=2)
        c.ce.update(learning_rate=3e-3, max_epochs=2, patience=2, warmup_steps=5)
        c.rl.update(num_rollouts=4, max_epochs=1)
        c.head.update(max_epochs=2, warmup_steps=5)
        c.eval.update(num_samples=8, batch_size=128)
    return c
