"""Sequence-level RL fine-tuning from the best CE checkpoint: ReMax, GRPO, RLOO, GenRe², the CRPS credit
(``crps_loo``) and the exact methods over the whole sequence tree (``exact_reward``, ``exact_crps``).

One jitted step = sample G rollouts + a greedy decode per input (one encoding), decode them to
values, reward them against the target (z units), form advantages, then ``ppo_epochs`` gradient
updates of the policy loss (+ the dense expert CE for GenRe², + optional exact KL to the frozen CE
policy and entropy bonus). Dropout is off. Model selection (``rl.selection``): best validation mean
sampled reward, or best validation RMSE of the reported mean prediction; with ``rl.keep_start`` the CE
starting point competes as epoch -1 (RL then never reports a worse validation value than it started
from; the release selects among RL epochs only), and with ``rl.both_selections`` the other rule's best
checkpoint is kept too (``<folder>/best_<rule>``), so one run serves both rules. The method's parts
come from its registry entry (``methods.RLSpec``); ``ce_continued`` trains the CE loss instead, the
control for "RL or more training".
"""
from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from genre_jax import decode, exact, loop, objectives, parallel, sampling
from genre_jax.loop import TrainState
from genre_jax.settings import RL

FIELDS = ("x", "tokens", "z")
REFERENCE = "ref_logp"  # an exact method's KL term: the frozen CE policy's log-prob of every sequence, per train row


class Rollout(NamedTuple):
    tokens_BGL: jax.Array
    logp_BGL: jax.Array  # log-probs under the policy that drew them
    reward_BG: jax.Array
    greedy_reward_B: jax.Array


class RLStats(NamedTuple):
    """Per-batch sums weighted by real rows; ``count`` is the number of real rows."""
    reward: jax.Array
    greedy_reward: jax.Array
    abs_advantage: jax.Array
    loss: jax.Array
    expert_ce: jax.Array
    kl: jax.Array
    entropy: jax.Array
    count: jax.Array


class ValSums(NamedTuple):
    reward: jax.Array
    greedy_reward: jax.Array
    sq_err: jax.Array  # of the mean prediction (where aggregate_rmse selects; else 0)
    count: jax.Array


def draw_rollouts(model, tok, rl: RL, params, x_BF, key, target_B) -> Rollout:
    """G rollouts and the greedy decode per input, rewarded against ``target_B``."""
    drawn = sampling.sample(model, params, x_BF, key, tok, rl.num_rollouts, rl.temperature, greedy=True)
    return rewarded(tok, rl, drawn, target_B)


def rewarded(tok, rl: RL, drawn: sampling.Decoded, target_B) -> Rollout:
    reward_BG = rl.reward(tok.decode(drawn.tokens_BGL), target_B)
    greedy_reward_B = rl.reward(tok.decode(drawn.greedy_BL)[:, None], target_B)[:, 0]
    return Rollout(drawn.tokens_BGL, drawn.logp_BGL, reward_BG, greedy_reward_B)


