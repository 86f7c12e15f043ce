"""Pure samplers over a number decoder: constrained temperature sampling, greedy decoding, log-probs.

All functions take the Flax module and its params explicitly. The input is encoded once per batch;
G rollouts share that encoding and its cross-attention keys/values (``vmap`` over rollout keys,
the cache passed unbatched). While G rollouts of an input must repeat prefixes (binary digits: 1, 2,
4, 8 possible prefixes), those levels of the prefix tree are decoded once (``prefix_tree``) and the
rollouts walk them; from there each rollout is a ``lax.scan`` over the remaining positions carrying
its own self-attention KV cache. The RL loss's re-forward shares the drawn prefixes the same way
(``shared_prefix_logits``). The ``allowed[L, V]`` table masks logits identically everywhere.
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


# The share of a re-forward's positions the shared prefixes must save to be used: each shared level is
# a decoder step compiled of its own, so a small saving costs more compile time than it gives back
# (binary digits, L 8: G 16 saves 38 %, G 8 27 %, G 6 23 %, G 4 -- the tiny recipe's -- 16 %).
MIN_SHARED_SAVING = 0.2


def shared_saving(tokenizer, num_rollouts: int) -> float:
    """The share of the G·L re-forward positions ``shared_prefix_logits`` does not decode."""
    caps, shared = shared_levels(tokenizer, num_rollouts)
    length = tokenizer.length
    return 1.0 - (sum(caps[:shared]) + num_rollouts * (length - shared)) / (num_rollouts * length)


def reforward_logits(model, params, x_BF, tokens_BGL, tokenizer, masked=True) -> jax.Array:
    """The RL loss's re-forward of its rollouts: ``shared_prefix_logits`` where it saves at least
    ``MIN_SHARED_SAVING`` of the positions, else ``rollout_logits`` (the same logits within float32
    rounding either way; the choice is static, from the tokenizer and G)."""
    if shared_saving(tokenizer, tokens_BGL.shape[1]) >= MIN_SHARED_SAVING:
        return shared_prefix_logits(model, params, x_BF, tokens_BGL, tokenizer, masked)
    return rollout_logits(model, params, x_BF, tokens_BGL, tokenizer, masked)


def allowed_tokens(tokenizer) -> list[np.ndarray]:
    """The allowed token ids at each position."""
    return [np.flatnonzero(row) for row in np.asarray(tokenizer.allowed, bool)]


def prefix_capacities(tokenizer, num_rollouts: int) -> list[int]:
    """The most distinct prefixes of length j that G allowed sequences of one input can have, for
    j = 0..L-1: min(G, the number of allowed prefixes of that length)."""
    counts, out = 1, []
    for tokens_A in allowed_tokens(tokenizer):
        out.append(min(num_rollouts, counts))
        counts *= len(tokens_A)
    return out


def shared_levels(tokenizer, num_rollouts: int) -> tuple[list[int], int]:
    """(``prefix_capacities``, how many leading levels share prefixes): the levels before the first
    where G distinct prefixes are possible (all L when none is)."""
    caps = prefix_capacities(tokenizer, num_rollouts)
    return caps, next((j for j, c in enumerate(caps) if c >= num_rollouts), tokenizer.length)


def shared_prefix_logits(model, params, x_BF, tokens_BGL, tokenizer, masked=True) -> jax.Array:
    """``rollout_logits`` of sequences the tokenizer allows (the sampler's), computing each distinct
    prefix of an input's G rollouts once while prefixes can still be shared.

    The logits at position j depend only on the input and the prefix before j. While fewer allowed
    prefixes of length j exist than G (``prefix_capacities``: 1, 2, 4, 8 with binary digits), the
    distinct ones are decoded once each with the KV cache (``model.step``, one level at a time, the
    rollouts of each input sorted so that equal prefixes are neighbours); from the first length with
    G possible prefixes on, every rollout's suffix runs as one teacher-forced chunk (``model.chunk``)
    after its prefix's cache. Rollouts then read their prefix's logits. Equal to ``rollout_logits``
    within float32 rounding (another order of the same sums), and so is the gradient: a shared
    prefix's gradient is the sum of its rollouts' (the gathers' transpose). Binary digits, L = 8, G =
    16: 79 of 128 token positions (-38 % of the re-forward's arithmetic); base 8, L = 4: 41 of 64.
    Tokens must be allowed (``tokenizer.allowed``), as sampled ones are: a prefix the table does not
    allow would overflow its level's slots."""
    batch, rollouts, length = tokens_BGL.shape
    caps, shared = shared_levels(tokenizer, rollouts)  # levels 0..shared-1 decode shared prefixes
    memory_BMD = model.apply({"params": params}, x_BF, method=model.encode)
    cache = model.apply({"params": params}, memory_BMD, length, method=model.init_cache)
    mem = [{"mem_k": c["mem_k"], "mem_v": c["mem_v"]} for c in cache["layers"]]  # per input, unbatched over G

    def with_mem(kv):
        return {"layers": [{**m, **c} for m, c in zip(mem, kv["layers"])]}

    def kv_of(full):
        return {"layers": [{"k": c["k"], "v": c["v"]} for c in full["layers"]]}

    # Each input's rollouts in lexicographic order (ties keep their order): a prefix's rollouts are
    # contiguous, so its node id at level j is the running count of "prefix of length j changed".
    *sorted_cols, perm_BG = jax.lax.sort(
        (*(tokens_BGL[..., j] for j in range(length)), jnp.broadcast_to(jnp.arange(rollouts), (batch, rollouts))),
        dimension=1, num_keys=length)
    sorted_BGL = jnp.stack(sorted_cols, axis=-1)
    unsort_BG = jnp.argsort(perm_BG, axis=1)
    changed_BGL = jnp.concatenate([jnp.ones((batch, 1, length), bool), sorted_BGL[:, 1:] != sorted_BGL[:, :-1]], 1)
    rows_B1 = jnp.arange(batch)[:, None]

    def gather_nodes(tree, node_BR):  # [B, R prefixes, ...] at node_BR
        return jax.tree.map(lambda a: jnp.take_along_axis(a, node_BR.reshape(node_BR.shape + (1,) * (a.ndim - 2)),
                                                           axis=1), tree)

    # Level 0: BOS, one node per input.
    bos_B = jnp.full((batch,), tokenizer.bos_id, jnp.int32)
    logits_BV, full = model.apply({"params": params}, bos_B, 0, cache, method=model.step)
    level_logits, level_ids = [logits_BV[:, None]], [jnp.zeros((batch, rollouts), jnp.int32)]
    kv_BR = jax.tree.map(lambda a: a[:, None], kv_of(full))
    new_BG = jnp.zeros((batch, rollouts), bool).at[:, 0].set(True)
    for j in range(1, shared):
        new_BG = new_BG | changed_BGL[..., j - 1]
        id_BG = jnp.cumsum(new_BG, axis=1, dtype=jnp.int32) - 1
        token_BR = jnp.zeros((batch, caps[j]), jnp.int32).at[rows_B1, id_BG].set(sorted_BGL[..., j - 1])
        parent_BR = jnp.zeros((batch, caps[j]), jnp.int32).at[rows_B1, id_BG].set(level_ids[-1])

        def node_step(token_B, kv, pos=j):
            logits, out = model.apply({"params": params}, token_B, pos, with_mem(kv), method=model.step)
            return logits, kv_of(out)

        logits_BRV, kv_BR = jax.vmap(node_step, in_axes=1, out_axes=1)(token_BR, gather_nodes(kv_BR, parent_BR))
        level_logits.append(logits_BRV)
        level_ids.append(id_BG)
    # Rollout order again; each rollout reads its prefix's logits.
    ids = [jnp.take_along_axis(i, unsort_BG, axis=1) for i in level_ids]
    logits_BGLV = jnp.stack([jnp.take_along_axis(lv, i[..., None], axis=1) for lv, i in zip(level_logits, ids)], 2)
    if shared < length:  # the rest: each rollout's suffix after its prefix's cache, in one chunk
        def suffix(tokens_BQ, kv):
            return model.apply({"params": params}, tokens_BQ, shared, with_mem(kv), method=model.chunk)[0]

        tail_BGQV = jax.vmap(suffix, in_axes=1, out_axes=1)(tokens_BGL[..., shared - 1:length - 1],
                                                            gather_nodes(kv_BR, ids[-1]))
        logits_BGLV = jnp.concatenate([logits_BGLV, tail_BGQV], axis=2)
    return mask_logits(logits_BGLV, tokenizer.allowed) if masked else logits_BGLV


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


def prefix_tree(model, params, x_BF, tokenizer, num_levels: int | None = None):
    """The first ``num_levels`` (all L by default) levels of the prefix tree, every allowed prefix
    decoded once with the KV cache: (raw logits_BRV per level p, R_p allowed prefixes of p tokens in
    ``exact.all_sequences`` order; the last level's per-prefix self-attention cache, [B, R, ...] per
    layer; the cross-attention cache every prefix of an input shares)."""
    allowed = allowed_tokens(tokenizer)
    num_levels = tokenizer.length if num_levels is None else num_levels
    batch = x_BF.shape[0]
    memory_BMD = model.apply({"params": params}, x_BF, method=model.encode)
    cache = model.apply({"params": params}, memory_BMD, tokenizer.length, method=model.init_cache)
    shared = [{"mem_k": c["mem_k"], "mem_v": c["mem_v"]} for c in cache["layers"]]
    per_prefix = [{"k": c["k"][:, None], "v": c["v"][:, None]} for c in cache["layers"]]  # R = 1 prefix

    def step(token_B, pos, own):
        layers = [{**s, **o} for s, o in zip(shared, own)]
        logits_BV, cache = model.apply({"params": params}, token_B, pos, {"layers": layers}, method=model.step)
        return logits_BV, [{"k": c["k"], "v": c["v"]} for c in cache["layers"]]

    # vmap over the prefix axis R; the shared encoding stays unbatched
    step_R = jax.vmap(step, in_axes=(1, None, 1), out_axes=(1, 1))
    last_BR = jnp.full((batch, 1), tokenizer.bos_id, jnp.int32)  # the token each prefix feeds next
    levels = []
    for pos, tokens_A in enumerate(allowed[:num_levels]):
        logits_BRV, per_prefix = step_R(last_BR, pos, per_prefix)
        levels.append(logits_BRV)
        num_a = len(tokens_A)
        if pos + 1 < num_levels:  # each prefix's cache is shared by its children
            per_prefix = jax.tree.map(lambda a: jnp.repeat(a, num_a, axis=1), per_prefix)
            last_BR = jnp.broadcast_to(jnp.asarray(tokens_A, jnp.int32), (batch, logits_BRV.shape[1], num_a))
            last_BR = last_BR.reshape(batch, -1)
    return levels, per_prefix, shared


def sampled_levels(tokenizer, num_samples: int) -> int:
    """How many leading levels ``sample`` reads from the enumerated prefix tree: ``shared_levels``'
    count where that saves ``MIN_SHARED_SAVING`` of the decoder positions, else 1 (BOS only)."""
    if shared_saving(tokenizer, num_samples) >= MIN_SHARED_SAVING:
        return shared_levels(tokenizer, num_samples)[1]
    return 1


def _rollout(model, params, tree, key, tokenizer, temperature: float, greedy: bool):
    """Decodes one sequence per input: its first tokens by walking the enumerated levels of ``tree``
    (``prefix_tree``: no decoder step of its own), the rest with the KV cache of the prefix it drew;
    returns tokens_BL and their log-probs. The keys are the same at every position whichever way a
    token is drawn, so the draws do not depend on how many levels were enumerated."""
    levels, kv_BR, shared = tree
    allowed_LV = jnp.asarray(tokenizer.allowed)
    allowed = allowed_tokens(tokenizer)
    keys = jax.random.split(key, tokenizer.length)
    node_B = jnp.zeros((levels[0].shape[0],), jnp.int32)  # the drawn prefix's index in its level
    tokens, logps = [], []
    for pos, logits_BRV in enumerate(levels):
        logits_BV = jnp.take_along_axis(logits_BRV, node_B[:, None, None], axis=1)[:, 0]
        token_B, logp_B = _draw(logits_BV, pos, keys[pos], allowed_LV, temperature, greedy)
        tokens.append(token_B)
        logps.append(logp_B)
        if pos + 1 < len(levels):
            rank_V = np.zeros(tokenizer.vocab_size, np.int32)
            rank_V[allowed[pos]] = np.arange(len(allowed[pos]))
            node_B = node_B * len(allowed[pos]) + jnp.asarray(rank_V)[token_B]
    if len(levels) < tokenizer.length:
        def step(carry, inputs):
            token_B, cache = carry
            pos, step_key = inputs
            logits_BV, cache = model.apply({"params": params}, token_B, pos, cache, method=model.step)
            next_B, logp_B = _draw(logits_BV, pos, step_key, allowed_LV, temperature, greedy)
            return (next_B, cache), (next_B, logp_B)

        own = jax.tree.map(lambda a: jnp.take_along_axis(
            a, node_B.reshape((-1, 1) + (1,) * (a.ndim - 2)), axis=1)[:, 0], kv_BR)
        cache = {"layers": [{**s, **o} for s, o in zip(shared, own)]}
        _, (tokens_LB, logp_LB) = jax.lax.scan(step, (tokens[-1], cache),
                                               (jnp.arange(len(levels), tokenizer.length), keys[len(levels):]))
        tokens, logps = tokens + list(tokens_LB), logps + list(logp_LB)
    return jnp.stack(tokens, axis=1), jnp.stack(logps, axis=1)


def sample(model, params, x_BF, key, tokenizer, num_samples: int, temperature: float = 1.0,
           greedy: bool = False) -> Decoded:
    """G = num_samples constrained samples per input, and with ``greedy`` the argmax decode too.

    The input is encoded once. While an input's G rollouts cannot all have distinct prefixes
    (``sampled_levels``: the first 4 levels of binary digits at G = 16), every allowed prefix is
    decoded once (``prefix_tree``) and each rollout and the greedy decode walk those levels, drawing
    from the logits of the prefix they hold; then each continues on its own with its prefix's cache.
    Binary digits, L = 8, G = 16: 15 + 16 x 4 = 79 decoder positions per input instead of 128.
    """
    chex.assert_rank(x_BF, 2)
    tree = prefix_tree(model, params, x_BF, tokenizer, sampled_levels(tokenizer, num_samples))
    return _draw_all(model, params, tree, key, tokenizer, num_samples, temperature, greedy)


def sample_levels(levels, key, tokenizer, num_samples: int, temperature: float = 1.0,
                  greedy: bool = False) -> Decoded:
    """``sample``'s draws (the same keys, so the same tokens) from every level of an enumerated tree
    (``exact.level_logits``), with no decoder step: where a caller enumerates the tree anyway."""
    if len(levels) != tokenizer.length:
        raise ValueError(f"sample_levels needs all {tokenizer.length} levels of the tree, got {len(levels)}")
    return _draw_all(None, None, (levels, None, None), key, tokenizer, num_samples, temperature, greedy)


def _draw_all(model, params, tree, key, tokenizer, num_samples: int, temperature: float, greedy: bool) -> Decoded:
    rollout = functools.partial(_rollout, model, params, tree, tokenizer=tokenizer, temperature=temperature,
                                greedy=False)
    tokens_BGL, logp_BGL = jax.vmap(rollout, out_axes=1)(jax.random.split(key, num_samples))
    greedy_BL = _rollout(model, params, tree, key, tokenizer, 1.0, greedy=True)[0] if greedy else None
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
