"""Exact predictive distributions: every token sequence the tokenizer allows, with its probability.

With a tiny vocabulary the decoder's whole distribution is enumerable: base 2 with 8 digits has
256 sequences, reached by expanding the prefix tree level by level with the KV cache, 255 decoder
steps per input (1 + 2 + ... + 128) against 1,032 for 128 samples and a greedy decode of 8 tokens.
Evaluation then reports the exact mean, median, quantiles, CRPS and interval coverage, with no
Monte-Carlo noise (``config.eval.decode``).

Level p holds every allowed prefix of p tokens (N_p of them) with its cached keys/values; one
decoder step on all of them gives the next token's distribution, and each prefix is extended by
each allowed token. The encoding and cross-attention cache are shared by all prefixes of an input.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from genre_jax.sampling import allowed_tokens, mask_logits, prefix_tree  # allowed_tokens re-exported

# The most sequences anything enumerates: exact evaluation (``decode.resolve``: eval.decode = auto | exact), the
# Predictor, and the exact RL methods (exact_reward, exact_crps), which differentiate through the whole tree.
MAX_SEQUENCES = 4096


class Enumerated(NamedTuple):
    logp_BS: jax.Array  # log-probability of every sequence, S = num_sequences(tokenizer)
    greedy_BL: jax.Array  # the greedy decode: the most likely token at each level


def num_sequences(tokenizer) -> int:
    return int(np.prod([len(a) for a in allowed_tokens(tokenizer)], dtype=np.float64))


def all_sequences(tokenizer) -> np.ndarray:
    """tokens_SL of every allowed sequence, in the order ``enumerate_sequences`` scores them
    (lexicographic in the allowed-token order, the first position slowest)."""
    grids = np.meshgrid(*allowed_tokens(tokenizer), indexing="ij")
    return np.stack([g.reshape(-1) for g in grids], axis=-1).astype(np.int32)


def level_logits(model, params, x_BF, tokenizer) -> list[jax.Array]:
    """The decoder's raw logits_BRV at every level p of the prefix tree (R_p allowed prefixes, in
    ``all_sequences`` order). They do not depend on the temperature: tempering only changes the
    softmax, so one pass serves every temperature (``tree_logprobs``)."""
    return prefix_tree(model, params, x_BF, tokenizer)[0]


def tree_logprobs(levels, tokenizer, temperature=1.0) -> Enumerated:
    """Every sequence's log-probability under softmax(masked logits / T) from ``level_logits``, and the
    greedy decode (the most likely token at each level; the same at every T > 0)."""
    allowed_LV = np.asarray(tokenizer.allowed, bool)
    batch = levels[0].shape[0]
    logp_BR = jnp.zeros((batch, 1), jnp.float32)
    greedy_index_B = jnp.zeros((batch,), jnp.int32)
    greedy = []
    for pos, (tokens_A, logits_BRV) in enumerate(zip(allowed_tokens(tokenizer), levels)):
        cond_BRV = jax.nn.log_softmax(mask_logits(logits_BRV / temperature, allowed_LV[pos]), axis=-1)
        cond_BRA = cond_BRV[..., tokens_A]
        best_B = jnp.argmax(jnp.take_along_axis(cond_BRA, greedy_index_B[:, None, None], axis=1)[:, 0], axis=-1)
        greedy.append(jnp.asarray(tokens_A)[best_B])
        greedy_index_B = greedy_index_B * len(tokens_A) + best_B
        logp_BR = (logp_BR[:, :, None] + cond_BRA).reshape(batch, -1)
    return Enumerated(logp_BR, jnp.stack(greedy, axis=1).astype(jnp.int32))


def enumerate_sequences(model, params, x_BF, tokenizer, temperature=1.0) -> Enumerated:
    """The log-probability of every allowed sequence for each input under softmax(masked logits / T),
    the distribution the sampler draws from."""
    return tree_logprobs(level_logits(model, params, x_BF, tokenizer), tokenizer, temperature)


@functools.partial(jax.jit, static_argnames=("model", "tokenizer"))
def predict(model, params, x_BF, tokenizer, temperature=1.0):
    """(probs_BS, greedy_B): the exact distribution over ``all_sequences`` and the greedy value (z units).
    Compiled as one program, also when called outside a jitted function (eagerly, each of its few
    hundred ops would compile on its own)."""
    out = enumerate_sequences(model, params, x_BF, tokenizer, temperature)
    return jnp.exp(out.logp_BS), tokenizer.decode(out.greedy_BL)


def probs_at_temperatures(model, params, x_BF, tokenizer, temperatures_J):
    """(probs_JBS, greedy_BL): the exact distribution at each of J temperatures from one decoder pass,
    and the greedy decode at the first (``predict``'s there: dividing by T can turn a near-tie into a tie)."""
    levels = level_logits(model, params, x_BF, tokenizer)
    probs_JBS = jax.vmap(lambda t: jnp.exp(tree_logprobs(levels, tokenizer, t).logp_BS))(temperatures_J)
    return probs_JBS, tree_logprobs(levels, tokenizer, temperatures_J[0]).greedy_BL


def expected_expert_cross_entropy(levels, probs_BS, expert_BSL, tokenizer, masked: bool = True):
    """expert_ce_B: the GenRe² expert term (``objectives.expert_cross_entropy``: the mean over positions
    of -log pi(expert token | prefix), averaged over sampled rollouts) as its expectation over every
    sequence: sum_seq pi(seq) * mean_t -log pi(expert_t(seq) | seq_<t), with pi(seq) held constant as
    sampled rollouts are, so its gradient is the expectation of GenRe²'s expert gradient with none of
    its sampling noise. ``levels``: ``level_logits`` (raw; ``masked`` masks them by the allowed table,
    as ``rl.masked_expert`` asks), untempered like every expert CE; ``expert_BSL``: the expert tokens of
    ``all_sequences`` (position t depends only on the first t tokens, so each prefix of a level takes
    the tokens of its first sequence)."""
    num_sequences_ = probs_BS.shape[1]
    allowed_LV = np.asarray(tokenizer.allowed, bool)
    nll_BS = jnp.zeros(probs_BS.shape, jnp.float32)
    for pos, logits_BRV in enumerate(levels):
        if masked:
            logits_BRV = mask_logits(logits_BRV, allowed_LV[pos])
        logp_BRV = jax.nn.log_softmax(logits_BRV.astype(jnp.float32), axis=-1)
        span = num_sequences_ // logits_BRV.shape[1]  # the sequences below each prefix, side by side
        expert_BR = expert_BSL[:, ::span, pos]
        nll_BR = -jnp.take_along_axis(logp_BRV, expert_BR[..., None], axis=-1)[..., 0]
        nll_BS = nll_BS + jnp.repeat(nll_BR, span, axis=1)
    return jnp.sum(jax.lax.stop_gradient(probs_BS) * nll_BS, axis=-1) / len(levels)