@parallel.reused
def make_rl_update(model, tokenizer, rl: RL, tx):
    """Pure (update(state, batch, (ref_params, base_key)), val_step(params, batch, key))."""
    spec, tok = rl.method.spec, tokenizer
    if spec.exact:
        return _exact_update(model, tokenizer, rl, tx), _val_step(model, tokenizer, rl)
    if spec.teacher_forced:
        return _teacher_forced_update(model, tokenizer, rl, tx), _val_step(model, tokenizer, rl)

    def loss_fn(params, batch, ro: Rollout, advantage_BG, ref_logits_BGLV):
        w = batch["weight"]
        # Each distinct prefix of an input's rollouts decoded once where that pays (they are drawn, so allowed).
        raw_BGLV = sampling.reforward_logits(model, params, batch["x"], ro.tokens_BGL, tok, masked=False)
        logits_BGLV = sampling.mask_logits(raw_BGLV, tok.allowed)
        # The policy is the tempered distribution the rollouts were drawn from (sampling._rollout);
        # the expert term is a cross-entropy on the model itself, like CE pretraining, over the
        # masked logits or (as released) the raw ones.
        policy_BGLV = logits_BGLV / rl.temperature
        logp_BGL = sampling.token_logprobs(policy_BGLV, ro.tokens_BGL)
        policy = spec.policy_loss(logp_BGL, ro.logp_BGL, advantage_BG, w, rl.clip_eps)
        expert_ce = objectives.expert_cross_entropy(
            logits_BGLV if rl.masked_expert else raw_BGLV,
            objectives.expert_tokens(tok, ro.tokens_BGL, batch["tokens"]), w)
        kl = (objectives.exact_kl(policy_BGLV, ref_logits_BGLV / rl.temperature, w) if rl.kl_weight
              else jnp.zeros(()))
        entropy = objectives.mean_entropy(policy_BGLV, w)
        loss = policy + rl.expert_weight * expert_ce + rl.kl_weight * kl - rl.entropy_weight * entropy
        return loss, (expert_ce, kl, entropy)

    def update(state: TrainState, batch, extras):
        ref_params, base_key = extras
        # As released, training may reward against the target as the tokenizer writes it
        # (y <- detok(tok(y))); validation always scores the real target.
        target_B = tok.decode(batch["tokens"]) if rl.requantize_targets else batch["z"]
        ro = draw_rollouts(model, tok, rl, state.params, batch["x"], jax.random.fold_in(base_key, state.step), target_B)
        credit_BG = spec.group_reward(tok.decode(ro.tokens_BGL), target_B) if spec.group_reward else ro.reward_BG
        advantage_BG = spec.advantage(credit_BG, ro.greedy_reward_B)
        ref_logits = (sampling.reforward_logits(model, ref_params, batch["x"], ro.tokens_BGL, tok)
                      if rl.kl_weight else None)
        for _ in range(rl.ppo_epochs):  # mu passes over the same rollouts (GRPO); 1 for ReMax
            (loss, (expert_ce, kl, entropy)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
                state.params, batch, ro, advantage_BG, ref_logits)
            updates, opt_state = tx.update(grads, state.opt_state, state.params)
            state = TrainState(state.step + 1, optax.apply_updates(state.params, updates), opt_state)
        w = batch["weight"]
        n = w.sum()
        return state, RLStats(jnp.sum(w * ro.reward_BG.mean(1)), jnp.sum(w * ro.greedy_reward_B),
                              jnp.sum(w * jnp.abs(advantage_BG).mean(1)), loss * n, expert_ce * n, kl * n,
                              entropy * n, n)

    return update, _val_step(model, tokenizer, rl)


def _val_step(model, tok, rl: RL):
    """Validation for every method alike: mean reward of G sampled rollouts and of the greedy decode;
    for ``aggregate_rmse`` selection also the squared error of the mean prediction evaluation reports
    (exact distribution mean, or the mean of G samples at the evaluation temperature). Where the mean
    is exact, the rollouts are drawn by walking the enumerated tree (``sampling.sample_levels``: the
    sampler's keys and draws, no decoder pass of their own)."""
    rmse = "aggregate_rmse" in (rl.selection, rl.other_selection)
    values_S = jnp.asarray(tok.decode(exact.all_sequences(tok))) if (
        rmse and rl.selection_decode == "exact") else None

    def val_step(params, batch, key):
        w = batch["weight"]
        if values_S is not None:  # the whole tree once: the exact mean, and the rollouts walk it
            levels = exact.level_logits(model, params, batch["x"], tok)
            ro = rewarded(tok, rl, sampling.sample_levels(levels, key, tok, rl.num_rollouts, rl.temperature,
                                                          greedy=True), batch["z"])
            logp_BS = exact.tree_logprobs(levels, tok, rl.selection_temperature).logp_BS
            sq_err_B = (jnp.exp(logp_BS) @ values_S - batch["z"]) ** 2
        else:
            ro = draw_rollouts(model, tok, rl, params, batch["x"], key, batch["z"])
            sq_err_B = jnp.zeros_like(w)
            if rmse:
                drawn = sampling.sample(model, params, batch["x"], jax.random.fold_in(key, 1), tok, rl.num_rollouts,
                                        rl.selection_temperature)
                sq_err_B = (tok.decode(drawn.tokens_BGL).mean(1) - batch["z"]) ** 2
        return ValSums(jnp.sum(w * ro.reward_BG.mean(1)), jnp.sum(w * ro.greedy_reward_B), jnp.sum(w * sq_err_B),
                       w.sum())

    return val_step


