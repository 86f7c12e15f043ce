"""RL step wiring, device-count invariance and resume."""
import json
import os
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import launch
from experiments.configs import tabular
from genre_jax import checkpoint, loop, methods, objectives, parallel, rl, sampling, settings
from genre_jax.errors import GenreError
from genre_jax.models import TabularRegressor, init_params
from genre_jax.tokenizers import NormalizedTokenizer

from fakes import rollout_logits, sample
from tolerance import EPS32, assert_trees_close

TOK = NormalizedTokenizer(4, 4, -2.0, 2.0)
MODEL = TabularRegressor(TOK.vocab_size, TOK.length, d_model=16, num_layers=1, num_heads=2, d_ff=32,
                         mlp_hidden=16, dropout=0.0)


def _batch(n=16, pad=3):
    rng = np.random.default_rng(0)
    z = rng.normal(size=n).astype(np.float32)
    return {"x": rng.normal(size=(n, 3)).astype(np.float32), "tokens": TOK.encode(z)[0], "z": z,
            "weight": np.r_[np.ones(n - pad), np.zeros(pad)].astype(np.float32)}


def _rl_settings(method, **kw):
    config = tabular.get_config("tiny")
    config.rl.method = method
    config.rl.update(kw)
    return settings.resolve(config, TOK).rl


def _state(params, tx, mesh):
    fresh = jax.tree.map(jnp.copy, params)  # the step donates its input state
    return parallel.replicate(loop.TrainState(jnp.zeros((), jnp.int32), fresh, tx.init(fresh)), mesh)


@pytest.mark.parametrize("method, temperature, requantize, masked_expert", [
    ("remax", 1.0, False, True), ("remax", 0.5, False, True), ("genre2", 1.0, False, True),
    ("genre2", 1.0, True, False)])  # the last: the release's re-quantized target and raw-logit expert CE
