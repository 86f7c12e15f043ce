"""Sampler and model tests on one toy model (few distinct compiled functions)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genre_jax import exact, sampling
from genre_jax.models import TabularRegressor, init_params
from genre_jax.tokenizers import IEEETokenizer, NormalizedTokenizer

from fakes import predict, rollout_logits, sequence_logprobs, teacher_forced_logits
from tolerance import EPS32, assert_trees_close

TOKENIZERS = {"normalized": NormalizedTokenizer(4, 5, -2.0, 2.0), "ieee": IEEETokenizer(10, 1, 3)}


@pytest.fixture(scope="module", params=sorted(TOKENIZERS))
def setup(request):
    tok = TOKENIZERS[request.param]
    model = TabularRegressor(tok.vocab_size, tok.length, d_model=16, num_layers=2, num_heads=2, d_ff=32,
                             mlp_hidden=16, dropout=0.1)
    params = init_params(model, 6, tok.length, jax.random.key(0))
    # Scale the head up so the policy is far from uniform and the mask / argmax checks bite.
    params["decoder"]["head"]["kernel"] = params["decoder"]["head"]["kernel"] * 5
    x = jax.random.normal(jax.random.key(1), (5, 6))
    sample = jax.jit(lambda p, x, k: sampling.sample(model, p, x, k, tok, 7, greedy=True))
    return tok, model, params, x, sample


def test_shapes_mask_and_determinism(setup):
    tok, model, params, x, sample = setup
    tokens_BGL, logp_BGL, _ = sample(params, x, jax.random.key(3))
    assert tokens_BGL.shape == (5, 7, tok.length) and logp_BGL.shape == (5, 7, tok.length)
    assert np.asarray(tok.allowed)[np.arange(tok.length), np.asarray(tokens_BGL)].all()
    again = sample(params, x, jax.random.key(3)).tokens_BGL
    np.testing.assert_array_equal(tokens_BGL, again)
    other = sample(params, x, jax.random.key(4)).tokens_BGL
    assert not np.array_equal(tokens_BGL, other)
    assert np.all(np.asarray(logp_BGL) <= 0)
    # rollouts of one input differ from each other (keys are really split over G)
    assert max(len({tuple(r) for r in rollouts}) for rollouts in np.asarray(tokens_BGL)) > 1


def test_kv_cache_sampler_equals_full_recompute(setup):
    tok, model, params, x, sample = setup
    cached = sample(params, x, jax.random.key(5)).tokens_BGL
    full = jax.jit(lambda p, x, k: sampling.full_recompute_sample(model, p, x, k, tok, 7))(params, x, jax.random.key(5))
    np.testing.assert_array_equal(cached, full)


def test_sampler_walking_the_whole_tree_draws_what_the_plain_sampler_draws(monkeypatch):
    """G = 9 rollouts of a tree of 8 sequences: every level is enumerated and walked (no decoder step
    of its own); the same keys give the same tokens as the plain KV-cache sampler (BOS only
    enumerated) and the full recompute, and log-probs within float32 rounding of a softmax over
    logits of size ~10 (the levels' decoder runs at another batch shape)."""
    tok = NormalizedTokenizer(2, 3, -1.0, 1.0)
    assert sampling.sampled_levels(tok, 9) == tok.length
    model = TabularRegressor(tok.vocab_size, tok.length, d_model=16, num_layers=1, num_heads=2, d_ff=32,
                             mlp_hidden=16)
    params = init_params(model, 6, tok.length, jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (4, 6))
    draw = lambda: jax.jit(lambda p, x, k: sampling.sample(model, p, x, k, tok, 9, greedy=True))(  # noqa: E731
        params, x, jax.random.key(2))
    tree = draw()
    monkeypatch.setattr(sampling, "sampled_levels", lambda tokenizer, g: 1)
    plain = draw()
    full = jax.jit(lambda p, x, k: sampling.full_recompute_sample(model, p, x, k, tok, 9))(params, x, jax.random.key(2))
    np.testing.assert_array_equal(tree.tokens_BGL, plain.tokens_BGL)
    np.testing.assert_array_equal(tree.tokens_BGL, full)
    np.testing.assert_array_equal(tree.greedy_BL, plain.greedy_BL)
    walked = jax.jit(lambda p, x, k: sampling.sample_levels(exact.level_logits(model, p, x, tok), k, tok, 9,
                                                            greedy=True))(params, x, jax.random.key(2))
    np.testing.assert_array_equal(walked.tokens_BGL, tree.tokens_BGL)  # where a caller enumerates anyway
    np.testing.assert_array_equal(walked.greedy_BL, tree.greedy_BL)
    scale = 1 + float(np.abs(plain.logp_BGL).max())
    np.testing.assert_allclose(tree.logp_BGL, plain.logp_BGL, rtol=0, atol=64 * EPS32 * scale)


def test_sampler_logprobs_equal_teacher_forced(setup):
    tok, model, params, x, sample = setup
    tokens_BGL, logp_BGL, _ = sample(params, x, jax.random.key(6))
    teacher = sequence_logprobs(model, params, x, tokens_BGL, tok)
    np.testing.assert_allclose(logp_BGL, teacher, atol=1e-4)


def test_shared_prefix_logits_equal_rollout_logits_and_their_gradient(setup):
    """The RL re-forward over distinct prefixes only gives every rollout the logits and the gradient of
    the plain teacher-forced pass. Both paths add the same products in another order (the model's
    longest sums are d_ff = 32 terms, through 2 layers): logits within 64 eps of their size; the
    gradient sums B·G·L = 5·7·L positions' terms of one sign (positive weights, so no cancellation):
    4 sqrt(n) eps of its largest entry."""
    tok, model, params, x, sample = setup
    drawn = sample(params, x, jax.random.key(12)).tokens_BGL
    # two copies of one rollout, so a whole sequence is shared, not only prefixes
    tokens_BGL = jnp.concatenate([drawn, drawn[:, :1]], axis=1)
    per_input = [{tuple(r) for r in rollouts} for rollouts in np.asarray(tokens_BGL)]
    assert all(len(seqs) < tokens_BGL.shape[1] for seqs in per_input) and max(map(len, per_input)) > 2
    weight_BGLV = jax.random.uniform(jax.random.key(13), tokens_BGL.shape + (tok.vocab_size,))

    def loss(logits_fn):
        return jax.jit(jax.value_and_grad(lambda p: jnp.sum(
            weight_BGLV * jax.nn.log_softmax(logits_fn(model, p, x, tokens_BGL, tok, masked=False)))))

    (plain, grad_plain), (shared, grad_shared) = (loss(sampling.rollout_logits)(params),
                                                  loss(sampling.shared_prefix_logits)(params))
    logits = jax.jit(lambda p: (sampling.rollout_logits(model, p, x, tokens_BGL, tok, masked=False),
                                sampling.shared_prefix_logits(model, p, x, tokens_BGL, tok, masked=False)))(params)
    np.testing.assert_allclose(logits[1], logits[0], rtol=0, atol=64 * EPS32 * float(jnp.abs(logits[0]).max()))
    np.testing.assert_allclose(shared, plain, rtol=64 * EPS32)
    n = tokens_BGL.size
    scale = max(float(jnp.abs(g).max()) for g in jax.tree.leaves(grad_plain))
    assert_trees_close(grad_shared, grad_plain, atol=4 * np.sqrt(n) * EPS32 * scale)


def test_tempered_logprobs_are_those_of_the_tempered_distribution(setup):
    tok, model, params, x, _ = setup
    drawn = jax.jit(lambda p, x, k: sampling.sample(model, p, x, k, tok, 5, temperature=0.5))(
        params, x, jax.random.key(8))
    logits_BGLV = rollout_logits(model, params, x, drawn.tokens_BGL, tok)
    tempered = sampling.token_logprobs(logits_BGLV / 0.5, drawn.tokens_BGL)
    np.testing.assert_allclose(drawn.logp_BGL, tempered, atol=1e-4)
    assert not np.allclose(drawn.logp_BGL, sampling.token_logprobs(logits_BGLV, drawn.tokens_BGL), atol=1e-2)


def test_greedy_is_argmax_of_teacher_forced_logits(setup):
    tok, model, params, x, sample = setup
    greedy_BL = sample(params, x, jax.random.key(0)).greedy_BL
    logits_BLV = teacher_forced_logits(model, params, x, greedy_BL, tok)
    np.testing.assert_array_equal(jnp.argmax(logits_BLV, -1), greedy_BL)
    assert np.asarray(tok.allowed)[np.arange(tok.length), np.asarray(greedy_BL)].all()


def test_predict_decodes_samples_and_greedy(setup):
    tok, model, params, x, sample = setup
    samples_BG, greedy_B = predict(model, params, x, jax.random.key(7), tok, 4)
    assert samples_BG.shape == (5, 4) and greedy_B.shape == (5,)
    greedy_BL = sample(params, x, jax.random.key(0)).greedy_BL
    np.testing.assert_allclose(greedy_B, tok.decode(greedy_BL))


def test_dropout_only_in_train_mode(setup):
    tok, model, params, x, _ = setup
    tokens = jnp.zeros((5, tok.length), jnp.int32)
    a = teacher_forced_logits(model, params, x, tokens, tok)
    b = teacher_forced_logits(model, params, x, tokens, tok)
    np.testing.assert_array_equal(a, b)
    c = teacher_forced_logits(model, params, x, tokens, tok, True, {"dropout": jax.random.key(0)})
    assert not np.allclose(a, c)


def test_the_re_forward_shares_prefixes_only_where_it_saves_enough():
    binary = NormalizedTokenizer(2, 8)
    # the sampler reads the same levels from the enumerated tree (binary, G 16: 4 levels; tiny's G 4: BOS only)
    assert [sampling.sampled_levels(binary, g) for g in (4, 8, 16, 128)] == [1, 3, 4, 7]
    # positions by hand: G 16 decodes 1 + 2 + 4 + 8 prefix nodes, then 16 x 4 suffix positions, of 128
    assert sampling.shared_saving(binary, 16) == 1 - (15 + 64) / 128
    assert sampling.shared_saving(binary, 6) == 1 - (7 + 30) / 48  # the RL step tests' G: shared
    assert sampling.shared_saving(binary, 4) == 1 - (3 + 24) / 32 < sampling.MIN_SHARED_SAVING  # tiny's: plain
    assert sampling.shared_saving(NormalizedTokenizer(8, 4), 16) == 1 - (1 + 8 + 32) / 64
