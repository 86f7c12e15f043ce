"""Losses over decoder outputs. Token-level objectives return (sum, count) so callers can aggregate
exactly across batches and devices; ``make_token_objective`` binds one to a tokenizer and its weights.
The method registry (``methods.py``) says which of these functions each method uses."""
from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np

from genre_jax import parallel
from genre_jax.tokenizers import NEG_INF


def token_cross_entropy(logits_BLV: jax.Array, tokens_BL: jax.Array, weights_B: jax.Array):
    """Teacher-forced CE summed over the L positions of each weighted example: (sum, token count).

    ``logits_BLV`` are masked by the tokenizer's allowed table (the softmax runs over the tokens the
    sampler can emit at each position) or raw, as the release trains them (``ce.masked_loss``).
    ``weights_B`` zeroes padding rows.
    """
    chex.assert_rank([logits_BLV, tokens_BL, weights_B], [3, 2, 1])
    chex.assert_equal_shape_prefix([logits_BLV, tokens_BL], 2)
    logp_BLV = jax.nn.log_softmax(logits_BLV.astype(jnp.float32), axis=-1)
    nll_BL = -jnp.take_along_axis(logp_BLV, tokens_BL[..., None], axis=-1)[..., 0]
    weights_B = weights_B.astype(jnp.float32)
    return jnp.sum(nll_BL * weights_B[:, None]), jnp.sum(weights_B) * tokens_BL.shape[1]



# ---------------------------------------------------------------------------------------------
# Token-level baselines: CE plus an auxiliary term on the distribution over digit values.
# The auxiliary is taken at digit positions only (IEEE sign positions get plain CE), over the
# softmax restricted to digit tokens, so its scale does not depend on the rest of the vocabulary.


def _digit_tables(tokenizer):
    """(digit positions [L], digit values [V], digit-token mask [V]) as constants for jitted code."""
    positions_L = np.asarray(tokenizer.digit_positions, bool)
    values_V = np.asarray(tokenizer.digit_values, np.float32)
    is_digit_V = np.asarray(tokenizer.allowed, bool)[positions_L].any(axis=0)
    return positions_L, values_V, is_digit_V


def _ce_plus_digit_aux(aux_fn, logits_BLV, tokens_BL, weights_B, tokenizer, weight):
    """CE sum + weight * sum over weighted examples and digit positions of ``aux_fn``; count as CE.

    ``aux_fn(logp_BLV, y_BL, values_V, is_digit_V) -> aux_BL`` sees log-probabilities over digit tokens
    (non-digit entries ~ -1e9) and the target digit values.
    """
    ce_sum, count = token_cross_entropy(logits_BLV, tokens_BL, weights_B)
    positions_L, values_V, is_digit_V = _digit_tables(tokenizer)
    chex.assert_axis_dimension(logits_BLV, 1, positions_L.shape[0])
    chex.assert_axis_dimension(logits_BLV, 2, values_V.shape[0])
    digit_logits_BLV = jnp.where(is_digit_V, logits_BLV.astype(jnp.float32), NEG_INF)
    logp_BLV = jax.nn.log_softmax(digit_logits_BLV, axis=-1)
    y_BL = jnp.asarray(values_V)[tokens_BL]
    aux_BL = aux_fn(logp_BLV, y_BL, jnp.asarray(values_V), jnp.asarray(is_digit_V))
    # aux at sign positions is finite (uniform over digits, y = 0), so masking it leaves zero gradient
    aux_BL = jnp.where(jnp.asarray(positions_L), aux_BL, 0.0)
    aux_sum = jnp.sum(aux_BL * weights_B.astype(jnp.float32)[:, None])
    return ce_sum + weight * aux_sum, count


def _expected_digit_sq_error(logp_BLV, y_BL, values_V, is_digit_V):
    mean_BL = jnp.sum(jnp.where(is_digit_V, jnp.exp(logp_BLV), 0.0) * values_V, axis=-1)
    return jnp.square(mean_BL - y_BL)


