"""Exact enumeration of the decoder's distribution against teacher forcing and the sampler."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genre_jax import exact, sampling, scores
from genre_jax.models import TabularRegressor, init_params
from genre_jax.tokenizers import IEEETokenizer, NormalizedTokenizer

from fakes import rollout_logits, sample

TOKENIZERS = {"normalized": NormalizedTokenizer(4, 3, -2.0, 2.0), "ieee": IEEETokenizer(2, 1, 2)}


@pytest.fixture(scope="module", params=sorted(TOKENIZERS))
def setup(request):
    tok = TOKENIZERS[request.param]
    model = TabularRegressor(tok.vocab_size, tok.length, d_model=16, num_layers=2, num_heads=2, d_ff=32,
                             mlp_hidden=16, dropout=0.0)
    params = init_params(model, 3, tok.length, jax.random.key(0))
    params["decoder"]["head"]["kernel"] = params["decoder"]["head"]["kernel"] * 4  # far from uniform
    x = jax.random.normal(jax.random.key(1), (3, 3))
    return tok, model, params, x


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_probabilities_are_the_product_of_teacher_forced_conditionals(setup, temperature):
    tok, model, params, x = setup
    seqs_SL = exact.all_sequences(tok)
    assert len(seqs_SL) == exact.num_sequences(tok) == {"normalized": 64, "ieee": 32}[tok.name]
    assert len({tuple(s) for s in seqs_SL}) == len(seqs_SL)
    assert np.asarray(tok.allowed)[np.arange(tok.length), seqs_SL].all()
    out = jax.jit(exact.enumerate_sequences, static_argnums=(0, 3, 4))(model, params, x, tok, temperature)
    probs_BS = np.exp(np.asarray(out.logp_BS, np.float64))
    np.testing.assert_allclose(probs_BS.sum(axis=1), 1.0, atol=1e-5)
    tokens_BSL = jnp.broadcast_to(jnp.asarray(seqs_SL), (x.shape[0],) + seqs_SL.shape)
    logits = rollout_logits(model, params, x, tokens_BSL, tok) / temperature
    reference_BS = np.asarray(sampling.token_logprobs(logits, tokens_BSL)).sum(-1)
    np.testing.assert_allclose(np.asarray(out.logp_BS), reference_BS, atol=1e-4)
    greedy = sample(model, params, x, jax.random.key(0), tok, 1, greedy=True).greedy_BL
    np.testing.assert_array_equal(out.greedy_BL, greedy)


def test_sample_means_converge_to_the_exact_mean(setup):
    tok, model, params, x = setup
    probs_BS, greedy_B = exact.predict(model, params, x, tok)
    dist = scores.Discrete(tok.decode(exact.all_sequences(tok)), probs_BS)
    samples_BG = np.asarray(tok.decode(sample(model, params, x, jax.random.key(5), tok, 1000).tokens_BGL))
    sd_B = np.sqrt(dist.probs_NS @ dist.values_S ** 2 - dist.mean() ** 2)
    assert np.all(np.abs(samples_BG.mean(1) - dist.mean()) < 4 * sd_B / np.sqrt(1000) + 1e-6)
    drawn = dist.sample(np.random.default_rng(0), 4000)
    assert np.all(np.abs(drawn.mean(1) - dist.mean()) < 4 * sd_B / np.sqrt(4000) + 1e-6)



def test_expected_expert_cross_entropy_and_its_gradient_equal_a_teacher_forced_enumeration(setup):
    from genre_jax import objectives

    tok, model, params, x = setup
    masked = tok.name == "normalized"  # the IEEE case takes the release's raw logits
    seqs_SL = jnp.asarray(exact.all_sequences(tok))
    tokens_BSL = jnp.broadcast_to(seqs_SL, (x.shape[0],) + seqs_SL.shape)
    target_BL = tokens_BSL[:, 5]  # the expert then leaves the target's path at every depth
    expert_BSL = objectives.expert_tokens(tok, tokens_BSL, target_BL)
    temperature = 0.7  # rollouts are drawn tempered; the expert CE is on the untempered model

    def tree(p):
        levels = exact.level_logits(model, p, x, tok)
        probs_BS = jnp.exp(exact.tree_logprobs(levels, tok, temperature).logp_BS)
        return jnp.sum(exact.expected_expert_cross_entropy(levels, probs_BS, expert_BSL, tok, masked))

    def teacher_forced(p):  # every sequence as a rollout: the mean over positions of GenRe²'s expert CE
        policy = rollout_logits(model, p, x, tokens_BSL, tok) / temperature
        probs_BS = jnp.exp(sampling.token_logprobs(policy, tokens_BSL).sum(-1))
        nll_BSL = -sampling.token_logprobs(rollout_logits(model, p, x, tokens_BSL, tok, masked=masked), expert_BSL)
        return jnp.sum(jax.lax.stop_gradient(probs_BS) * nll_BSL.mean(-1))

    value, grad = jax.jit(jax.value_and_grad(tree))(params)
    ref_value, ref_grad = jax.jit(jax.value_and_grad(teacher_forced))(params)
    # S sequences x L positions of float32 terms, summed along two different paths
    terms = seqs_SL.shape[0] * tok.length
    eps = np.finfo(np.float32).eps
    np.testing.assert_allclose(value, ref_value, rtol=terms * eps)
    scale = max(float(np.abs(g).max()) for g in jax.tree.leaves(ref_grad))
    assert scale > 0
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=terms * eps * scale), grad, ref_grad)
