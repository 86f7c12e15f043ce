"""Sequence-level RL fine-tuning from the best CE checkpoint: ReMax, GRPO, RLOO and GenRe².

One jitted step = sample G rollouts + a greedy decode per input (one encoding), decode them to
values, reward them against the target (z units), form advantages, then ``ppo_epochs`` gradient
updates of the policy loss (+ the dense expert CE for GenRe², + optional exact KL to the frozen CE
policy and entropy bonus). Dropout is off. Model selection: best validation mean sampled reward,
where the CE starting point itself competes as epoch -1, so RL never reports a worse validation
reward than it started from. Checkpoints under ``<workdir>/rl``; an interrupted phase resumes.
"""
from __future__ import annotations

import dataclasses
import itertools
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from tqdm.auto import tqdm

from genre_jax import objectives, parallel, sampling
from genre_jax.checkpoint import PhaseCheckpoints
from genre_jax.errors import GenreError
from genre_jax.train import TrainState, append_log, make_optimizer, truncate_log


@dataclasses.dataclass(frozen=True)
class Method:
    advantage: str
    policy_loss: str
    expert: bool  # adds the GenRe² dense expert term


METHODS = {
    "remax": Method("remax", "reinforce", expert=False),
    "genre2": Method("remax", "reinforce", expert=True),
    "grpo": Method("grpo", "ppo_clip", expert=False),
    "rloo": Method("rloo", "reinforce", expert=False),
}
# The paper's expert weights: 0.05 for normalized (tabular) tokens, 0.1 for IEEE tokens.
DEFAULT_EXPERT_WEIGHT = {"normalized": 0.05, "ieee": 0.1}
STAT_NAMES = ("reward", "greedy_reward", "abs_advantage", "loss", "expert_ce", "kl", "entropy")


def resolve(rl_cfg, tokenizer) -> tuple[Method, dict]:
    """The method's components and the numeric weights, validated with one-line errors."""
    if rl_cfg.method not in METHODS:
        raise GenreError(f"config.rl.method: unknown method {rl_cfg.method!r}; expected one of {sorted(METHODS)}")
    if rl_cfg.reward not in objectives.REWARDS:
        raise GenreError(f"config.rl.reward: unknown reward {rl_cfg.reward!r}; expected one of "
                         f"{sorted(objectives.REWARDS)}")
    method = METHODS[rl_cfg.method]
    if method.advantage in ("grpo", "rloo") and rl_cfg.num_rollouts < 2:
        raise GenreError(f"config.rl.num_rollouts: {rl_cfg.method} needs at least 2 rollouts per input")
    expert = rl_cfg.expert_weight if rl_cfg.expert_weight is not None else DEFAULT_EXPERT_WEIGHT[tokenizer.name]
    weights = {"expert": float(expert) if method.expert else 0.0, "kl": float(rl_cfg.kl_weight),
               "entropy": float(rl_cfg.entropy_weight)}
    return method, weights