def test_step_loss_matches_an_independent_reconstruction(method, temperature, requantize, masked_expert):
    params = init_params(MODEL, 3, TOK.length, jax.random.key(0))
    batch, mesh = _batch(), parallel.data_mesh()
    tx = optax.sgd(0.0)
    rl_settings = _rl_settings(method, num_rollouts=6, temperature=temperature, requantize_targets=requantize,
                               masked_expert=masked_expert)
    step, _ = rl.make_rl_steps(MODEL, TOK, rl_settings, tx, mesh)
    base_key = jax.random.key(7)
    _, stats = step(_state(params, tx, mesh), params, parallel.shard_batch(batch, mesh), base_key)
    stats = np.asarray(stats)
    # The step's first rollout key is fold_in(base_key, step=0); redo everything outside the step.
    tokens, _, greedy = sample(MODEL, params, batch["x"], jax.random.fold_in(base_key, 0), TOK, 6, temperature,
                               greedy=True)
    # the training target: y, or as released the tokenizer's own rendering of it, detok(tok(y))
    target = np.asarray(TOK.decode(jnp.asarray(batch["tokens"]))) if requantize else batch["z"]
    assert not requantize or np.abs(target - batch["z"]).max() > 1e-2  # the check bites
    reward = -(np.asarray(TOK.decode(tokens)) - target[:, None]) ** 2
    greedy_reward = -(np.asarray(TOK.decode(greedy)) - target) ** 2
    adv = reward - greedy_reward[:, None]
    # log-probs under the distribution the rollouts came from: softmax(masked logits / T), in NumPy
    logits = np.asarray(rollout_logits(MODEL, params, batch["x"], tokens, TOK), np.float64)
    logp = np.take_along_axis(_log_softmax(logits / temperature), np.asarray(tokens)[..., None], -1)[..., 0].sum(-1)
    w = batch["weight"] > 0
    count = stats[-1]
    assert count == w.sum()
    np.testing.assert_allclose(stats[0] / count, reward[w].mean(), rtol=1e-4)
    np.testing.assert_allclose(stats[1] / count, greedy_reward[w].mean(), rtol=1e-4)
    np.testing.assert_allclose(stats[2] / count, np.abs(adv[w]).mean(), rtol=1e-4)
    # GenRe²: + lambda * CE of the model (untempered) toward the expert token at every position, over
    # the masked logits or, as released, the raw ones (the softmax then includes the BOS/pad token)
    raw = np.asarray(rollout_logits(MODEL, params, batch["x"], tokens, TOK, masked=False), np.float64)
    assert np.abs(raw - logits).max() > 1e6  # the mask really differs from raw logits
    expert = np.asarray(objectives.expert_tokens(TOK, tokens, jnp.asarray(batch["tokens"])))
    expert_ce = -np.take_along_axis(_log_softmax(logits if masked_expert else raw), expert[..., None], -1)[..., 0]
    expert_ce = expert_ce.mean(-1)
    assert rl_settings.expert_weight == (0.05 if method == "genre2" else 0.0)
    loss = -(adv * logp)[w].mean() + rl_settings.expert_weight * expert_ce[w].mean()
    np.testing.assert_allclose(stats[3] / count, loss, rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(stats[4] / count, expert_ce[w].mean(), rtol=1e-4)
    assert not np.isclose(stats[3] / count, -(reward * logp)[w].mean())  # baseline really subtracted


def _log_softmax(logits):
    shifted = logits - logits.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


@pytest.mark.parametrize("method", ["genre2", "grpo"])
def test_rl_step_on_8_devices_equals_1_device(method):
    params = init_params(MODEL, 3, TOK.length, jax.random.key(1))
    batch = _batch()
    rl_settings = _rl_settings(method, num_rollouts=4, ppo_epochs=2 if method == "grpo" else 1, kl_weight=0.1)
    tx = optax.sgd(0.05)  # see test_parallel: Adam would amplify float noise in zero gradients
    out = []
    for mesh in (parallel.data_mesh(jax.devices()[:1]), parallel.data_mesh()):
        step, _ = rl.make_rl_steps(MODEL, TOK, rl_settings, tx, mesh)
        state = _state(params, tx, mesh)
        for _ in range(2):
            state, stats = step(state, parallel.replicate(params, mesh), parallel.shard_batch(batch, mesh),
                                jax.random.key(3))
        out.append((jax.device_get(state.params), np.asarray(stats)))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), out[0][0], out[1][0])
    np.testing.assert_allclose(out[0][1], out[1][1], rtol=1e-4, atol=1e-6)


def _kill_after_rl_epoch_1_then_resume(config, workdir: str, monkeypatch) -> None:
    """Runs ``config`` into ``workdir``, killed once GenRe²'s ``last`` of epoch 1 is written, then again
    to the end: a resumed run."""
    original_save = checkpoint.PhaseCheckpoints.save

    def save_then_die(self, which, step, tree, meta):
        original_save(self, which, step, tree, meta)
        if self.root.endswith("genre2") and which == "last" and step == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint.PhaseCheckpoints, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        launch.run(config, workdir)
    monkeypatch.setattr(checkpoint.PhaseCheckpoints, "save", original_save)
    launch.run(config, workdir)


