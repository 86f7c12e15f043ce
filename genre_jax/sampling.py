"""Pure samplers over a number decoder: constrained temperature sampling, greedy decoding, log-probs.

All functions take the Flax module and its params explicitly. The input is encoded once per batch;
G rollouts share that encoding and its cross-attention keys/values (``vmap`` over rollout keys,
the cache passed unbatched); each rollout is a ``lax.scan`` over the L positions carrying its own
self-attention KV cache. The ``allowed[L, V]`` table masks logits identically everywhere.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np

from genre_jax.tokenizers import NEG_INF


def mask_logits(logits_LV: jax.Array, allowed_LV) -> jax.Array:
    """Masks disallowed tokens; the last two axes are (position, vocabulary)."""
    return jnp.where(jnp.asarray(allowed_LV), logits_LV, NEG_INF)


def decoder_inputs(tokens_BL: jax.Array, bos_id: int) -> jax.Array:
    """Teacher forcing: the decoder reads [BOS, t_0, ..., t_{L-2}] and predicts [t_0, ..., t_{L-1}]."""
    bos = jnp.full(tokens_BL.shape[:-1] + (1,), bos_id, tokens_BL.dtype)
    return jnp.concatenate([bos, tokens_BL[..., :-1]], axis=-1)


def teacher_forced_logits(model, params, x_BF, tokens_BL, tokenizer, train=False, rngs=None, masked=True):
    """Logits_BLV of the whole target sequence in one forward pass, masked unless ``masked`` is False."""
    logits = model.apply({"params": params}, x_BF, decoder_inputs(tokens_BL, tokenizer.bos_id), train,
                         rngs=rngs)
    return mask_logits(logits, tokenizer.allowed) if masked else logits


def rollout_logits(model, params, x_BF, tokens_BGL, tokenizer, masked=True) -> jax.Array:
    """Teacher-forced logits_BGLV of G given sequences per input (masked unless ``masked`` is False);
    the input is encoded once."""
    memory_BMD = model.apply({"params": params}, x_BF, method=model.encode)

    def one_rollout(tokens_BL):
        logits = model.apply({"params": params}, memory_BMD, decoder_inputs(tokens_BL, tokenizer.bos_id),
                             method=model.decode)
        return mask_logits(logits, tokenizer.allowed) if masked else logits

    return jax.vmap(one_rollout, in_axes=1, out_axes=1)(tokens_BGL)


def token_logprobs(logits_BGLV: jax.Array, tokens_BGL: jax.Array) -> jax.Array:
    logp_BGLV = jax.nn.log_softmax(logits_BGLV, axis=-1)
    return jnp.take_along_axis(logp_BGLV, tokens_BGL[..., None], axis=-1)[..., 0]


def sequence_logprobs(model, params, x_BF, tokens_BGL, tokenizer) -> jax.Array:
    """log pi(a_t | s_t) for G given sequences per input, [B, G, L]."""
    return token_logprobs(rollout_logits(model, params, x_BF, tokens_BGL, tokenizer), tokens_BGL)


class Decoded(NamedTuple):
    """What one call of ``sample`` draws: G sequences per input, their log-probs, and (if asked) the
    greedy decode of the same encoding."""
    tokens_BGL: jax.Array
    logp_BGL: jax.Array
    greedy_BL: jax.Array | None


def _draw(logits_BV, pos, key, allowed_LV, temperature: float, greedy: bool):
    """The token at ``pos`` and its log-prob under softmax(masked logits / temperature), the
    distribution it is drawn from (one tempered distribution, so RL at T != 1 stays on-policy)."""
    tempered_BV = mask_logits(logits_BV / temperature, allowed_LV[pos])
    logp_BV = jax.nn.log_softmax(tempered_BV, axis=-1)
    next_B = (jnp.argmax(logp_BV, axis=-1) if greedy else jax.random.categorical(key, tempered_BV)).astype(jnp.int32)
    return next_B, jnp.take_along_axis(logp_BV, next_B[:, None], axis=-1)[:, 0]


def _rollout(model, params, first, key, tokenizer, temperature: float, greedy: bool):
    """Decodes one sequence per input with the KV cache from ``first`` = (logits at position 0,
    the cache after it), which every rollout shares; returns tokens_BL and their log-probs."""
    allowed_LV = jnp.asarray(tokenizer.allowed)
    logits0_BV, cache = first
    keys = jax.random.split(key, tokenizer.length)
    token0_B, logp0_B = _draw(logits0_BV, 0, keys[0], allowed_LV, temperature, greedy)

    def step(carry, inputs):
        token_B, cache = carry
        pos, step_key = inputs
        logits_BV, cache = model.apply({"params": params}, token_B, pos, cache, method=model.step)
        next_B, logp_B = _draw(logits_BV, pos, step_key, allowed_LV, temperature, greedy)
        return (next_B, cache), (next_B, logp_B)

    _, (tokens_LB, logp_LB) = jax.lax.scan(step, (token0_B, cache), (jnp.arange(1, tokenizer.length), keys[1:]))
    return (jnp.concatenate([token0_B[:, None], tokens_LB.T], axis=1),
            jnp.concatenate([logp0_B[:, None], logp_LB.T], axis=1))


def sample(model, params, x_BF, key, tokenizer, num_samples: int, temperature: float = 1.0,
           greedy: bool = False) -> Decoded:
    """G = num_samples constrained samples per input, and with ``greedy`` the argmax decode too.

    The input is encoded once, and position 0 (BOS attending to that encoding) is decoded once: the
    G rollouts and the greedy decode share its logits and cache, then continue on their own.
    """
    chex.assert_rank(x_BF, 2)
    memory_BMD = model.apply({"params": params}, x_BF, method=model.encode)
    cache = model.apply({"params": params}, memory_BMD, tokenizer.length, method=model.init_cache)
    bos_B = jnp.full((x_BF.shape[0],), tokenizer.bos_id, jnp.int32)
    first = model.apply({"params": params}, bos_B, 0, cache, method=model.step)
    rollout = functools.partial(_rollout, model, params, first, tokenizer=tokenizer, temperature=temperature,
                                greedy=False)
    tokens_BGL, logp_BGL = jax.vmap(rollout, out_axes=1)(jax.random.split(key, num_samples))
    greedy_BL = _rollout(model, params, first, key, tokenizer, 1.0, greedy=True)[0] if greedy else None
    return Decoded(tokens_BGL, logp_BGL, greedy_BL)


def predict(model, params, x_BF, key, tokenizer, num_samples: int, temperature: float = 1.0):
    """Decoded predictions in target units: (samples_BG, greedy_B)."""
    decoded = sample(model, params, x_BF, key, tokenizer, num_samples, temperature, greedy=True)
    return tokenizer.decode(decoded.tokens_BGL), tokenizer.decode(decoded.greedy_BL)


def full_recompute_sample(model, params, x_BF, key, tokenizer, num_samples: int, temperature: float = 1.0):
    """Reference sampler without a KV cache (re-runs the whole prefix each step); for tests and benchmarks."""
    allowed_LV = np.asarray(tokenizer.allowed)
    memory_BMD = model.apply({"params": params}, x_BF, method=model.encode)
    length, batch = tokenizer.length, x_BF.shape[0]

    def one(key):
        tokens_BL = jnp.zeros((batch, length), jnp.int32)
        for pos, step_key in enumerate(jax.random.split(key, length)):
            logits = model.apply({"params": params}, memory_BMD, decoder_inputs(tokens_BL, tokenizer.bos_id),
                                 method=model.decode)[:, pos]
            nxt = jax.random.categorical(step_key, mask_logits(logits / temperature, allowed_LV[pos]))
            tokens_BL = tokens_BL.at[:, pos].set(nxt.astype(jnp.int32))
        return tokens_BL

    return jax.vmap(one, out_axes=1)(jax.random.split(key, num_samples))