def make_rl_steps(task, tx, rl_cfg, mesh):
    """Jitted (train_step, val_step); batch sharded over ``data``, state and reference replicated."""
    model, tok = task.model, task.tokenizer
    method, weights = resolve(rl_cfg, tok)
    reward_fn = objectives.REWARDS[rl_cfg.reward]
    advantage_fn = objectives.ADVANTAGES[method.advantage]
    policy_loss_fn = objectives.POLICY_LOSSES[method.policy_loss]
    G, temperature, clip_eps = int(rl_cfg.num_rollouts), float(rl_cfg.temperature), float(rl_cfg.clip_eps)

    def rollouts(params, batch, key):
        tokens_BGL, logp_BGL, greedy_BL = sampling.sample_and_greedy(model, params, batch["x"], key, tok, G,
                                                                     temperature)
        reward_BG = reward_fn(tok.decode(tokens_BGL), batch["z"])
        greedy_reward_B = reward_fn(tok.decode(greedy_BL)[:, None], batch["z"])[:, 0]
        return tokens_BGL, logp_BGL, reward_BG, greedy_reward_B

    def loss_fn(params, batch, tokens_BGL, old_logp_BGL, advantage_BG, ref_logits_BGLV):
        w = batch["weight"]
        logits_BGLV = sampling.rollout_logits(model, params, batch["x"], tokens_BGL, tok)
        logp_BGL = sampling.token_logprobs(logits_BGLV, tokens_BGL)
        policy = policy_loss_fn(logp_BGL, old_logp_BGL, advantage_BG, w, clip_eps)
        expert_ce = objectives.expert_cross_entropy(
            logits_BGLV, objectives.expert_tokens(tok, tokens_BGL, batch["tokens"]), w)
        kl = objectives.exact_kl(logits_BGLV, ref_logits_BGLV, w) if weights["kl"] else jnp.zeros(())
        entropy = objectives.mean_entropy(logits_BGLV, w)
        loss = policy + weights["expert"] * expert_ce + weights["kl"] * kl - weights["entropy"] * entropy
        return loss, (expert_ce, kl, entropy)

    def train_step(state: TrainState, ref_params, batch, base_key):
        tokens_BGL, old_logp_BGL, reward_BG, greedy_reward_B = rollouts(state.params, batch, jax.random.fold_in(
            base_key, state.step))
        advantage_BG = advantage_fn(reward_BG, greedy_reward_B)
        ref_logits = (sampling.rollout_logits(model, ref_params, batch["x"], tokens_BGL, tok)
                      if weights["kl"] else None)
        for _ in range(int(rl_cfg.ppo_epochs)):  # mu passes over the same rollouts (GRPO); 1 for ReMax
            (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(
                state.params, batch, tokens_BGL, old_logp_BGL, advantage_BG, ref_logits)
            updates, opt_state = tx.update(grads, state.opt_state, state.params)
            state = TrainState(state.step + 1, optax.apply_updates(state.params, updates), opt_state)
        w = batch["weight"]
        stats = jnp.stack([jnp.sum(w * reward_BG.mean(1)), jnp.sum(w * greedy_reward_B),
                           jnp.sum(w * jnp.abs(advantage_BG).mean(1)), loss * w.sum(), aux[0] * w.sum(),
                           aux[1] * w.sum(), aux[2] * w.sum(), w.sum()])
        return state, stats

    def val_step(params, batch, key):
        _, _, reward_BG, greedy_reward_B = rollouts(params, batch, key)
        w = batch["weight"]
        return jnp.stack([jnp.sum(w * reward_BG.mean(1)), jnp.sum(w * greedy_reward_B), w.sum()])

    rep, data = parallel.replicated(mesh), parallel.batch_sharding(mesh)
    train_step = jax.jit(train_step, in_shardings=(rep, rep, data, rep), out_shardings=(rep, rep),
                         donate_argnums=0)
    val_step = jax.jit(val_step, in_shardings=(rep, data, rep), out_shardings=rep)
    return train_step, val_step


def phase_dir(method: str) -> str:
    """Each RL method keeps its own checkpoints, so several can start from one CE checkpoint."""
    return os.path.join("rl", method)


def validation_reward(val_step, params, arrays, batch_size: int, mesh, key) -> tuple[float, float]:
    """Mean sampled reward and mean greedy reward over a split, aggregated exactly."""
    sums = [val_step(params, parallel.shard_batch(b, mesh), jax.random.fold_in(key, i))
            for i, b in enumerate(parallel.padded_batches(_rl_arrays(arrays), batch_size))]
    reward, greedy, count = np.sum(np.asarray(jax.device_get(sums)), axis=0)
    return float(reward / count), float(greedy / count)


def _rl_arrays(arrays):
    return {"x": arrays["x"], "tokens": arrays["tokens"], "z": arrays["z"]}


def _optimizer_config(config) -> ml_collections.ConfigDict:
    rl = config.rl
    lr = rl.learning_rate if rl.learning_rate is not None else config.ce.learning_rate
    return ml_collections.ConfigDict(dict(learning_rate=lr, warmup_steps=rl.warmup_steps, lr_floor=1.0,
                                          weight_decay=rl.weight_decay, grad_clip=rl.grad_clip))


def run_rl_phase(config, task, ce_params, workdir: str, mesh, meta: dict):
    """RL fine-tuning from ``ce_params``; returns the best-validation params (resuming if possible)."""
    cfg = config.rl
    train, val = task.arrays["train"], task.arrays["val"]
    batch_size = parallel.round_up(int(cfg.batch_size), mesh.size)
    steps_per_epoch = -(-len(train["x"]) // batch_size)
    if int(cfg.steps_per_epoch) > 0:  # a cap: large datasets get a fixed RL budget, a fresh sample each epoch
        steps_per_epoch = min(steps_per_epoch, int(cfg.steps_per_epoch))
    tx = make_optimizer(_optimizer_config(config), int(cfg.max_epochs) * steps_per_epoch * int(cfg.ppo_epochs))
    train_step, val_step = make_rl_steps(task, tx, cfg, mesh)
    ckpt = PhaseCheckpoints(workdir, phase_dir(cfg.method))
    ref_params = parallel.replicate(ce_params, mesh)
    state = parallel.replicate(TrainState(jnp.zeros((), jnp.int32), jax.tree.map(jnp.copy, ce_params),
                                          tx.init(ce_params)), mesh)
    base_key = jax.random.fold_in(jax.random.key(int(config.seed)), 2)
    val_key = jax.random.fold_in(jax.random.key(int(config.seed)), 3)  # same val samples every epoch

    settings = {k: v for k, v in cfg.to_dict().items() if k != "max_epochs"}
    if ckpt.has("last"):
        state, progress = ckpt.restore("last", state)
        if progress.get("settings") != settings:
            raise GenreError(f"{ckpt.root}: holds an RL run with other settings ({progress.get('settings')}); "
                             "use a fresh --workdir or the same config.rl")
    else:
        start_reward, _ = validation_reward(val_step, state.params, val, batch_size, mesh, val_key)
        progress = {"epoch": 0, "best_val": start_reward, "best_epoch": -1, "start_val": start_reward,
                    "done": int(cfg.max_epochs) == 0, "settings": settings}
        ckpt.save("best", 0, state.params, {**meta, "epoch": -1, "val_reward": start_reward})
    if progress["done"] and progress["epoch"] >= int(cfg.max_epochs):
        return ckpt.restore("best", state.params)[0], progress

    log_path = os.path.join(ckpt.root, "log.jsonl")
    truncate_log(log_path, progress["epoch"])
    bar = tqdm(range(progress["epoch"], int(cfg.max_epochs)), desc=f"rl/{cfg.method}", unit="epoch",
               initial=progress["epoch"], total=int(cfg.max_epochs), dynamic_ncols=True)
    for epoch in bar:
        order = np.random.default_rng([int(config.seed), 1000 + epoch]).permutation(len(train["x"]))
        sums = []
        for batch in itertools.islice(parallel.padded_batches(_rl_arrays(train), batch_size, order),
                                      steps_per_epoch):
            state, s = train_step(state, ref_params, parallel.shard_batch(batch, mesh), base_key)
            sums.append(s)
        totals = np.sum(np.asarray(jax.device_get(sums)), axis=0)
        stats = dict(zip(STAT_NAMES, (totals[:-1] / totals[-1]).tolist()))
        val_reward, val_greedy = validation_reward(val_step, state.params, val, batch_size, mesh, val_key)
        if not np.isfinite(val_reward) or not np.isfinite(stats["loss"]):
            raise GenreError(f"rl phase: non-finite loss or reward at epoch {epoch}; lower config.rl.learning_rate")
        improved = val_reward > progress["best_val"]
        progress = {**progress, "epoch": epoch + 1, "best_val": max(val_reward, progress["best_val"]),
                    "best_epoch": epoch if improved else progress["best_epoch"],
                    "done": epoch + 1 >= int(cfg.max_epochs)}
        append_log(log_path, {"epoch": epoch, **{f"train_{k}": v for k, v in stats.items()},
                              "val_reward": val_reward, "val_greedy_reward": val_greedy,
                              "best_val_reward": progress["best_val"]})
        if improved:
            ckpt.save("best", epoch + 1, state.params, {**meta, "epoch": epoch, "val_reward": val_reward})
        ckpt.save("last", epoch, state, progress)
        bar.set_postfix(reward=f"{stats['reward']:.4f}", val=f"{val_reward:.4f}", best=f"{progress['best_val']:.4f}")
    bar.close()
    return ckpt.restore("best", state.params)[0], progress