def test_interrupted_rl_resumes_to_the_same_parameters(tmp_path, toy_data_dir, monkeypatch):
    config = tabular.get_config("tiny")
    config.update(dict(data_dir=str(toy_data_dir), dataset="toy", phases="ce,rl"))
    config.ce.max_epochs = 1
    config.rl.max_epochs = 3
    config.rl.selection = "aggregate_rmse"  # (the default, reward, is what tiny_run trains)
    launch.run(config, str(tmp_path / "straight"))

    _kill_after_rl_epoch_1_then_resume(config, str(tmp_path / "resumed"), monkeypatch)

    ckpt_a = checkpoint.PhaseCheckpoints(str(tmp_path / "straight"), methods.METHODS["genre2"].folder)
    ckpt_b = checkpoint.PhaseCheckpoints(str(tmp_path / "resumed"), methods.METHODS["genre2"].folder)
    meta_a, meta_b = ckpt_a.meta("last"), ckpt_b.meta("last")
    assert meta_a["epoch"] == meta_b["epoch"] == 3
    a = ckpt_a.restore("best", _like_params())[0]
    b = ckpt_b.restore("best", _like_params())[0]
    jax.tree.map(np.testing.assert_array_equal, a, b)  # a run against itself on one machine: bit for bit
    assert meta_a["best_val"] == meta_b["best_val"]
    log = [json.loads(l) for l in open(tmp_path / "resumed" / "rl" / "genre2" / "log.jsonl")]
    assert [r["epoch"] for r in log] == [0, 1, 2]
    # aggregate_rmse selection keeps the lowest validation RMSE, the CE start included
    assert meta_a["best_val"] == min([meta_a["start_val"]] + [r["val_rmse"] for r in log])
    assert all(r["best_val_rmse"] == min([meta_a["start_val"]] + [q["val_rmse"] for q in log[:i + 1]])
               for i, r in enumerate(log))
    # a different RL setting in the same workdir is refused rather than silently mixed
    config.rl.kl_weight = 0.5
    with pytest.raises(GenreError, match="other settings"):
        launch.run(config, str(tmp_path / "resumed"))


def _like_params():
    cfg = tabular.get_config("tiny").model
    from genre_jax import models
    tok = NormalizedTokenizer(2, 8, 0.0, 1.0)
    return models.init_params(models.make_model(cfg, tok), 5, tok.length, jax.random.key(0))


def test_aggregate_rmse_selection_scores_the_exact_mean_of_the_evaluated_distribution():
    from genre_jax import exact

    params = init_params(MODEL, 3, TOK.length, jax.random.key(0))
    batch, mesh = _batch(), parallel.data_mesh()
    config = tabular.get_config("tiny")
    config.rl.selection = "aggregate_rmse"
    config.eval.update(decode="exact", temperature=0.7)
    rl_settings = settings.resolve(config, TOK).rl
    assert (rl_settings.selection_decode, rl_settings.selection_temperature) == ("exact", 0.7)
    val_step = rl.make_rl_steps(MODEL, TOK, rl_settings, optax.sgd(0.1), mesh)[1]
    real = batch["weight"] > 0
    arrays = {k: v[real] for k, v in batch.items() if k != "weight"}
    val = rl.validation_reward(val_step, params, arrays, 8, mesh, jax.random.key(1), "aggregate_rmse")
    assert list(val) == ["val_rmse", "val_reward", "val_greedy_reward"]  # the first entry selects

    # independently: every sequence teacher-forced at T = 0.7, its probability times its value
    seqs_SL = jnp.asarray(exact.all_sequences(TOK))
    tokens_BSL = jnp.broadcast_to(seqs_SL, (real.sum(),) + seqs_SL.shape)
    logits = rollout_logits(MODEL, params, jnp.asarray(arrays["x"]), tokens_BSL, TOK)
    logp_BS = sampling.token_logprobs(logits / 0.7, tokens_BSL).sum(-1)
    mean_B = np.exp(np.asarray(logp_BS)) @ np.asarray(TOK.decode(seqs_SL))
    np.testing.assert_allclose(val["val_rmse"], np.sqrt(np.mean((mean_B - arrays["z"]) ** 2)), rtol=1e-4)

    config.rl.selection = "median"
    with pytest.raises(GenreError, match=r"config.rl.selection: expected one of \['reward', 'aggregate_rmse'\]"):
        settings.resolve(config, TOK)


