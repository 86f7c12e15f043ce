"""Train state, jitted steps and the readable loop of each training phase.

CE pretraining: teacher-forced token cross-entropy, AdamW with warmup + cosine decay to a floor,
validation CE after every epoch, early stopping, best-validation params kept under ``<workdir>/ce``.
The loop checkpoints its full state each epoch, so re-running with the same workdir resumes; the
shuffling order and dropout keys are derived from (seed, epoch, step), so a resumed run reproduces
an uninterrupted one.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from genre_jax import objectives, parallel, sampling
from genre_jax.checkpoint import PhaseCheckpoints
from genre_jax.errors import GenreError


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    opt_state: Any


@dataclasses.dataclass(frozen=True)
class Task:
    """What every phase needs: the model, its tokenizer and token-encoded splits."""
    model: Any
    tokenizer: Any
    arrays: dict[str, dict[str, np.ndarray]]  # split -> {"x": [N, F], "tokens": [N, L], "z": [N]}


def encode_splits(data, tokenizer) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, int]]:
    """Token-encodes every split; returns the arrays and how many targets each split clipped."""
    arrays, clipped = {}, {}
    for name, split in data.splits.items():
        tokens, clipped[name] = tokenizer.encode(split.z)
        arrays[name] = {"x": split.x, "tokens": tokens, "z": split.z.astype(np.float32)}
    return arrays, clipped


def make_optimizer(cfg, total_steps: int) -> optax.GradientTransformation:
    warmup = min(int(cfg.warmup_steps), max(total_steps - 1, 0))
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=cfg.learning_rate, warmup_steps=warmup,
        decay_steps=max(total_steps, warmup + 1), end_value=cfg.learning_rate * cfg.lr_floor)
    chain = [optax.clip_by_global_norm(cfg.grad_clip)] if cfg.grad_clip > 0 else []
    return optax.chain(*chain, optax.adamw(schedule, weight_decay=cfg.weight_decay))


def ce_loss_fn(task: Task, objective=objectives.token_cross_entropy):
    """Teacher-forced token loss over the decoder's masked logits: (params, batch, key, train) -> (sum, count)."""
    model, tokenizer = task.model, task.tokenizer

    def loss_fn(params, batch, key, train):
        logits = sampling.teacher_forced_logits(model, params, batch["x"], batch["tokens"], tokenizer, train,
                                                rngs={"dropout": key} if train else None)
        return objective(logits, batch["tokens"], batch["weight"])

    return loss_fn


def make_supervised_steps(loss_fn, tx: optax.GradientTransformation, mesh):
    """Jitted (train_step, eval_step) for a loss returning (sum, count); batch sharded, state replicated."""

    def mean_loss(params, batch, key, train):
        total, count = loss_fn(params, batch, key, train)
        return total / jnp.maximum(count, 1.0), (total, count)

    def train_step(state: TrainState, batch, base_key):
        key = jax.random.fold_in(base_key, state.step)
        grads, (total, count) = jax.grad(mean_loss, has_aux=True)(state.params, batch, key, True)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        new_state = TrainState(state.step + 1, optax.apply_updates(state.params, updates), opt_state)
        return new_state, jnp.stack([total, count])

    def eval_step(params, batch):
        _, (total, count) = mean_loss(params, batch, None, False)
        return jnp.stack([total, count])

    rep, data = parallel.replicated(mesh), parallel.batch_sharding(mesh)
    train_step = jax.jit(train_step, in_shardings=(rep, data, rep), out_shardings=(rep, rep), donate_argnums=0)
    eval_step = jax.jit(eval_step, in_shardings=(rep, data), out_shardings=rep)
    return train_step, eval_step


def mean_loss(eval_step, params, arrays, batch_size: int, mesh) -> float:
    sums = [eval_step(params, parallel.shard_batch(b, mesh)) for b in parallel.padded_batches(arrays, batch_size)]
    total, count = np.sum(np.asarray(jax.device_get(sums)), axis=0)
    return float(total / count)


def truncate_log(path: str, num_epochs: int) -> None:
    """Drops log lines of epochs after the resumed checkpoint (a crash may have logged them first)."""
    if not os.path.exists(path) or not parallel.is_main_process():
        return
    with open(path) as f:
        kept = [line for line in f if line.strip() and json.loads(line)["epoch"] < num_epochs]
    with open(path, "w") as f:
        f.writelines(kept)


def append_log(path: str, record: dict) -> None:
    if not parallel.is_main_process():
        return
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def run_ce_phase(config, task: Task, params_init, workdir: str, mesh, meta: dict) -> Any:
    """CE pretraining with early stopping; returns the best-validation params (resuming if possible)."""
    return run_supervised_phase(config, config.ce, "ce", ce_loss_fn(task), task.arrays, ("x", "tokens"),
                                params_init, workdir, mesh, meta)


