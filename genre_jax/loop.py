"""The one training loop behind every trained phase: CE, token-level fine-tuning, heads and RL.

A phase brings a ``Phase``: an update factory (given the optimizer, it returns the pure update of one
batch and the replicated values it reads), a validation function and a few switches. The loop runs a
whole epoch's updates as one compiled ``lax.scan`` over the stacked batches (one Python round trip
per epoch: on small models dispatch, not arithmetic, dominates a step), or one call per batch when a
profiler traces single steps. The loop owns everything else: the optimizer and
its schedule, the train state, resume from ``<workdir>/<folder>/last``, the epochs and their
shuffling, the progress bar, ``log.jsonl``, selection of the best epoch by the first validation value
(and by any further rule a phase names: ``Selection``), early stopping, the non-finite stop and the ``best`` / ``last`` checkpoints.

Shuffling and dropout keys derive from (seed, phase, epoch, step), and the state is checkpointed after
every epoch (or, with ``checkpoint_every_s``, every that many seconds, at the phase's end and on SIGTERM),
so a resumed phase reproduces an uninterrupted one. With ``rng_streams = per_phase`` each
phase draws from its own stream (keyed by its folder); ``shared`` is the older layout, kept so runs
made with it reproduce: every supervised phase replays CE's dropout keys and batch orders, and RL's
keys equal CE's step-2/3 dropout keys.
"""
from __future__ import annotations

import dataclasses
import itertools
import os
import time
import zlib
from typing import Any, Callable, NamedTuple

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from genre_jax import parallel, preemption, runlog
from genre_jax.checkpoint import PhaseCheckpoints
from genre_jax.errors import GenreError
from genre_jax.settings import Loop, Optim


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    opt_state: Any


class LossSums(NamedTuple):
    """A supervised batch's loss sum and the count it is a sum over (examples or tokens)."""
    loss: jax.Array
    count: jax.Array


def learning_rate_schedule(optim: Optim, total_steps: int) -> optax.Schedule:
    """Linear warmup, then cosine decay to ``learning_rate * lr_floor`` at ``total_steps``."""
    warmup = min(optim.warmup_steps, max(total_steps - 1, 0))
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=optim.learning_rate, warmup_steps=warmup,
        decay_steps=max(total_steps, warmup + 1), end_value=optim.learning_rate * optim.lr_floor)


@parallel.reused  # the same optimizer object for the same settings: the steps closing over it are reused too
def make_optimizer(optim: Optim, total_steps: int) -> optax.GradientTransformation:
    """AdamW on ``learning_rate_schedule``, after global-norm clipping."""
    chain = [optax.clip_by_global_norm(optim.grad_clip)] if optim.grad_clip > 0 else []
    return optax.chain(*chain, optax.adamw(learning_rate_schedule(optim, total_steps),
                                           weight_decay=optim.weight_decay))


class Selection(NamedTuple):
    """A further rule the loop keeps a best checkpoint by, beside the first validation value's ``best``:
    under ``<folder>/best_<name>`` (``best_checkpoint``), its record in the progress under "also"."""
    name: str
    value: str  # the validation value it reads
    maximize: bool


def best_checkpoint(selection_name: str) -> str:
    """The checkpoint a further selection rule's best epoch is kept in (``PhaseCheckpoints``' ``which``)."""
    return f"best_{selection_name}"


def _improves(value: float, best: float, maximize: bool) -> bool:
    return value > best if maximize else value < best


@dataclasses.dataclass(frozen=True)
class RLPart:
    """What only an RL phase brings to the loop (``Phase.rl``); the defaults are a supervised phase's."""
    # The starting params compete as epoch -1 (saved as best step 0; rl.keep_start).
    start_competes: bool = False
    # A resumed run must share it, and a finished phase continues when max_epochs is raised.
    fingerprint: dict | None = None
    also_best: tuple[Selection, ...] = ()  # further rules with a best checkpoint each (rl.both_selections)
    updates_per_step: int = 1  # optimizer updates per batch (GRPO's ppo_epochs), for the schedule's length
    rollouts_per_example: int = 0  # G, so TensorBoard gets rollouts/s