def test_exact_reward_step_and_gradient_equal_a_teacher_forced_enumeration():
    from genre_jax import exact

    params = init_params(MODEL, 3, TOK.length, jax.random.key(0))
    batch, mesh = _batch(), parallel.data_mesh()
    rl_settings = _rl_settings("exact_reward")
    seqs_SL = jnp.asarray(exact.all_sequences(TOK))
    values_S = TOK.decode(seqs_SL)
    w = jnp.asarray(batch["weight"])

    def reference_loss(p):  # every sequence teacher-forced: an independent path to sum_s pi(s) r(s)
        tokens_BSL = jnp.broadcast_to(seqs_SL, (len(w),) + seqs_SL.shape)
        logp_BS = sampling.sequence_logprobs(MODEL, p, jnp.asarray(batch["x"]), tokens_BSL, TOK).sum(-1)
        reward_BS = -(values_S[None, :] - jnp.asarray(batch["z"])[:, None]) ** 2
        return -jnp.sum(w * jnp.sum(jnp.exp(logp_BS) * reward_BS, -1)) / w.sum()

    def share(p, x_F, z, w_b, seq_L, value):  # one sequence's term of reference_loss, teacher-forced alone
        logp = sampling.sequence_logprobs(MODEL, p, x_F[None], seq_L[None, None], TOK).sum()
        return w_b * jnp.exp(logp) * (value - z) ** 2 / w.sum()

    # One SGD step whose optimizer first keeps the gradient it is given: the step's gradient itself is
    # compared, and its stats are taken before the update.
    keep_gradient = optax.GradientTransformation(lambda p: jax.tree.map(jnp.zeros_like, p), lambda g, s, p=None: (g, g))
    tx = optax.chain(keep_gradient, optax.sgd(0.1))
    step, _ = rl.make_rl_steps(MODEL, TOK, rl_settings, tx, mesh)
    new_state, stats = step(_state(params, tx, mesh), params, parallel.shard_batch(batch, mesh), jax.random.key(0))
    stats, grad = np.asarray(stats), jax.device_get(new_state.opt_state[0])
    ref_loss, ref_grad = jax.jit(jax.value_and_grad(reference_loss))(params)
    np.testing.assert_allclose(stats[3] / stats[-1], ref_loss, rtol=1e-4)
    np.testing.assert_allclose(stats[0] / stats[-1], -ref_loss, rtol=1e-4)  # exact expected reward
    # The gradient is a sum of shares, one per real row and sequence, that cancel; both paths add them up
    # in float32 from n = rows x sequences x positions terms (the teacher-forced one e.g. into the BOS
    # embedding one sequence at a time), so each is off by about sqrt(n) EPS32 T (at most n EPS32 T), T the
    # largest sum of the shares' absolute values. 4 sqrt(n) EPS32 T is 4e-4 here, against gradient entries
    # up to 2.9 that a fault in the maths moves by O(1). The shares (one (row, sequence) pair per entry of
    # one vmap axis: the same grad under two nested vmaps, jitted, came out wrong at this size on XLA:CPU,
    # jax 0.10.2) add up to the reference too.
    rows = np.repeat(np.flatnonzero(batch["weight"]), len(seqs_SL))
    cols = np.tile(np.arange(len(seqs_SL)), int(w.sum()))
    shares = jax.jit(jax.vmap(jax.grad(share), (None, 0, 0, 0, 0, 0)))(
        params, jnp.asarray(batch["x"])[rows], jnp.asarray(batch["z"])[rows], w[rows], seqs_SL[cols], values_S[cols])
    scale = max(float(np.abs(np.asarray(s)).sum(0).max()) for s in jax.tree.leaves(shares))
    tolerance = 4 * np.sqrt(len(rows) * TOK.length) * EPS32 * scale
    assert_trees_close(grad, ref_grad, tolerance)
    assert_trees_close(jax.tree.map(lambda s: np.asarray(s).sum(0, dtype=np.float64), shares), ref_grad, tolerance)
    # and the step applies the update, p - 0.1 g: two float32 roundings (one if fused), so within one eps
    moved = jax.tree.map(lambda p, g, new: np.all(np.abs(new - (p - 0.1 * g)) <= EPS32 * (np.abs(p) + 0.1 * np.abs(g))),
                         jax.device_get(params), grad, jax.device_get(new_state.params))
    assert all(jax.tree.leaves(moved))
    config = tabular.get_config("tiny")
    config.rl.method = "exact_reward"
    with pytest.raises(GenreError, match="exact_reward enumerates every sequence"):
        settings.resolve(config, NormalizedTokenizer(10, 6))


