import itertools

import jax
import numpy as np
import pytest

from genre_jax import objectives, scores

from tolerance import EPS32


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


# ---------------------------------------------------------------------------------------------
# RL objectives against NumPy references.

import jax.numpy as jnp  # noqa: E402

from genre_jax.tokenizers import IEEETokenizer, NormalizedTokenizer  # noqa: E402

RNG = np.random.default_rng(42)
REWARD_BG = RNG.normal(size=(3, 5))
GREEDY_B = RNG.normal(size=3) + 0.5


def test_rewards():
    pred, target = np.array([[1.0, -2.0]]), np.array([0.5])
    np.testing.assert_allclose(objectives.neg_mse(pred, target), [[-0.25, -6.25]])
    np.testing.assert_allclose(objectives.neg_mae(pred, target), [[-0.5, -2.5]])
    far = np.array([[1.0, -2.0, 9.0, -1e6]])
    np.testing.assert_allclose(objectives.neg_mse_clip50(far, target), [[-0.25, -6.25, -50.0, -50.0]])


def test_remax_advantage_subtracts_the_greedy_reward():
    adv = np.asarray(objectives.remax_advantage(REWARD_BG, GREEDY_B))
    np.testing.assert_allclose(adv, REWARD_BG - GREEDY_B[:, None], rtol=1e-6)
    # a silently-zero baseline would return the raw rewards
    assert np.abs(adv - REWARD_BG).min() > 1e-3