def _wasserstein_to_point(logp_BLV, y_BL, values_V, is_digit_V):
    # W1 between p and a point mass at y is the expected distance to y
    dist_BLV = jnp.abs(values_V - y_BL[..., None])
    return jnp.sum(jnp.where(is_digit_V, jnp.exp(logp_BLV), 0.0) * dist_BLV, axis=-1)


def _smoothed_target_kl(tau):
    def aux(logp_BLV, y_BL, values_V, is_digit_V):
        q_logits_BLV = jnp.where(is_digit_V, -jnp.square(values_V - y_BL[..., None]) / tau, NEG_INF)
        logq_BLV = jax.nn.log_softmax(q_logits_BLV, axis=-1)
        kl_BLV = jnp.where(is_digit_V, jnp.exp(logq_BLV) * (logq_BLV - logp_BLV), 0.0)
        return jnp.sum(kl_BLV, axis=-1)

    return aux


def ntl_mse(logits_BLV, tokens_BL, weights_B, tokenizer, weight):
    """NTL-MSE: CE + weight * (E_p[digit value] - true digit)^2 at digit positions: (sum, count)."""
    return _ce_plus_digit_aux(_expected_digit_sq_error, logits_BLV, tokens_BL, weights_B, tokenizer, weight)


def ntl_was(logits_BLV, tokens_BL, weights_B, tokenizer, weight):
    """NTL-WAS: CE + weight * W1(p over digit values, one-hot at the true digit) = E_p|v - y|: (sum, count)."""
    return _ce_plus_digit_aux(_wasserstein_to_point, logits_BLV, tokens_BL, weights_B, tokenizer, weight)


def dist2(logits_BLV, tokens_BL, weights_B, tokenizer, weight, tau=1.0):
    """DIST2: CE + weight * KL(q || p), q(v) ∝ exp(-(v - y)^2 / tau) over digit values: (sum, count)."""
    return _ce_plus_digit_aux(_smoothed_target_kl(tau), logits_BLV, tokens_BL, weights_B, tokenizer, weight)


@parallel.reused  # one object per setting, so the token phase's steps are reused
def make_token_objective(spec, tokenizer, weight: float, tau: float = 1.0):
    """(logits_BLV, tokens_BL, weights_B) -> (sum, count): a ``methods.TokenSpec``'s loss bound to a
    tokenizer, its weight and (where the loss has one) its temperature ``tau``."""
    kwargs = {"tokenizer": tokenizer, "weight": weight, **({"tau": tau} if spec.uses_tau else {})}
    return functools.partial(spec.loss, **kwargs)


# ---------------------------------------------------------------------------------------------
# Sequence-level RL: rewards on decoded values, advantages per group of G rollouts, policy losses.

def neg_mse(pred_BG, target_B):
    return -jnp.square(pred_BG - target_B[:, None])


def neg_mae(pred_BG, target_B):
    return -jnp.abs(pred_BG - target_B[:, None])


def neg_mse_clip50(pred_BG, target_B):
    """The paper's code-metric reward: -min((y_hat - y)^2, 50), so one wild sample cannot dominate."""
    return -jnp.minimum(jnp.square(pred_BG - target_B[:, None]), 50.0)


REWARDS = {"neg_mse": neg_mse, "neg_mae": neg_mae, "neg_mse_clip50": neg_mse_clip50}


def remax_advantage(reward_BG, greedy_reward_B, eps=1e-6):
    """ReMax: the greedy decode's reward is the baseline; no normalization."""
    del eps
    return reward_BG - greedy_reward_B[:, None]


def grpo_advantage(reward_BG, greedy_reward_B, eps=1e-6):
    """GRPO: rewards standardized within each input's group of G rollouts."""
    del greedy_reward_B
    mean = reward_BG.mean(axis=1, keepdims=True)
    return (reward_BG - mean) / (reward_BG.std(axis=1, keepdims=True) + eps)