def test_crps_loo_step_credits_each_rollout_with_its_leave_one_out_crps_share():
    params = init_params(MODEL, 3, TOK.length, jax.random.key(0))
    batch, mesh = _batch(), parallel.data_mesh()
    tx = optax.sgd(0.0)
    rl_settings = _rl_settings("crps_loo", num_rollouts=6, expert=True)  # with the GenRe² expert term
    assert rl_settings.expert_weight == 0.05 and _rl_settings("crps_loo").expert_weight == 0.0
    step, _ = rl.make_rl_steps(MODEL, TOK, rl_settings, tx, mesh)
    base_key = jax.random.key(7)
    _, stats = step(_state(params, tx, mesh), params, parallel.shard_batch(batch, mesh), base_key)
    stats = np.asarray(stats)
    tokens, _, _ = sample(MODEL, params, batch["x"], jax.random.fold_in(base_key, 0), TOK, 6, 1.0, greedy=True)
    x, y = np.asarray(TOK.decode(tokens), np.float64), batch["z"].astype(np.float64)

    def crps(s, t):  # the group as an empirical distribution
        return np.abs(s - t).mean() - np.abs(s[:, None] - s[None, :]).mean() / 2

    credit = np.array([[crps(np.delete(x[b], i), y[b]) - crps(x[b], y[b]) for i in range(6)] for b in range(len(y))])
    adv = credit - credit.mean(1, keepdims=True)  # the group-mean baseline
    logits = np.asarray(rollout_logits(MODEL, params, batch["x"], tokens, TOK), np.float64)
    logp = np.take_along_axis(_log_softmax(logits), np.asarray(tokens)[..., None], -1)[..., 0].sum(-1)
    expert = np.asarray(objectives.expert_tokens(TOK, tokens, jnp.asarray(batch["tokens"])))
    expert_logits = logits if rl_settings.masked_expert else np.asarray(
        rollout_logits(MODEL, params, batch["x"], tokens, TOK, masked=False), np.float64)
    expert_ce = -np.take_along_axis(_log_softmax(expert_logits), expert[..., None], -1)[..., 0].mean(-1)
    w = batch["weight"] > 0
    count = stats[-1]
    np.testing.assert_allclose(stats[0] / count, (-(x - y[:, None]) ** 2)[w].mean(), rtol=1e-4)  # logs: rl.reward
    np.testing.assert_allclose(stats[2] / count, np.abs(adv[w]).mean(), rtol=1e-4)
    assert stats[2] / count > 1e-3  # a silently zero advantage would train nothing
    loss = -(adv * logp)[w].mean() + 0.05 * expert_ce[w].mean()
    np.testing.assert_allclose(stats[3] / count, loss, rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(stats[4] / count, expert_ce[w].mean(), rtol=1e-4)


@pytest.mark.parametrize("expert, kl_weight, entropy_weight", [(False, 0.0, 0.0), (True, 0.0, 0.0), (False, 1.0, 0.1)])
def test_exact_crps_step_and_gradient_equal_a_teacher_forced_pairwise_crps(expert, kl_weight, entropy_weight):
    from genre_jax import exact

    params = init_params(MODEL, 3, TOK.length, jax.random.key(0))
    # the KL's reference: a policy a quarter of the way to another initialization (near enough that the
    # log-ratios, which scale the KL gradient's rounding, stay of order 1)
    ref_params = jax.tree.map(lambda a, b: a + 0.25 * (b - a), params,
                              init_params(MODEL, 3, TOK.length, jax.random.key(1)))
    batch, mesh = _batch(), parallel.data_mesh()
    rl_settings = _rl_settings("exact_crps", expert=expert, kl_weight=kl_weight, entropy_weight=entropy_weight,
                               temperature=0.8)
    seqs_SL = jnp.asarray(exact.all_sequences(TOK))
    values_S = TOK.decode(seqs_SL)
    w, z = jnp.asarray(batch["weight"]), jnp.asarray(batch["z"])
    tokens_BSL = jnp.broadcast_to(seqs_SL, (len(w),) + seqs_SL.shape)
    expert_BSL = objectives.expert_tokens(TOK, tokens_BSL, jnp.asarray(batch["tokens"]))

    def reference_loss(p):
        # every sequence teacher-forced, and the O(S²) form E|X − y| − ½ E|X − X'|: independent of the
        # tree and of the sorted-CDF form the step uses; the policy is tempered, the expert CE is not
        def seq_logp(q):
            logits = rollout_logits(MODEL, q, jnp.asarray(batch["x"]), tokens_BSL, TOK) / rl_settings.temperature
            return sampling.token_logprobs(logits, tokens_BSL).sum(-1)

        logp_BS = seq_logp(p)
        probs_BS = jnp.exp(logp_BS)
        dist_SS = jnp.abs(values_S[:, None] - values_S[None, :])
        crps_B = (jnp.sum(probs_BS * jnp.abs(values_S[None, :] - z[:, None]), -1)
                  - 0.5 * jnp.einsum("bs,st,bt->b", probs_BS, dist_SS, probs_BS))
        logits = rollout_logits(MODEL, p, jnp.asarray(batch["x"]), tokens_BSL, TOK, masked=rl_settings.masked_expert)
        expert_B = jnp.sum(jax.lax.stop_gradient(probs_BS)
                           * -sampling.token_logprobs(logits, expert_BSL).mean(-1), -1)
        # the sequence-level KL to the reference and entropy, per position
        log_ratio_BS = logp_BS - seq_logp(ref_params)
        kl_B = jnp.sum(probs_BS * log_ratio_BS, -1) / TOK.length
        entropy_B = -jnp.sum(probs_BS * logp_BS, -1) / TOK.length
        mean = lambda v: jnp.sum(w * v) / w.sum()  # noqa: E731
        loss = (mean(crps_B) + rl_settings.expert_weight * mean(expert_B) + kl_weight * mean(kl_B)
                - entropy_weight * mean(entropy_B))
        log_ratio = jnp.max(jnp.abs(log_ratio_BS) * (w[:, None] > 0))
        return loss, (mean(expert_B), mean(kl_B), mean(entropy_B), log_ratio)

    # the phase's train arrays: with a KL term, the reference's log-probs decoded once per row
    ctx = SimpleNamespace(arrays={"train": {k: batch[k] for k in rl.FIELDS}}, mesh=mesh, model=MODEL, tokenizer=TOK)
    train, fields = rl.train_arrays(ctx, rl_settings, parallel.replicate(ref_params, mesh))
    assert fields == rl.FIELDS + ((rl.REFERENCE,) if kl_weight else ())
    tx = optax.sgd(1.0)  # new params = params - gradient
    step, _ = rl.make_rl_steps(MODEL, TOK, rl_settings, tx, mesh)
    new_state, stats = step(_state(params, tx, mesh), ref_params,
                            parallel.shard_batch({**{k: train[k] for k in fields}, "weight": batch["weight"]}, mesh),
                            jax.random.key(0))
    stats = np.asarray(stats)
    (ref_loss, (expert_ce, kl, entropy, log_ratio)), ref_grad = jax.jit(
        jax.value_and_grad(reference_loss, has_aux=True))(params)
    # S sequences x L positions of float32 terms along two different paths
    terms = seqs_SL.shape[0] * TOK.length
    np.testing.assert_allclose(stats[3] / stats[-1], ref_loss, rtol=terms * EPS32)
    np.testing.assert_allclose(stats[4:7] / stats[-1], [expert_ce if expert else 0.0, kl if kl_weight else 0.0, entropy],
                               rtol=terms * EPS32)
    assert (rl_settings.expert_weight > 0) == expert and (kl > 0.01 or not kl_weight)  # the KL term bites
    # the KL gradient's terms are pi's gradients times log pi/pi_ref: their rounding grows with that ratio
    _assert_sgd1_step_took_the_gradient(params, new_state.params, ref_grad, terms * (1 + kl_weight * float(log_ratio)))
    config = tabular.get_config("tiny")
    config.rl.method = "exact_crps"
    with pytest.raises(GenreError, match=r"^config.rl.method: exact_crps enumerates every sequence, and this "
                                         r"tokenizer allows 1000000 \(at most 4096\)"):
        settings.resolve(config, NormalizedTokenizer(10, 6))


def _assert_sgd1_step_took_the_gradient(params, new_params, ref_grad, terms: int) -> None:
    """A step under optax.sgd(1.0) moved ``params`` by ``ref_grad``: both paths sum ``terms`` float32
    terms of the gradient's scale, plus the rounding of params - gradient, read back by a subtraction."""
    grad = jax.tree.map(lambda a, b: np.asarray(a, np.float64) - b, params, jax.device_get(new_params))
    scale = max(float(np.abs(g).max()) for g in jax.tree.leaves(ref_grad))
    size = max(float(np.abs(a).max()) for a in jax.tree.leaves(params))
    assert scale > 0
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=terms * EPS32 * scale + 2 * EPS32 * size),
                 grad, ref_grad)