def _exact_update(model, tok, rl: RL, tx):
    """An exact method (``RLSpec.exact``: ``exact_reward``, ``exact_crps``): its loss on every sequence
    the tokenizer allows, weighted by pi(seq | x) (``exact.level_logits``), so the gradient has no
    sampling variance at all; with the expert term, that term's expectation over the whole tree
    (``exact.expected_expert_cross_entropy``). The KL and entropy terms are the sequence-level
    KL(pi || pi_ref) and entropy of the tree, divided by L: the expectations of the sampled methods'
    per-token means along rollouts (the chain rule), differentiated through pi, where the sampled
    methods hold the rollouts' weights fixed. The logged reward is the exact expected ``rl.reward``."""
    seqs_SL = exact.all_sequences(tok)
    values_S = jnp.asarray(tok.decode(seqs_SL))

    def loss_fn(params, batch, target_B, ref_logp_BS):
        w = batch["weight"]
        levels = exact.level_logits(model, params, batch["x"], tok)
        out = exact.tree_logprobs(levels, tok, rl.temperature)
        probs_BS = jnp.exp(out.logp_BS)
        expected_B = -objectives.exact_reward_loss(probs_BS, values_S, target_B, rl.reward)
        loss_B = rl.method.spec.exact(probs_BS, values_S, target_B, rl.reward)
        expert_ce_B = jnp.zeros_like(loss_B)
        if rl.expert_weight:
            expert_BSL = objectives.expert_tokens(
                tok, jnp.broadcast_to(jnp.asarray(seqs_SL), (len(w),) + seqs_SL.shape), batch["tokens"])
            expert_ce_B = exact.expected_expert_cross_entropy(levels, probs_BS, expert_BSL, tok, rl.masked_expert)
        kl_B = (jnp.sum(probs_BS * (out.logp_BS - ref_logp_BS), -1) / tok.length if rl.kl_weight
                else jnp.zeros_like(loss_B))
        entropy_B = -jnp.sum(probs_BS * out.logp_BS, -1) / tok.length
        mean = lambda v_B: jnp.sum(w * v_B) / jnp.maximum(w.sum(), 1.0)  # noqa: E731
        expert_ce, kl, entropy = mean(expert_ce_B), mean(kl_B), mean(entropy_B)
        loss = mean(loss_B) + rl.expert_weight * expert_ce
        if rl.kl_weight or rl.entropy_weight:  # else the loss's program is the one without these terms
            loss = loss + rl.kl_weight * kl - rl.entropy_weight * entropy
        return loss, (expected_B, out.greedy_BL, expert_ce, kl, entropy)

    def update(state: TrainState, batch, extras):
        target_B = tok.decode(batch["tokens"]) if rl.requantize_targets else batch["z"]
        ref_logp_BS = batch[REFERENCE] if rl.kl_weight else None  # decoded once per phase: reference_logprobs
        (loss, (expected_B, greedy_BL, expert_ce, kl, entropy)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, batch, target_B, ref_logp_BS)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        state = TrainState(state.step + 1, optax.apply_updates(state.params, updates), opt_state)
        w = batch["weight"]
        n = w.sum()
        greedy_reward_B = rl.reward(tok.decode(greedy_BL)[:, None], target_B)[:, 0]
        return state, RLStats(jnp.sum(w * expected_B), jnp.sum(w * greedy_reward_B), jnp.zeros(()), loss * n,
                              expert_ce * n, kl * n, entropy * n, n)

    return update


def reference_logprobs(model, tok, ref_params, x_NF, temperature: float, batch_size: int, mesh) -> np.ndarray:
    """ref_logp_NS: the frozen CE policy's log-probability of every sequence (``exact.all_sequences``
    order) for each row at the rollout temperature, what an exact method's KL term compares pi with.
    It never changes during the phase, so the phase decodes it once for its train rows and the batches
    carry it (``REFERENCE``), instead of a second tree decode in every update (a quarter of an
    ``exact_crps`` update's time at (4, 6) on CPU)."""
    enumerate_fn = parallel.data_parallel(  # (logp_BS, greedy_BL): decode_rows' (outputs, point); no key used
        lambda params, x_BF, key, t: tuple(exact.enumerate_sequences(model, params, x_BF, tok, t)), mesh,
        batch_out=True)
    return decode.decode_rows(enumerate_fn, ref_params, x_NF, jax.random.key(0), batch_size, mesh, temperature)[0]


def train_arrays(ctx, rl: RL, ref_params) -> tuple[dict, tuple[str, ...]]:
    """(the train split's arrays, the fields a batch carries): ``FIELDS``, and ``REFERENCE`` for an
    exact method with a KL term."""
    train = ctx.arrays["train"]
    if not (rl.method.spec.exact and rl.kl_weight):
        return train, FIELDS
    batch_size = parallel.batch_size_for(rl.loop.batch_size, len(train["x"]), ctx.mesh)
    ref = reference_logprobs(ctx.model, ctx.tokenizer, ref_params, train["x"], rl.temperature, batch_size, ctx.mesh)
    return {**train, REFERENCE: ref}, FIELDS + (REFERENCE,)