def rloo_advantage(reward_BG, greedy_reward_B, eps=1e-6):
    """RLOO: each rollout's baseline is the mean reward of the other G - 1 rollouts."""
    del greedy_reward_B, eps
    group = reward_BG.shape[1]
    others = (reward_BG.sum(axis=1, keepdims=True) - reward_BG) / (group - 1)
    return reward_BG - others


def group_mean_advantage(reward_BG, greedy_reward_B, eps=1e-6):
    """Each rollout's reward minus the mean reward of its group of G (no normalization)."""
    del greedy_reward_B, eps
    return reward_BG - reward_BG.mean(axis=1, keepdims=True)


# ---------------------------------------------------------------------------------------------
# Rewards on the whole predictive distribution: CRPS(F, y) = ∫ (F(t) − 1{t ≥ y})² dt
#                                                          = E|X − y| − ½ E|X − X'|, in z units.

def crps_loo_reward(pred_BG, target_B):
    """Distribution-Aware Reward's leave-one-out credit (arXiv 2605.20740): the G rollouts of an input
    are an empirical distribution, and rollout i earns r_i = CRPS(x without x_i, y) − CRPS(x, y), what
    the group's CRPS loses by having it. The empirical CRPS of n samples is
        CRPS(x_1..x_n, y) = (1/n) Σ_i |x_i − y| − (1/(2n²)) Σ_{i,j} |x_i − x_j|,
    so with a_i = |x_i − y|, A = Σ a_i, d_i = Σ_j |x_i − x_j| and D = Σ d_i:
        CRPS(x) = A/G − D/(2G²),   CRPS(x without x_i) = (A − a_i)/(G − 1) − (D − 2 d_i)/(2(G − 1)²).
    Per input O(G²) (the pairwise distances), vectorised over inputs. Up to a group-wide constant,
    r_i = −a_i/(G − 1) + d_i/(G − 1)²: a rollout earns by being close to y and by lying away from the
    rest of its group, which keeps spread where the group cannot tell where y is. A credit of size
    ~|x − y|/(G − 1) (Adam's step does not care; the weight of an added expert term does).

    Baseline (the ``crps_loo`` entry): the group's mean credit (``group_mean_advantage``), not the
    greedy decode's (ReMax). The credit's group-wide constant (it holds the whole group's A and D) ranks
    no rollout against another, and the mean removes it exactly, leaving the two terms above; the greedy
    decode is no member of the group, so it has no leave-one-out credit of its own (one would have to
    invent one by adding it to the group, which scores the greedy's sharpness, not the rollouts').
    A collapsed group (every rollout alike) gets no gradient, as ReMax's does when every sample equals
    the greedy decode."""
    group = pred_BG.shape[1]
    abs_err_BG = jnp.abs(pred_BG - target_B[:, None])
    spread_BG = jnp.abs(pred_BG[:, :, None] - pred_BG[:, None, :]).sum(-1)
    total_err_B, total_spread_B = abs_err_BG.sum(1, keepdims=True), spread_BG.sum(1, keepdims=True)
    crps_B = total_err_B / group - total_spread_B / (2 * group ** 2)
    without_BG = ((total_err_B - abs_err_BG) / (group - 1)
                  - (total_spread_B - 2 * spread_BG) / (2 * (group - 1) ** 2))
    return without_BG - crps_B