def test_ce_continued_takes_pretrainings_ce_step_under_the_rl_phase():
    """``ce_continued``: no rollouts, no advantage; the teacher-forced CE of the target tokens (dropout
    off, masked as rl.masked_expert says), one optimizer step per batch like every RL method."""
    params = init_params(MODEL, 3, TOK.length, jax.random.key(0))
    batch, mesh = _batch(), parallel.data_mesh()
    rl_settings = _rl_settings("ce_continued")
    assert methods.METHODS["ce_continued"].kind == "rl" and rl_settings.expert_weight == 0.0
    real = batch["weight"] > 0
    tokens = jnp.asarray(batch["tokens"])

    def reference_loss(p):  # -log pi(target token | target prefix), mean over real rows and positions
        logits = rollout_logits(MODEL, p, jnp.asarray(batch["x"]), tokens[:, None], TOK)[:, 0]
        logp = jax.nn.log_softmax(logits, -1)
        nll_BL = -jnp.take_along_axis(logp, tokens[..., None], -1)[..., 0]
        return jnp.sum(jnp.where(real[:, None], nll_BL, 0.0)) / (real.sum() * TOK.length)

    tx = optax.sgd(1.0)  # new params = params - gradient
    step, _ = rl.make_rl_steps(MODEL, TOK, rl_settings, tx, mesh)
    new_state, stats = step(_state(params, tx, mesh), params, parallel.shard_batch(batch, mesh), jax.random.key(0))
    stats = np.asarray(stats)
    ref_loss, ref_grad = jax.jit(jax.value_and_grad(reference_loss))(params)
    terms = int(real.sum()) * TOK.length * TOK.vocab_size
    assert stats[-1] == real.sum() and np.all(stats[[0, 1, 2, 4, 5, 6]] == 0)  # no rollouts, no extra terms
    np.testing.assert_allclose(stats[3] / stats[-1], ref_loss, rtol=terms * EPS32)
    _assert_sgd1_step_took_the_gradient(params, new_state.params, ref_grad, terms)