@dataclasses.dataclass(frozen=True)
class Phase:
    """What one phase brings to the loop."""
    folder: str  # checkpoints and log under <workdir>/<folder>; also the progress bar's label
    settings: Loop
    # tx -> (update, extras): update(state, batch, extras) -> (state, stats NamedTuple of sums, "count"
    # last), pure; extras: what it reads besides the batch (keys, reference params), replicated
    make_step: Callable
    validate: Callable  # params -> {name: value}; the first entry picks the best epoch
    fields: tuple[str, ...]  # the arrays a train batch carries
    maximize: bool = False
    shuffle_offset: int = 0  # shared streams: epoch e is shuffled by rng([seed, shuffle_offset + e])
    meta: dict = dataclasses.field(default_factory=dict)  # into every best checkpoint's meta
    rl: RLPart = RLPart()


class Cadence:
    """When ``last`` is next written: after every epoch (``every_s`` 0), or once ``every_s`` seconds
    have passed since the previous write. An Orbax save costs a fixed ~0.2 s on 2 CPU cores (1.6-2.2 s
    for a paper-size RL state), more than a small dataset's whole epoch; resuming from an older
    ``last`` retrains the epochs after it to the same result, deterministically."""

    def __init__(self, every_s: float):
        self.every_s, self.since = every_s, time.perf_counter()

    def due(self) -> bool:
        # every process must agree: an Orbax save is collective on several hosts
        return self.every_s <= 0 or parallel.any_process(time.perf_counter() - self.since >= self.every_s)

    def wrote(self) -> None:
        self.since = time.perf_counter()


def stream_id(folder: str) -> int:
    return zlib.crc32(folder.encode()) & 0x7FFFFFFF


def phase_key(seed: int, settings: Loop, folder: str) -> jax.Array:
    """The base PRNG key of the phase training under ``folder`` (see the module docstring)."""
    key = jax.random.key(seed)
    return jax.random.fold_in(key, stream_id(folder)) if settings.rng_streams == "per_phase" else key


def epoch_order(seed: int, phase: "Phase", epoch: int, num_rows: int) -> np.ndarray:
    """The order the train rows are visited in during ``epoch``."""
    if phase.settings.rng_streams == "per_phase":
        entropy = [seed, stream_id(phase.folder), epoch]
    else:
        entropy = [seed, phase.shuffle_offset + epoch]
    return np.random.default_rng(entropy).permutation(num_rows)


def split_sums(step, params, arrays: dict, batch_size: int, mesh, key=None) -> dict[str, float]:
    """Exact means over a whole split of ``step(params, batch[, key_i])``'s stats NamedTuple."""
    sums = []
    for i, batch in enumerate(parallel.padded_batches(arrays, batch_size)):
        args = (params, parallel.shard_batch(batch, mesh)) + (() if key is None else (jax.random.fold_in(key, i),))
        sums.append(step(*args))
    return mean_stats(sums)