def distribution_crps(probs_BS, values_S, target_B):
    """crps_B: the exact CRPS of the discrete distribution P(X = values_S[s]) = probs_BS[b, s] against
    target_B[b], from its CDF: with the support sorted, v_1 ≤ ... ≤ v_S, and F_k = Σ_{j ≤ k} p_j,
        CRPS = Σ_k ∫_{v_k}^{v_{k+1}} (F_k − 1{t ≥ y})² dt + (v_1 − y)⁺ + (y − v_S)⁺
    (F = 0 below the support, 1 above it); the gap [v_k, v_{k+1}] splits at y into a part below y,
    weighted F_k², and one above, weighted (1 − F_k)². O(S log S) once for the sort (the normalized
    tokenizer's support is already in order), then O(S) per input; the same number as the O(S²)
    E|X − y| − ½ E|X − X'| wherever Σ_s p_s = 1. Differentiable in ``probs_BS``."""
    order_S = jnp.argsort(values_S)
    v_S, p_BS = values_S[order_S], probs_BS[:, order_S]
    # the S - 1 gaps between neighbouring support points (still written S): F on each, and its ends
    cdf_BS = jnp.cumsum(p_BS, axis=-1)[:, :-1]
    lo_S, hi_S = v_S[:-1], v_S[1:]
    y_B1 = target_B[:, None]
    cut_BS = jnp.clip(y_B1, lo_S, hi_S)
    inner_B = jnp.sum(jnp.square(cdf_BS) * (cut_BS - lo_S) + jnp.square(1.0 - cdf_BS) * (hi_S - cut_BS), axis=-1)
    return inner_B + jnp.maximum(v_S[0] - target_B, 0.0) + jnp.maximum(target_B - v_S[-1], 0.0)


# Exact losses (``methods.RLSpec.exact``): (probs_BS, values_S, target_B, reward) -> loss_B over every
# sequence the tokenizer allows, differentiated through probs_BS = π(seq | x).

def exact_reward_loss(probs_BS, values_S, target_B, reward):
    """−Σ_seq π(seq | x) r(seq): the exact expected reward, negated."""
    return -jnp.sum(probs_BS * reward(jnp.broadcast_to(values_S, probs_BS.shape), target_B), axis=-1)


def exact_crps_loss(probs_BS, values_S, target_B, reward):
    """CRPS(π(·|x), y) = E|X − y| − ½ E|X − X'| of the whole predictive distribution, exactly
    (``distribution_crps``); ``reward`` is not used (it still scores validation and the logs)."""
    del reward
    return distribution_crps(probs_BS, values_S, target_B)


def _weighted_mean(value_BG, weights_B):
    w_BG = jnp.broadcast_to(weights_B[:, None], value_BG.shape)
    return jnp.sum(value_BG * w_BG) / jnp.maximum(jnp.sum(w_BG), 1.0)


def reinforce_loss(logp_BGL, old_logp_BGL, advantage_BG, weights_B, clip_eps=0.2):
    """-mean(A * sum_t log pi(a_t | s_t)): the ReMax / RLOO policy-gradient surrogate."""
    del old_logp_BGL, clip_eps
    return -_weighted_mean(advantage_BG * logp_BGL.sum(-1), weights_B)


def ppo_clip_loss(logp_BGL, old_logp_BGL, advantage_BG, weights_B, clip_eps=0.2):
    """GRPO's clipped per-token ratio objective, averaged over tokens and rollouts."""
    ratio_BGL = jnp.exp(logp_BGL - jax.lax.stop_gradient(old_logp_BGL))  # the behaviour policy is a constant
    adv = advantage_BG[..., None]
    objective = jnp.minimum(ratio_BGL * adv, jnp.clip(ratio_BGL, 1 - clip_eps, 1 + clip_eps) * adv)
    return -_weighted_mean(objective.mean(-1), weights_B)


def exact_kl(logits_BGLV, ref_logits_BGLV, weights_B):
    """KL(pi || pi_ref) summed over the vocabulary (cheap: V is tiny), mean over positions and rollouts."""
    logp = jax.nn.log_softmax(logits_BGLV, -1)
    ref_logp = jax.nn.log_softmax(ref_logits_BGLV, -1)
    kl_BGL = jnp.sum(jnp.exp(logp) * (logp - ref_logp), -1)
    return _weighted_mean(kl_BGL.mean(-1), weights_B)


def mean_entropy(logits_BGLV, weights_B):
    logp = jax.nn.log_softmax(logits_BGLV, -1)
    ent_BGL = -jnp.sum(jnp.exp(logp) * logp, -1)
    return _weighted_mean(ent_BGL.mean(-1), weights_B)


# ---------------------------------------------------------------------------------------------
# GenRe² dense expert term.