def run_supervised_phase(config, cfg, phase: str, loss_fn, arrays, fields, params_init, workdir: str, mesh,
                         meta: dict) -> Any:
    """Minimizes ``loss_fn`` with early stopping on its validation value; checkpoints under
    ``<workdir>/<phase>``; returns the best-validation params (resuming if possible)."""
    train = {k: arrays["train"][k] for k in fields}
    val = {k: arrays["val"][k] for k in fields}
    batch_size = parallel.round_up(int(cfg.batch_size), mesh.size)
    steps_per_epoch = -(-len(train["x"]) // batch_size)
    tx = make_optimizer(cfg, int(cfg.max_epochs) * steps_per_epoch)
    train_step, eval_step = make_supervised_steps(loss_fn, tx, mesh)
    ckpt = PhaseCheckpoints(workdir, phase)

    state = parallel.replicate(TrainState(jnp.zeros((), jnp.int32), params_init, tx.init(params_init)), mesh)
    progress = {"epoch": 0, "best_val": float("inf"), "best_epoch": -1, "bad_epochs": 0, "done": False}
    if ckpt.has("last"):
        state, progress = ckpt.restore("last", state)
    if progress["done"]:
        return ckpt.restore("best", state.params)[0]

    base_key = jax.random.key(int(config.seed))
    log_path = os.path.join(ckpt.root, "log.jsonl")
    truncate_log(log_path, progress["epoch"])
    bar = tqdm(range(progress["epoch"], int(cfg.max_epochs)), desc=phase, unit="epoch", initial=progress["epoch"],
               total=int(cfg.max_epochs), dynamic_ncols=True)
    for epoch in bar:
        order = np.random.default_rng([int(config.seed), epoch]).permutation(len(train["x"]))
        sums = []
        for batch in parallel.padded_batches(train, batch_size, order):
            state, s = train_step(state, parallel.shard_batch(batch, mesh), base_key)
            sums.append(s)
        train_total, train_count = np.sum(np.asarray(jax.device_get(sums)), axis=0)
        val_loss = mean_loss(eval_step, state.params, val, batch_size, mesh)
        if not np.isfinite(val_loss):
            raise GenreError(f"{phase} phase: validation loss became {val_loss} at epoch {epoch}; "
                             f"lower its learning_rate")
        improved = val_loss < progress["best_val"]
        progress = {"epoch": epoch + 1, "best_val": min(val_loss, progress["best_val"]),
                    "best_epoch": epoch if improved else progress["best_epoch"],
                    "bad_epochs": 0 if improved else progress["bad_epochs"] + 1, "done": False}
        progress["done"] = progress["bad_epochs"] >= int(cfg.patience) or epoch + 1 == int(cfg.max_epochs)
        record = {"epoch": epoch, "train_loss": float(train_total / train_count), "val_loss": val_loss,
                  "best_val_loss": progress["best_val"]}
        append_log(log_path, record)
        if improved:
            ckpt.save("best", epoch, state.params, {**meta, "epoch": epoch, "val_loss": val_loss})
        ckpt.save("last", epoch, state, progress)
        bar.set_postfix(train=f"{record['train_loss']:.4f}", val=f"{val_loss:.4f}", best=f"{progress['best_val']:.4f}")
        if progress["done"]:
            break
    bar.close()
    return ckpt.restore("best", state.params)[0]


def run_token_phase(config, task: Task, ce_params, workdir: str, mesh, meta: dict) -> Any:
    """Token-level baseline (config.token.method: ce, ntl_mse, ntl_was, dist2) fine-tuned from the CE
    checkpoint, early-stopped on its own validation loss; checkpoints under ``<workdir>/token/<method>``.

    Reads config.token.{method, weight, tau, learning_rate, weight_decay, batch_size, max_epochs,
    patience, warmup_steps, lr_floor, grad_clip}; weight None = the method's default.
    """
    cfg = config.token
    method = str(cfg.method)
    objective = objectives.make_token_objective(method, task.tokenizer, cfg.weight, cfg.tau)
    weight = objectives.TOKEN_LOSS_DEFAULTS.get(method) if cfg.weight is None else float(cfg.weight)
    # the train step donates its state, which would invalidate the caller's CE params
    params_init = jax.tree.map(jnp.copy, ce_params)
    meta = {**meta, "token": {"method": method, "weight": weight, "tau": float(cfg.tau)}}
    return run_supervised_phase(config, cfg, f"token/{method}", ce_loss_fn(task, objective), task.arrays,
                                ("x", "tokens"), params_init, workdir, mesh, meta)