def test_grpo_and_rloo_advantages():
    grpo = np.asarray(objectives.grpo_advantage(REWARD_BG, GREEDY_B))
    ref = (REWARD_BG - REWARD_BG.mean(1, keepdims=True)) / (REWARD_BG.std(1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(grpo, ref, rtol=1e-5)
    rloo = np.asarray(objectives.rloo_advantage(REWARD_BG, GREEDY_B))
    for b in range(3):
        for g in range(5):
            others = np.delete(REWARD_BG[b], g).mean()
            np.testing.assert_allclose(rloo[b, g], REWARD_BG[b, g] - others, rtol=1e-6)


def test_policy_losses_match_numpy():
    logp = -RNG.random((3, 5, 4))
    old = logp + RNG.normal(scale=0.5, size=logp.shape)  # ratios far from 1, so clipping bites
    adv = RNG.normal(size=(3, 5))
    w = np.array([1.0, 0.0, 1.0])
    ref = -(adv * logp.sum(-1))[w > 0].mean()
    np.testing.assert_allclose(objectives.reinforce_loss(logp, old, adv, w), ref, rtol=1e-5)
    ratio = np.exp(logp - old)
    obj = np.minimum(ratio * adv[..., None], np.clip(ratio, 0.8, 1.2) * adv[..., None]).mean(-1)
    np.testing.assert_allclose(objectives.ppo_clip_loss(logp, old, adv, w, 0.2), -obj[w > 0].mean(), rtol=1e-5)
    assert not np.isclose(-obj[w > 0].mean(), -(ratio.mean(-1) * adv)[w > 0].mean())  # clipping was active
    # with mu = 1 the ratio is 1: GRPO's gradient is group-normalized REINFORCE (per-token mean)
    g1 = jax.grad(lambda l: objectives.ppo_clip_loss(l, l, adv, w))(jnp.asarray(logp))
    g2 = jax.grad(lambda l: objectives.reinforce_loss(l, l, adv, w))(jnp.asarray(logp)) / logp.shape[-1]
    np.testing.assert_allclose(g1, g2, rtol=1e-5, atol=1e-7)


def test_exact_kl_entropy_and_expert_ce():
    logits = RNG.normal(size=(2, 3, 4, 5))
    w = np.ones(2)
    assert abs(float(objectives.exact_kl(logits, logits, w))) < 1e-6
    ref_logits = RNG.normal(size=logits.shape)
    p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    q = np.exp(ref_logits) / np.exp(ref_logits).sum(-1, keepdims=True)
    np.testing.assert_allclose(objectives.exact_kl(logits, ref_logits, w), (p * np.log(p / q)).sum(-1).mean(),
                               rtol=1e-5)
    np.testing.assert_allclose(objectives.mean_entropy(logits, w), -(p * np.log(p)).sum(-1).mean(), rtol=1e-5)
    expert = RNG.integers(0, 5, size=(2, 3, 4))
    ce = -np.log(np.take_along_axis(p, expert[..., None], -1)[..., 0]).mean()
    np.testing.assert_allclose(objectives.expert_cross_entropy(logits, expert, w), ce, rtol=1e-5)


def test_expert_tokens_normalized_hand_made():
    tok = NormalizedTokenizer(10, 3, 0.0, 1.0)
    target = jnp.array([[4, 5, 6]])
    rollouts = jnp.array([[[4, 5, 6], [4, 7, 0], [3, 9, 9], [4, 5, 2], [9, 0, 0]]])
    expected = [[4, 5, 6], [4, 5, 0], [4, 9, 9], [4, 5, 6], [4, 0, 0]]
    np.testing.assert_array_equal(objectives.expert_tokens(tok, rollouts, target)[0], expected)


def test_expert_tokens_ieee_point_toward_the_target_by_value():
    tok = IEEETokenizer(10, 1, 2)
    P, M = tok.plus_id, tok.minus_id
    target = jnp.array([[P, P, 1, 2, 3]])  # +2.3e+1 = 23
    rollouts = jnp.array([[
        [P, P, 1, 2, 3],  # on track throughout
        [M, P, 1, 2, 3],  # -23: below; the largest reachable value is 0 (zero mantissa)
        [P, M, 1, 2, 3],  # +0.23: below; with a negative exponent the largest value wants small digits
        [P, P, 2, 0, 0],  # +0.0e2 = 0, a leading-zero mantissa: below, though its exponent digit is larger
        [P, P, 1, 1, 9],  # 11.9 < 23: below from position 4 on
        [M, M, 1, 2, 3],  # -0.023: the closest it can get is 0
    ]])
    expected = [[P, P, 1, 2, 3], [P, P, 0, 0, 0], [P, P, 0, 9, 9], [P, P, 1, 0, 2], [P, P, 1, 2, 9],
                [P, P, 0, 0, 0]]
    np.testing.assert_array_equal(objectives.expert_tokens(tok, rollouts, target)[0], expected)
    # the two cases the token-order rule got backwards
    zero, one_two = tok.encode(np.array([0.0, 1.2]))[0]
    rollout = tok.encode(np.array([0.1]))[0]  # [+, -, 1, 1, 0]
    np.testing.assert_array_equal(objectives.expert_tokens(tok, rollout[None], zero[None])[0, 0], [P, P, 0, 0, 0])
    rollout = jnp.array([[[P, P, 1, 0, 1]]])  # 0.1e1 = 1.0 < 1.2: the expert completes to 1.0, not 0.0
    np.testing.assert_array_equal(objectives.expert_tokens(tok, rollout, one_two[None])[0, 0], [P, P, 0, 0, 1])


def _brute_force_expert(tok, rollout_L, target_L):
    """Every completion enumerated: off the target's path, the token whose completions come nearest."""
    allowed = np.asarray(tok.allowed)
    # every allowed sequence and its value, decoded in one call
    seqs_SL = np.array(list(itertools.product(*[np.flatnonzero(allowed[j]) for j in range(tok.length)])), np.int32)
    values_S = np.asarray(tok.decode(jnp.asarray(seqs_SL)))
    y = float(tok.decode(jnp.asarray(target_L)))
    out = []
    for i in range(tok.length):
        if np.array_equal(rollout_L[:i], target_L[:i]):
            out.append(int(target_L[i]))
            continue
        gaps = {}
        on_prefix_S = np.all(seqs_SL[:, :i] == rollout_L[:i], axis=1)
        for t in np.flatnonzero(allowed[i]):
            values = values_S[on_prefix_S & (seqs_SL[:, i] == t)]  # the completions of rollout[:i] + [t]
            gaps[t] = max(values.min() - y, y - values.max(), 0.0)
        best = min(gaps.values())
        out.append(int(min(t for t, g in gaps.items() if g == best)))
    return out


@pytest.mark.parametrize("tok", [IEEETokenizer(3, 1, 2), IEEETokenizer(4, 2, 1), NormalizedTokenizer(3, 3, -1.0, 2.0)],
                         ids=lambda t: f"{t.name}{t.base}")
def test_expert_tokens_match_an_enumeration_of_all_completions(tok):
    rng = np.random.default_rng(tok.base)
    allowed = np.asarray(tok.allowed)
    choices = [np.flatnonzero(allowed[j]) for j in range(tok.length)]
    target = np.array([[rng.choice(c) for c in choices] for _ in range(6)], np.int32)
    rollouts = np.array([[[rng.choice(c) for c in choices] for _ in range(4)] for _ in range(6)], np.int32)
    rollouts[:, 0, :2] = target[:, :2]  # some rollouts leave the path late
    got = np.asarray(objectives.expert_tokens(tok, jnp.asarray(rollouts), jnp.asarray(target)))
    for b in range(6):
        for g in range(4):
            assert list(got[b, g]) == _brute_force_expert(tok, rollouts[b, g], target[b]), (b, g)


def _release_expert(target_L, rollout_L, base):
    """A direct port of the release's per-sequence loop for normalized digits."""
    out, state = [], 0  # 0: on the target's path, +1: already above, -1: already below
    for pos in range(len(target_L)):
        out.append(target_L[pos] if state == 0 else (0 if state > 0 else base - 1))
        if state == 0 and rollout_L[pos] != target_L[pos]:
            state = 1 if rollout_L[pos] > target_L[pos] else -1
    return out


# (8, 8) and (10, 8): B^D >= 2^24, where float32 cannot tell neighbouring values apart
@pytest.mark.parametrize("base, digits", [(2, 8), (4, 6), (8, 4), (8, 8), (10, 8)])
def test_expert_tokens_normalized_equal_the_release_loop(base, digits):
    tok = NormalizedTokenizer(base, digits, -2.0, 3.0)
    rng = np.random.default_rng(base)
    target = rng.integers(0, base, size=(16, digits)).astype(np.int32)
    rollouts = rng.integers(0, base, size=(16, 8, digits)).astype(np.int32)
    keep = rng.integers(0, digits + 1, size=(16, 8))  # share a random-length prefix with the target
    for b in range(16):
        for g in range(8):
            rollouts[b, g, :keep[b, g]] = target[b, :keep[b, g]]
    got = np.asarray(objectives.expert_tokens(tok, jnp.asarray(rollouts), jnp.asarray(target)))
    expected = [[_release_expert(target[b], rollouts[b, g], base) for g in range(8)] for b in range(16)]
    np.testing.assert_array_equal(got, expected)


def test_expert_token_where_float32_decoding_chose_wrong():
    """Issue 36's case: one digit below the target at position 6 of (10, 8); decoded in float32 the
    candidates of position 7 tie and the lowest id (3) won, the rule says the largest digit."""
    tok = NormalizedTokenizer(10, 8, -2.5, 7.3)
    target = np.array([[7, 7, 5, 8, 5, 6, 2, 2]], np.int32)
    rollout = np.array([[[7, 7, 5, 8, 5, 6, 1, 0], [7, 7, 5, 8, 5, 6, 3, 0], [7, 7, 5, 8, 5, 6, 2, 2]]], np.int32)
    got = np.asarray(objectives.expert_tokens(tok, jnp.asarray(rollout), jnp.asarray(target)))[0]
    assert got[0, 7] == 9 and got[1, 7] == 0
    np.testing.assert_array_equal(got, [_release_expert(target[0], r, 10) for r in rollout[0]])


def test_expert_tokens_by_value_agree_with_the_release_rule_where_float32_resolves():
    """The value-based rule (kept for IEEE tokens) is the release's on normalized tokens: one rule."""
    tok = NormalizedTokenizer(4, 4, -1.0, 2.0)
    rng = np.random.default_rng(4)
    target = rng.integers(0, 4, size=(8, 4)).astype(np.int32)
    rollouts = rng.integers(0, 4, size=(8, 6, 4)).astype(np.int32)
    rollouts[:, :3, :2] = target[:, None, :2]
    by_value = objectives._nearest_by_value(tok, jnp.asarray(rollouts), jnp.asarray(target))
    off = np.cumsum(rollouts != target[:, None], -1) - (rollouts != target[:, None]) > 0
    expected = np.asarray(objectives.expert_tokens(tok, jnp.asarray(rollouts), jnp.asarray(target)))
    np.testing.assert_array_equal(np.where(off, by_value, expected), expected)


# ---------------------------------------------------------------------------------------------
# Token-level baselines (NTL-MSE, NTL-WAS, DIST2) against NumPy references.

from genre_jax import methods  # noqa: E402
from genre_jax.sampling import mask_logits  # noqa: E402

TOKEN_TOKENIZERS = [NormalizedTokenizer(4, 3, 0.0, 1.0), IEEETokenizer(10, 1, 2)]


def _np_token_aux(method, logits, tokens, weights, tok, tau=1.0):
    """Per-example sum over digit positions of the auxiliary term, written out loop by loop."""
    base = tok.base
    positions = tok.digit_positions
    total = 0.0
    for b in range(logits.shape[0]):
        for pos in range(logits.shape[1]):
            if not positions[pos]:
                continue
            z = logits[b, pos, :base].astype(np.float64)
            p = np.exp(z - z.max())
            p /= p.sum()
            v = np.arange(base, dtype=np.float64)
            y = float(tokens[b, pos])
            if method == "ntl_mse":
                aux = (p @ v - y) ** 2
            elif method == "ntl_was":
                aux = p @ np.abs(v - y)
            else:
                q = np.exp(-(v - y) ** 2 / tau)
                q /= q.sum()
                aux = np.sum(q * (np.log(q) - np.log(p)))
            total += weights[b] * aux
    return total


def _token_batch(tok, seed):
    rng = np.random.default_rng(seed)
    values = rng.uniform(-0.9, 0.9, size=5) if tok.name == "ieee" else rng.uniform(0, 1, size=5)
    tokens, _ = tok.encode(values)
    logits = rng.normal(size=(5, tok.length, tok.vocab_size)).astype(np.float32) * 2
    logits = np.asarray(mask_logits(logits, tok.allowed))
    weights = np.array([1, 1, 0, 1, 0], np.float32)
    return logits, tokens, weights


@pytest.mark.parametrize("tok", TOKEN_TOKENIZERS, ids=lambda t: t.name)
@pytest.mark.parametrize("method", ["ntl_mse", "ntl_was", "dist2"])
def test_token_objectives_match_numpy_reference(tok, method):
    logits, tokens, weights = _token_batch(tok, 3)
    spec = methods.METHODS[method].spec
    weight = spec.default_weight
    tau = 0.7 if method == "dist2" else 1.0
    objective = objectives.make_token_objective(spec, tok, weight, tau)
    total, count = objective(logits, tokens, weights)
    ce_total, ce_count = _np_ce(logits.astype(np.float64), tokens, weights)
    aux = _np_token_aux(method, logits, tokens, weights, tok, tau)
    assert aux > 1e-3  # the auxiliary term is active in this check
    np.testing.assert_allclose(total, ce_total + weight * aux, rtol=1e-5)
    assert float(count) == ce_count == 3 * tok.length


@pytest.mark.parametrize("method", ["ntl_mse", "ntl_was", "dist2"])
def test_ieee_sign_positions_get_plain_ce(method):
    tok = TOKEN_TOKENIZERS[1]
    logits, tokens, weights = _token_batch(tok, 4)
    objective = objectives.make_token_objective(methods.METHODS[method].spec, tok, weight=2.0)
    # moving sign-position logits changes the loss exactly as much as it changes CE
    changed = np.array(logits)
    changed[:, :2, tok.plus_id] += 1.5
    totals = [float(f(l, tokens, weights)[0]) for f in (objective, objectives.token_cross_entropy)
              for l in (changed, logits)]
    delta, delta_ce = totals[0] - totals[1], totals[2] - totals[3]
    assert abs(delta_ce) > 1e-2
    # Each total adds n non-negative float32 terms, so it is within n eps of itself (NTL-MSE's are near
    # 200, whose last bit alone is 1.5e-5): the differences agree to n eps times the four totals, a
    # term's own rounding (a few eps of logits below 5) being well inside.
    n = int(weights.sum()) * tok.length
    np.testing.assert_allclose(delta, delta_ce, rtol=0, atol=n * EPS32 * sum(map(abs, totals)))
    # the auxiliary part has no gradient at sign positions, and some at digit positions
    aux = lambda l: objective(l, tokens, weights)[0] - objectives.token_cross_entropy(l, tokens, weights)[0]
    g = np.asarray(jax.grad(aux)(jnp.asarray(logits)))
    assert np.all(g[:, :2] == 0) and np.abs(g[:, 2:]).max() > 0


@pytest.mark.parametrize("tok", TOKEN_TOKENIZERS, ids=lambda t: t.name)
@pytest.mark.parametrize("method", ["ntl_mse", "ntl_was", "dist2"])
def test_token_objectives_padding_weight_zero_and_gradients(tok, method):
    logits, tokens, weights = _token_batch(tok, 5)
    spec = methods.METHODS[method].spec
    objective = objectives.make_token_objective(spec, tok, spec.default_weight)
    base, _ = objective(logits, tokens, weights)
    moved = np.array(logits)
    moved[weights == 0] += np.random.default_rng(0).normal(size=moved[weights == 0].shape).astype(np.float32) * 5
    moved = np.asarray(mask_logits(moved, tok.allowed))
    np.testing.assert_allclose(objective(moved, tokens, weights)[0], base, rtol=1e-6)
    # weight 0 is plain CE
    zero = objectives.make_token_objective(spec, tok, weight=0.0)
    np.testing.assert_allclose(zero(logits, tokens, weights)[0],
                               objectives.token_cross_entropy(logits, tokens, weights)[0], rtol=1e-6)
    grads = np.asarray(jax.jit(jax.grad(lambda l: objective(l, tokens, weights)[0]))(jnp.asarray(logits)))
    assert np.all(np.isfinite(grads))
    assert np.all(grads[weights == 0] == 0) and np.all(grads[..., ~tok.allowed.any(0)] == 0)


# ---------------------------------------------------------------------------------------------
# Rewards on the whole predictive distribution (CRPS), against NumPy in float64.

from genre_jax import exact  # noqa: E402


def _np_empirical_crps(x, y):
    """(1/n) Σ|x_i − y| − (1/(2n²)) Σ_{i,j}|x_i − x_j|, term by term."""
    n = len(x)
    return np.abs(x - y).sum() / n - np.abs(x[:, None] - x[None, :]).sum() / (2 * n * n)


def test_crps_loo_reward_is_the_groups_crps_without_the_rollout_minus_with_it():
    rng = np.random.default_rng(3)
    pred = rng.normal(size=(4, 6)).astype(np.float32)
    pred[2] = 0.7  # a collapsed group: every rollout alike
    target = rng.normal(size=4).astype(np.float32)
    reward = np.asarray(objectives.crps_loo_reward(jnp.asarray(pred), jnp.asarray(target)))
    x, y = pred.astype(np.float64), target.astype(np.float64)
    expected = np.array([[_np_empirical_crps(np.delete(x[b], i), y[b]) - _np_empirical_crps(x[b], y[b])
                          for i in range(x.shape[1])] for b in range(len(x))])
    # Each CRPS sums G² float32 terms of size <= scale and divides by ~2G²: its rounding error is
    # within a few eps * scale; the credit is the difference of two of them.
    scale = np.abs(x - y[:, None]).max() + np.abs(x[:, :, None] - x[:, None, :]).max()
    np.testing.assert_allclose(reward, expected, rtol=0, atol=8 * EPS32 * scale)
    advantage = np.asarray(objectives.group_mean_advantage(jnp.asarray(reward), None))
    np.testing.assert_allclose(advantage, expected - expected.mean(1, keepdims=True), rtol=0, atol=16 * EPS32 * scale)
    # the docstring's form: up to a group constant, −|x_i − y|/(G − 1) + Σ_j |x_i − x_j| / (G − 1)²
    g = x.shape[1]
    form = -np.abs(x - y[:, None]) / (g - 1) + np.abs(x[:, :, None] - x[:, None, :]).sum(-1) / (g - 1) ** 2
    np.testing.assert_allclose(advantage, form - form.mean(1, keepdims=True), rtol=0, atol=16 * EPS32 * scale)
    # not silently zero where rollouts differ; exactly zero where the group has collapsed
    live = np.arange(4) != 2
    assert np.all(np.abs(advantage[live]).max(1) > 1e3 * EPS32 * scale)
    np.testing.assert_array_equal(advantage[2], 0.0)
    # the rollout nearest the target gets the largest credit when the others sit symmetric around it
    sym = jnp.asarray([[-1.0, 0.1, 1.0]])
    assert int(np.argmax(objectives.crps_loo_reward(sym, jnp.asarray([0.0]))[0])) == 1


def _np_pairwise_crps(p, v, y):
    """The O(S²) form: E|X − y| − ½ E|X − X'|."""
    return np.sum(p * np.abs(v - y)) - 0.5 * np.sum(p[:, None] * p[None, :] * np.abs(v[:, None] - v[None, :]))


def _np_crps_logit_grad(p, v, y):
    """d CRPS / d logits for p = softmax(logits): the pairwise form's d/dp_k = |v_k − y| − Σ_j p_j |v_k − v_j|,
    through the softmax's Jacobian diag(p) − p pᵀ."""
    g_p = np.abs(v - y) - np.abs(v[:, None] - v[None, :]) @ p
    return p * (g_p - p @ g_p)


def test_support_of_a_normalized_tokenizer_is_in_order_when_enumerated():
    for base, digits in ((2, 3), (4, 3), (10, 2)):
        tok = NormalizedTokenizer(base, digits, -1.5, 2.0)
        values = np.asarray(tok.decode(exact.all_sequences(tok)))
        assert np.all(np.diff(values) > 0)


@pytest.mark.parametrize("support", ["normalized", "unsorted_with_ties"])
def test_exact_crps_from_the_cdf_equals_the_pairwise_form_and_its_gradient(support):
    rng = np.random.default_rng(5)
    if support == "normalized":  # base 2 x 3 digits: 8 sequences, the smallest tree
        tok = NormalizedTokenizer(2, 3, -1.0, 2.0)
        values = np.asarray(tok.decode(exact.all_sequences(tok)), np.float32)
    else:  # IEEE-like: the enumeration order is not the value order
        values = rng.normal(size=9).astype(np.float32)
        values[4] = values[1]
    s = len(values)
    logits = (rng.normal(size=(6, s)) * 2).astype(np.float32)
    # targets below, inside and above the support, and on a support point
    target = np.array([values.min() - 0.5, 0.1, values.max() + 0.3, values[3], -0.2, 0.4], np.float32)
    weights = np.array([1, 1, 1, 1, 1, 0], np.float32)  # the last row is padding

    def loss(l):
        crps_B = objectives.exact_crps_loss(jax.nn.softmax(l, -1), jnp.asarray(values), jnp.asarray(target), None)
        return jnp.sum(jnp.asarray(weights) * crps_B) / weights.sum(), crps_B

    (_, crps), grad = jax.value_and_grad(loss, has_aux=True)(jnp.asarray(logits))
    lg = logits.astype(np.float64)
    p = np.exp(lg - lg.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    v, y = values.astype(np.float64), target.astype(np.float64)
    expected = np.array([_np_pairwise_crps(p[b], v, y[b]) for b in range(len(y))])
    # S cumulative sums and S products of magnitude <= scale in float32
    scale = np.abs(v[:, None] - v[None, :]).max() + np.abs(v[None, :] - y[:, None]).max()
    np.testing.assert_allclose(crps, expected, rtol=0, atol=4 * s * EPS32 * scale)
    expected_grad = np.array([_np_crps_logit_grad(p[b], v, y[b]) * weights[b] / weights.sum() for b in range(len(y))])
    np.testing.assert_allclose(grad, expected_grad, rtol=0, atol=4 * s * EPS32 * np.abs(expected_grad).max())
    assert np.all(np.asarray(grad)[weights == 0] == 0) and np.abs(np.asarray(grad)).max() > 0
    # a point mass has CRPS |v − y|; the metric on the same distribution agrees
    point = np.zeros((1, s), np.float32)
    point[0, 2] = 1.0
    np.testing.assert_allclose(objectives.distribution_crps(jnp.asarray(point), jnp.asarray(values), jnp.asarray([0.3])),
                               [abs(values[2] - 0.3)], rtol=0, atol=4 * EPS32 * scale)
    if support == "normalized":
        from genre_jax import metrics
        np.testing.assert_allclose(np.mean(expected[:5]), scores.Discrete(v, p[:5]).crps(y[:5]), rtol=1e-12, atol=1e-12)


def test_exact_reward_loss_is_the_negated_expected_reward():
    probs = jax.nn.softmax(jnp.asarray(RNG.normal(size=(3, 5)), jnp.float32), -1)
    values, target = jnp.asarray(RNG.normal(size=5), jnp.float32), jnp.asarray(RNG.normal(size=3), jnp.float32)
    expected = -np.sum(np.asarray(probs) * -(np.asarray(values)[None] - np.asarray(target)[:, None]) ** 2, -1)
    np.testing.assert_allclose(objectives.exact_reward_loss(probs, values, target, objectives.neg_mse), expected,
                               rtol=4 * 5 * EPS32)
