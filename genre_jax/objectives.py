"""Losses over decoder outputs. Token-level objectives return (sum, count) so callers can aggregate
exactly across batches and devices; they are registered by name in ``TOKEN_OBJECTIVES``."""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp


def token_cross_entropy(logits_BLV: jax.Array, tokens_BL: jax.Array, weights_B: jax.Array):
    """Teacher-forced CE summed over the L positions of each weighted example: (sum, token count).

    ``logits_BLV`` must already be masked by the tokenizer's allowed table, so the softmax runs over
    the tokens the sampler can emit at each position. ``weights_B`` zeroes padding rows.
    """
    chex.assert_rank([logits_BLV, tokens_BL, weights_B], [3, 2, 1])
    chex.assert_equal_shape_prefix([logits_BLV, tokens_BL], 2)
    logp_BLV = jax.nn.log_softmax(logits_BLV.astype(jnp.float32), axis=-1)
    nll_BL = -jnp.take_along_axis(logp_BLV, tokens_BL[..., None], axis=-1)[..., 0]
    weights_B = weights_B.astype(jnp.float32)
    return jnp.sum(nll_BL * weights_B[:, None]), jnp.sum(weights_B) * tokens_BL.shape[1]


TOKEN_OBJECTIVES = {"ce": token_cross_entropy}
