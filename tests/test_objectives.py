import jax
import numpy as np
import pytest

from genre_jax import objectives


def _np_ce(logits, tokens, weights):
    logits = logits - logits.max(-1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    nll = -np.take_along_axis(logp, tokens[..., None], -1)[..., 0]
    return (nll * weights[:, None]).sum(), weights.sum() * tokens.shape[1]


def test_token_cross_entropy_matches_numpy_reference():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 5, 4)).astype(np.float32) * 3
    tokens = rng.integers(0, 4, size=(6, 5)).astype(np.int32)
    weights = np.array([1, 1, 0, 1, 0, 1], np.float32)
    total, count = objectives.token_cross_entropy(logits, tokens, weights)
    ref_total, ref_count = _np_ce(logits.astype(np.float64), tokens, weights)
    np.testing.assert_allclose(total, ref_total, rtol=1e-5)
    assert float(count) == ref_count == 20


def test_padding_rows_do_not_contribute_and_masked_logits_are_safe():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(3, 2, 3)).astype(np.float32)
    logits[..., 2] = -1e9  # masked token, as the sampler masks disallowed ones
    tokens = np.zeros((3, 2), np.int32)
    w = np.array([1, 1, 0], np.float32)
    base, _ = objectives.token_cross_entropy(logits, tokens, w)
    logits[2] += 100.0  # change only the padding row
    again, _ = objectives.token_cross_entropy(logits, tokens, w)
    np.testing.assert_allclose(base, again)
    grads = jax.grad(lambda l: objectives.token_cross_entropy(l, tokens, w)[0])(logits)
    assert np.all(np.isfinite(grads)) and np.all(np.asarray(grads)[2] == 0)


def test_rank_errors_are_caught():
    with pytest.raises(AssertionError):
        objectives.token_cross_entropy(np.zeros((2, 3)), np.zeros((2, 3), np.int32), np.ones(2))