def expert_tokens(tokenizer, rollout_BGL, target_BL):
    """The expert's next token at every position of every rollout.

    While the rollout's prefix equals the target's, the expert emits the target token. Off that
    path it emits the allowed token whose completions come closest to the target value:

    - where value order is token order (``tokenizer.lexicographic``: normalized digits) this is the
      release's rule, decided on the tokens alone: the first token where the rollout left the target
      says whether it is above (then the smallest allowed token) or below (the largest). Integer
      comparisons, so it stays exact at any B^D; choosing by decoded float32 values did not
      (from B^D ~ 2^24 on, e.g. (10, 8), neighbouring candidates round to one value);
    - otherwise (IEEE tokens) by value: every completion of ``prefix + t`` lies in [lo, hi], the
      least and greatest value over the tokenizer's corner completions, and the expert picks the t
      with the smallest distance from the target to [lo, hi] (lowest token id on ties). This stays
      right where token order and value order part: zero and clamped small values carry
      leading-zero mantissas, and an exponent digit's direction depends on both signs.
    """
    target_BGL = jnp.broadcast_to(target_BL[:, None, :], rollout_BGL.shape)
    # on track at i: the first i tokens equal the target's (the empty prefix always does)
    differs_BGL = (rollout_BGL != target_BGL).astype(jnp.int32)
    off_BGL = jnp.cumsum(differs_BGL, axis=-1) - differs_BGL > 0
    if tokenizer.lexicographic:
        first_BGL = (differs_BGL > 0) & (jnp.cumsum(differs_BGL, axis=-1) == 1)  # where the rollout left
        above_at_BGL = (first_BGL & (rollout_BGL > target_BGL)).astype(jnp.int32)
        above_BGL = jnp.cumsum(above_at_BGL, axis=-1) - above_at_BGL > 0  # it left upwards before i
        lowest_L, highest_L = (jnp.asarray(ids) for ids in tokenizer.token_range)
        nearest_BGL = jnp.where(above_BGL, lowest_L, highest_L)
    else:
        nearest_BGL = _nearest_by_value(tokenizer, rollout_BGL, target_BL)
    return jnp.where(off_BGL, nearest_BGL, target_BGL).astype(jnp.int32)


def _nearest_by_value(tokenizer, rollout_BGL, target_BL):
    """At every position i, the allowed token t whose completions of ``rollout[:i] + t`` come closest
    to the target's decoded value (``expert_tokens``)."""
    length, vocab = tokenizer.allowed.shape
    corners_XL = jnp.asarray(tokenizer.corner_completions)
    pos_L = np.arange(length)
    before_IL = jnp.asarray(pos_L[None, :] < pos_L[:, None])  # j < i: the rollout's own prefix
    at_IL = jnp.asarray(pos_L[None, :] == pos_L[:, None])  # j == i: the candidate token
    # candidates_BGIVXL: the rollout's first i tokens, then t at position i, then corner x
    candidates = jnp.where(
        before_IL[None, None, :, None, None, :], rollout_BGL[:, :, None, None, None, :],
        jnp.where(at_IL[None, None, :, None, None, :], jnp.arange(vocab)[None, None, None, :, None, None],
                  corners_XL[None, None, None, None, :, :]))
    values_BGIVX = tokenizer.decode(candidates)
    target_B = tokenizer.decode(target_BL)[:, None, None, None]
    gap_BGIV = jnp.maximum(jnp.maximum(values_BGIVX.min(-1) - target_B, target_B - values_BGIVX.max(-1)), 0.0)
    gap_BGIV = jnp.where(jnp.asarray(tokenizer.allowed)[None, None], gap_BGIV, jnp.inf)
    return jnp.argmin(gap_BGIV, axis=-1)


def expert_cross_entropy(logits_BGLV, expert_BGL, weights_B):
    """Mean over positions and rollouts of -log pi(expert token | rollout prefix)."""
    logp = jax.nn.log_softmax(logits_BGLV, -1)
    nll_BGL = -jnp.take_along_axis(logp, expert_BGL[..., None], -1)[..., 0]
    return _weighted_mean(nll_BGL.mean(-1), weights_B)