def test_both_selection_rules_are_read_from_one_validation_pass():
    params = init_params(MODEL, 3, TOK.length, jax.random.key(0))
    batch, mesh = _batch(), parallel.data_mesh()
    real = batch["weight"] > 0
    arrays = {k: v[real] for k, v in batch.items() if k != "weight"}
    both = _rl_settings("genre2", both_selections=True)
    assert (both.selection, both.other_selection) == ("reward", "aggregate_rmse")
    assert _rl_settings("genre2", both_selections=True, selection="aggregate_rmse").other_selection == "reward"
    assert _rl_settings("genre2").other_selection is None
    config = tabular.get_config("tiny")
    config.rl.update(method="genre2", both_selections=True)
    config.eval.decode = "exact"  # the exact mean: the rollouts walk the enumerated tree
    both_exact = settings.resolve(config, TOK).rl
    assert both_exact.selection_decode == "exact"
    values = {}
    for name, settings_ in (("both", both), ("both_exact", both_exact), ("alone", _rl_settings("genre2"))):
        val_step = rl.make_rl_steps(MODEL, TOK, settings_, optax.sgd(0.1), mesh)[1]
        values[name] = rl.validation_reward(val_step, params, arrays, 8, mesh, jax.random.key(1), settings_.selection,
                                            settings_.other_selection)
    assert list(values["both"]) == ["val_reward", "val_greedy_reward", "val_rmse"]  # the first entry selects
    assert list(values["alone"]) == ["val_reward", "val_greedy_reward"]
    # the RMSE's samples come from a key of their own: the rewards are those of reward selection alone;
    # drawn from the enumerated tree, the same tokens with the same keys, so the same rewards too
    for k, v in values["alone"].items():
        np.testing.assert_allclose(values["both"][k], v, rtol=8 * EPS32)
        np.testing.assert_allclose(values["both_exact"][k], v, rtol=8 * EPS32)
    assert values["both_exact"]["val_rmse"] != values["both"]["val_rmse"]  # the exact mean, not 4 samples'