def _teacher_forced_update(model, tok, rl: RL, tx):
    """``ce_continued``: pretraining's CE loss (teacher-forced, the mean over target tokens; over the
    masked logits where ``rl.masked_expert``, the section's CE switch) trained with the RL phase's
    optimizer, schedule, batches, dropout (off) and checkpoint selection, so that an RL method's gain
    over it is the objective's, not more training's. It draws no rollouts: the train reward columns
    of its log read 0 (validation samples as for every method)."""

    def loss_fn(params, batch):
        logits_BLV = sampling.teacher_forced_logits(model, params, batch["x"], batch["tokens"], tok,
                                                    masked=rl.masked_expert)
        total, count = objectives.token_cross_entropy(logits_BLV, batch["tokens"], batch["weight"])
        return total / jnp.maximum(count, 1.0)

    def update(state: TrainState, batch, extras):
        loss, grads = jax.value_and_grad(loss_fn)(state.params, batch)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        state = TrainState(state.step + 1, optax.apply_updates(state.params, updates), opt_state)
        n, zero = batch["weight"].sum(), jnp.zeros(())
        return state, RLStats(zero, zero, zero, loss * n, zero, zero, zero, n)

    return update


def make_rl_steps(model, tokenizer, rl: RL, tx, mesh):
    """Jitted (train_step(state, ref_params, batch, key), val_step(params, batch, key)), one batch per call."""
    update, val_step = make_rl_update(model, tokenizer, rl, tx)
    train_step = loop.jit_update(update, mesh)
    return ((lambda state, ref_params, batch, key: train_step(state, batch, (ref_params, key))),
            parallel.data_parallel(val_step, mesh))


# rl.selection's rules: the validation value each one reads, and whether larger is better
SELECTION_VALUES = {"reward": ("val_reward", True), "aggregate_rmse": ("val_rmse", False)}


def validation_reward(val_step, params, arrays, batch_size: int, mesh, key, selection: str = "reward",
                      other: str | None = None) -> dict:
    """Mean sampled reward and mean greedy reward over a split, aggregated exactly, and the mean
    prediction's RMSE where ``selection`` or ``other`` is aggregate_rmse; ``selection``'s value comes
    first (it picks the checkpoint)."""
    means = loop.split_sums(val_step, params, {k: arrays[k] for k in FIELDS}, batch_size, mesh, key)
    values = {"val_reward": means["reward"], "val_greedy_reward": means["greedy_reward"]}
    if "aggregate_rmse" in (selection, other):
        values["val_rmse"] = float(np.sqrt(means["sq_err"]))
    first = SELECTION_VALUES[selection][0]
    return {first: values.pop(first), **values}


def run_rl_phase(ctx, ce_params):
    """RL fine-tuning from ``ce_params``; returns (best-validation params, progress), resuming if possible."""
    rl, mesh = ctx.settings.rl, ctx.mesh
    seed_key = loop.phase_key(ctx.seed, rl.loop, rl.method.folder)
    base_key, val_key = jax.random.fold_in(seed_key, 2), jax.random.fold_in(seed_key, 3)  # same val samples each epoch
    ref_params = parallel.replicate(ce_params, mesh)
    batch_size = parallel.batch_size_for(rl.loop.batch_size, len(ctx.arrays["val"]["x"]), mesh)
    val_step = None

    def make_step(tx):
        nonlocal val_step
        update, val_fn = make_rl_update(ctx.model, ctx.tokenizer, rl, tx)
        val_step = loop.jit_eval(val_fn, mesh)
        return update, (ref_params, base_key)

    def validate(params):
        return validation_reward(val_step, params, ctx.arrays["val"], batch_size, mesh, val_key, rl.selection,
                                 rl.other_selection)

    train, fields = train_arrays(ctx, rl, ref_params)
    ctx = dataclasses.replace(ctx, arrays={**ctx.arrays, "train": train})
    also = () if rl.other_selection is None else (loop.Selection(rl.other_selection,
                                                                  *SELECTION_VALUES[rl.other_selection]),)
    phase = loop.Phase(rl.method.folder, rl.loop, make_step, validate, fields,
                       maximize=SELECTION_VALUES[rl.selection][1], shuffle_offset=1000, meta=ctx.meta,
                       rl=loop.RLPart(start_competes=rl.keep_start, fingerprint=rl.fingerprint, also_best=also,
                                      updates_per_step=rl.ppo_epochs, rollouts_per_example=rl.num_rollouts))
    return loop.run(ctx, phase, ce_params)