def steps_per_epoch(num_rows: int, batch_size: int, cap: int = 0) -> int:
    steps = -(-num_rows // batch_size)
    return min(steps, cap) if cap > 0 else steps


def mean_stats(sums: list) -> dict[str, float]:
    """Exact means of a list of stats NamedTuples (sums, with ``count`` last), each of one batch or
    of a scanned epoch's batches stacked."""
    names = type(sums[0])._fields
    totals = np.sum(np.asarray([[np.sum(f) for f in s] for s in jax.device_get(sums)]), axis=0)
    return dict(zip(names[:-1], (totals[:-1] / totals[-1]).tolist()))


@parallel.reused
def jit_eval(eval_fn, mesh):
    """A validation step ``eval_fn(params, batch, ...)`` jitted with the batch split over the devices."""
    return parallel.data_parallel(eval_fn, mesh)


@parallel.reused
def jit_update(update, mesh):
    """``update(state, batch, extras)`` jitted for one batch: the batch split over the devices, the rest
    replicated, the state donated."""
    return parallel.data_parallel(update, mesh, batch_args=(1,), donate_argnums=0)


@parallel.reused
def jit_epoch(update, mesh):
    """``update`` scanned over stacked batches [S, B, ...] in one compiled call; stats come back stacked."""

    def epoch(state, batches, extras):
        return jax.lax.scan(lambda carry, batch: update(carry, batch, extras), state, batches)

    return parallel.data_parallel(epoch, mesh, batch_args=(1,), donate_argnums=0, batch_axis=1)


def run(ctx, phase: Phase, params_init) -> tuple[Any, dict]:
    """Trains ``phase`` from ``params_init`` (or resumes it); returns (best params, progress)."""
    cfg, mesh = phase.settings, ctx.mesh
    train = {k: ctx.arrays["train"][k] for k in phase.fields}
    batch_size = parallel.batch_size_for(cfg.batch_size, len(train["x"]), mesh)
    steps = steps_per_epoch(len(train["x"]), batch_size, cfg.steps_per_epoch)
    rl = phase.rl
    total_updates = cfg.max_epochs * steps * rl.updates_per_step
    tx = make_optimizer(cfg.optim, total_updates)
    schedule = learning_rate_schedule(cfg.optim, total_updates)
    update, extras = phase.make_step(tx)
    per_step = ctx.profiler is not None
    step = jit_update(update, mesh) if per_step else jit_epoch(update, mesh)
    tail_step = None  # the trimmed last batch's update (config.last_batch = trim), compiled when first used
    ckpt = PhaseCheckpoints(ctx.workdir, phase.folder)
    params = jax.tree.map(jnp.copy, params_init)  # the step donates its state; the caller keeps its params
    state = parallel.replicate(TrainState(jnp.zeros((), jnp.int32), params, tx.init(params)), mesh)

    # ----- resume, or start
    start_step = 1 if rl.start_competes else 0  # best step = epoch + start_step (the start is step 0)
    if ckpt.has("last"):
        state, progress = ckpt.restore("last", state)
        if rl.fingerprint is not None and progress.get("settings") != rl.fingerprint:
            raise GenreError(f"{ckpt.root}: holds a run with other settings ({progress.get('settings')}); "
                             f"use a fresh --workdir or the same config.{cfg.section}")
        # best checkpoints newer than ``last`` are of epochs this run trains again (and saves again)
        ckpt.discard_after("best", progress["best_epoch"] + start_step)
        for s in rl.also_best:
            record = progress.get("also", {}).get(s.name, {"best_epoch": -1})
            ckpt.discard_after(best_checkpoint(s.name), record["best_epoch"] + start_step)
    else:
        for which in ("best", *(best_checkpoint(s.name) for s in rl.also_best)):
            ckpt.discard_after(which, -1)  # of a run killed before its first ``last``
        progress = {"epoch": 0, "best_val": -np.inf if phase.maximize else np.inf, "best_epoch": -1,
                    "bad_epochs": 0, "done": cfg.max_epochs == 0}
        also = {s.name: {"best_val": -np.inf if s.maximize else np.inf, "best_epoch": -1} for s in rl.also_best}
        if rl.start_competes:
            val = phase.validate(state.params)
            name, value = next(iter(val.items()))
            progress.update(best_val=value, start_val=value)
            ckpt.save("best", 0, state.params, {**phase.meta, "epoch": -1, name: value})
            for s in rl.also_best:
                also[s.name].update(best_val=val[s.value], start_val=val[s.value])
                ckpt.save(best_checkpoint(s.name), 0, state.params, {**phase.meta, "epoch": -1, s.value: val[s.value]})
        if rl.fingerprint is not None:
            progress["settings"] = rl.fingerprint
        if also:
            progress["also"] = also
    if progress["done"] and (rl.fingerprint is None or progress["epoch"] >= cfg.max_epochs):
        return ckpt.restore("best", state.params)[0], progress

    # ----- epochs
    base_seed = ctx.settings.seed
    log_path = os.path.join(ckpt.root, "log.jsonl")
    runlog.truncate_log(log_path, progress["epoch"])
    bar = tqdm(range(progress["epoch"], cfg.max_epochs), desc=phase.folder, unit="epoch",
               initial=progress["epoch"], total=cfg.max_epochs, dynamic_ncols=True,
               disable=not ctx.progress)
    board = runlog.Board(os.path.join(ctx.workdir, "tensorboard", phase.folder))
    last_writes = Cadence(cfg.checkpoint_every_s)
    for epoch in bar:
        started = time.perf_counter()
        order = epoch_order(base_seed, phase, epoch, len(train["x"]))
        # a profiled run pads: a trimmed batch's new shape would compile inside the traced steps
        trim = cfg.trim_last and not per_step
        batches = list(itertools.islice(parallel.padded_batches(
            train, batch_size, order, last_multiple=mesh.size if trim else 0), steps))
        sums = []
        if per_step:
            for batch in batches:
                state, stats = ctx.profiler.call(phase.folder, step, state, parallel.shard_batch(batch, mesh), extras)
                sums.append(stats)
        else:
            # a trimmed last batch has its own shape: one update of its own after the scan of the others
            tail = [batches.pop()] if len(batches[-1]["weight"]) < batch_size else []
            if batches:
                stacked = {k: np.stack([b[k] for b in batches]) for k in batches[0]}
                state, stats = step(state, parallel.shard_batch(stacked, mesh, axis=1), extras)
                sums.append(stats)
            for batch in tail:
                tail_step = tail_step or jit_update(update, mesh)
                state, stats = tail_step(state, parallel.shard_batch(batch, mesh), extras)
                sums.append(stats)
            batches += tail
        train_stats = mean_stats(sums)
        train_s = time.perf_counter() - started
        val = phase.validate(state.params)
        for name, value in [*((f"train_{k}", v) for k, v in train_stats.items()), *val.items()]:
            if not np.isfinite(value):
                raise GenreError(f"{phase.folder} phase: {name} became {value} at epoch {epoch}; "
                                 f"lower config.{cfg.section}.learning_rate")
        select_name, select = next(iter(val.items()))
        improved = _improves(select, progress["best_val"], phase.maximize)
        bad_epochs = 0 if improved else progress.get("bad_epochs", 0) + 1
        progress = {**progress, "epoch": epoch + 1, "best_val": select if improved else progress["best_val"],
                    "best_epoch": epoch if improved else progress["best_epoch"], "bad_epochs": bad_epochs,
                    "done": bad_epochs >= cfg.patience or epoch + 1 >= cfg.max_epochs}
        also_improved = [s for s in rl.also_best
                         if _improves(val[s.value], progress["also"][s.name]["best_val"], s.maximize)]
        if also_improved:
            progress["also"] = {**progress["also"], **{s.name: {**progress["also"][s.name], "best_val": val[s.value],
                                                               "best_epoch": epoch} for s in also_improved}}
        lr = float(schedule(int(state.step) - 1))  # the rate of the epoch's last update
        runlog.append_log(log_path, {"epoch": epoch, **{f"train_{k}": v for k, v in train_stats.items()}, **val,
                              f"best_{select_name}": progress["best_val"],
                              **{f"best_{s.value}": progress["also"][s.name]["best_val"] for s in rl.also_best},
                              "lr": lr})
        # timings only go to TensorBoard, so identical runs keep byte-identical logs
        timing = {"epoch_s": time.perf_counter() - started, "steps_per_s": len(batches) / train_s,
                  "examples_per_s": sum(len(b["weight"]) for b in batches) / train_s}
        if rl.rollouts_per_example:
            timing["rollouts_per_s"] = timing["examples_per_s"] * rl.rollouts_per_example
        board.scalars(epoch, {**{f"train/{k}": v for k, v in train_stats.items()},
                              **{f"val/{k.removeprefix('val_')}": v for k, v in val.items()},
                              "lr": lr, **{f"time/{k}": v for k, v in timing.items()}})
        best_step = epoch + start_step
        if improved:
            ckpt.save("best", best_step, state.params, {**phase.meta, "epoch": epoch, select_name: select})
        for s in also_improved:
            ckpt.save(best_checkpoint(s.name), best_step, state.params,
                      {**phase.meta, "epoch": epoch, s.value: val[s.value]})
        # every process takes the same branch: done is deterministic, the other two are collectives
        if progress["done"] or preemption.requested() or last_writes.due():
            ckpt.save("last", epoch, state, progress)
            last_writes.wrote()
            preemption.check(f"{phase.folder} epoch {epoch + 1}/{cfg.max_epochs}")  # a stop only after a save
        first = next(iter(train_stats))
        bar.set_postfix({first: f"{train_stats[first]:.4f}", "val": f"{select:.4f}",
                         "best": f"{progress['best_val']:.4f}"})
        if progress["done"]:
            break
    bar.close()
    board.close()
    return ckpt.restore("best", state.params)[0], progress