def test_one_run_keeps_both_rules_and_a_killed_run_resumes_to_the_same_results(tmp_path, toy_data_dir, monkeypatch):
    """rl.both_selections: the reward rule's checkpoint is the method's entry, the aggregate_rmse rule's a
    second entry, each with its own selection record; without keep_start the CE start never competes."""
    config = tabular.get_config("tiny")
    config.update(dict(data_dir=str(toy_data_dir), dataset="toy", phases="ce,rl,eval"))
    config.ce.max_epochs = 1
    config.rl.update(max_epochs=3, keep_start=False, both_selections=True)
    config.eval.update(splits="val", calibration="conformal")
    straight = launch.run(config, str(tmp_path / "straight"))["phases"]
    assert set(straight) == {"ce", "genre2", "genre2@aggregate_rmse"}
    log = [json.loads(line) for line in open(tmp_path / "straight" / "rl" / "genre2" / "log.jsonl")]
    by_reward, by_rmse = straight["genre2"]["selection"], straight["genre2@aggregate_rmse"]["selection"]
    assert by_reward["best_epoch"] == int(np.argmax([r["val_reward"] for r in log]))
    assert by_rmse == {"best_epoch": int(np.argmin([r["val_rmse"] for r in log])), "start_val": None,
                       "best_val": min(r["val_rmse"] for r in log), "rule": "aggregate_rmse"}
    assert by_reward["start_val"] is None and "rule" not in by_reward
    assert straight["genre2@aggregate_rmse"]["method"] == "genre2@aggregate_rmse"
    same = by_reward["best_epoch"] == by_rmse["best_epoch"]
    assert (straight["genre2"]["stamp"]["params_digest"] == straight["genre2@aggregate_rmse"]["stamp"]["params_digest"]) == same
    if same:  # one epoch under both rules: the evaluation is copied
        assert straight["genre2"]["splits"] == straight["genre2@aggregate_rmse"]["splits"]
    assert os.path.isfile(tmp_path / "straight" / "eval" / "genre2@aggregate_rmse" / "predictions_val.npz")

    _kill_after_rl_epoch_1_then_resume(config, str(tmp_path / "resumed"), monkeypatch)
    assert (tmp_path / "resumed" / "results.json").read_bytes() == (tmp_path / "straight" / "results.json").read_bytes()
    # evaluation alone finds both checkpoints and, unchanged, recomputes nothing
    config.phases = "eval"
    assert launch.run(config, str(tmp_path / "resumed"))["phases"] == json.loads(json.dumps(straight))
