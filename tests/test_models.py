import jax
import numpy as np
import pytest

from genre_jax import sampling
from genre_jax.errors import GenreError
from genre_jax.models import BYTE_VOCAB, CodeRegressor, TabularRegressor, init_params, sinusoidal_table
from genre_jax.tokenizers import NormalizedTokenizer

TOK = NormalizedTokenizer(4, 5, -2.0, 2.0)


def _full_and_cached_logits(model, params, x, inputs):
    """(teacher-forced logits_BLV, the same from L cached steps), compiled as one program."""

    @jax.jit
    def run(params, x, inputs):
        full_BLV = model.apply({"params": params}, x, inputs)
        memory = model.apply({"params": params}, x, method=model.encode)
        cache = model.apply({"params": params}, memory, TOK.length, method=model.init_cache)
        steps = []
        for pos in range(TOK.length):
            step_BV, cache = model.apply({"params": params}, inputs[:, pos], pos, cache, method=model.step)
            steps.append(step_BV)
        return full_BLV, jax.numpy.stack(steps, axis=1)

    return run(params, x, inputs)


def test_cached_steps_reproduce_teacher_forced_logits():
    # the released decoder: sinusoidal positions, no final LayerNorm
    model = TabularRegressor(TOK.vocab_size, TOK.length, d_model=16, num_layers=2, num_heads=4, d_ff=32,
                             mlp_hidden=16, pos_embedding="sinusoidal", final_norm=False)
    params = init_params(model, 3, TOK.length, jax.random.key(0))
    assert "pos_table" not in params["decoder"] and "ln_final" not in params["decoder"]
    x = jax.random.normal(jax.random.key(1), (4, 3))
    tokens = jax.random.randint(jax.random.key(2), (4, TOK.length), 0, TOK.base)
    inputs = sampling.decoder_inputs(tokens, TOK.bos_id)
    full_BLV, steps_BLV = _full_and_cached_logits(model, params, x, inputs)
    np.testing.assert_allclose(steps_BLV, full_BLV, atol=1e-5)


def test_one_memory_slot_shortcut_equals_general_cross_attention():
    """Cross-attention over one slot takes a shortcut (no query); over two equal slots the general path
    runs and must give the same output (each slot gets weight 1/2), in training too, with dropout."""
    model = TabularRegressor(TOK.vocab_size, TOK.length, d_model=16, num_layers=2, num_heads=4, d_ff=32,
                             mlp_hidden=16, dropout=0.3)
    params = init_params(model, 3, TOK.length, jax.random.key(0))
    assert "cross_q" in params["decoder"]["blocks_0"] and "ln_cross" in params["decoder"]["blocks_0"]
    memory_B1D = model.apply({"params": params}, jax.random.normal(jax.random.key(1), (4, 3)), method=model.encode)
    memory_B2D = np.concatenate([memory_B1D, memory_B1D], axis=1)
    inputs = sampling.decoder_inputs(jax.random.randint(jax.random.key(2), (4, TOK.length), 0, TOK.base), TOK.bos_id)
    for train in (False, True):
        rngs = {"dropout": jax.random.key(3)} if train else None
        one, two = (model.apply({"params": params}, m, inputs, train, method=model.decode, rngs=rngs)
                    for m in (memory_B1D, memory_B2D))
        np.testing.assert_allclose(one, two, rtol=1e-5, atol=1e-5)
    step = [model.apply({"params": params}, inputs[:, 0], 0,
                        model.apply({"params": params}, m, TOK.length, method=model.init_cache), method=model.step)[0]
            for m in (memory_B1D, memory_B2D)]
    np.testing.assert_allclose(step[0], step[1], rtol=1e-5, atol=1e-5)


def test_sinusoidal_table_and_config_errors():
    table = sinusoidal_table(6, 5)
    assert table.shape == (6, 5) and np.allclose(table[0, 0::2], 0) and np.allclose(table[0, 1::2], 1)
    with pytest.raises(GenreError, match="not divisible"):
        init_params(TabularRegressor(TOK.vocab_size, TOK.length, d_model=10, num_heads=4), 3, TOK.length,
                    jax.random.key(0))
    with pytest.raises(GenreError, match="pos_embedding"):
        init_params(TabularRegressor(TOK.vocab_size, TOK.length, d_model=8, num_heads=2, pos_embedding="rope"), 3,
                    TOK.length, jax.random.key(0))


def test_code_model_ignores_padding_and_caches_like_teacher_forcing():
    model = CodeRegressor(TOK.vocab_size, TOK.length, d_model=16, num_layers=1, num_heads=2, d_ff=32, enc_layers=2,
                          memory_slots=3, patch_size=2, dropout=0.0)
    params = init_params(model, 12, TOK.length, jax.random.key(0))
    programs = jax.random.randint(jax.random.key(1), (3, 12), 1, BYTE_VOCAB)
    encode = jax.jit(lambda p, x: model.apply({"params": p}, x, method=model.encode))
    memory = encode(params, programs)
    assert memory.shape == (3, 3, 16)
    # Padding a program with more zero bytes leaves its memory unchanged; changing a byte does not.
    padded = np.concatenate([np.asarray(programs), np.zeros((3, 20), np.int32)], axis=1)
    np.testing.assert_allclose(encode(params, padded), memory, atol=1e-5)
    changed = np.asarray(programs).copy()
    changed[:, 0] = changed[:, 0] % 200 + 1
    assert not np.allclose(encode(params, changed), memory, atol=1e-3)
    tokens = jax.random.randint(jax.random.key(2), (3, TOK.length), 0, TOK.base)
    inputs = sampling.decoder_inputs(tokens, TOK.bos_id)
    full_BLV, steps_BLV = _full_and_cached_logits(model, params, programs, inputs)
    np.testing.assert_allclose(steps_BLV, full_BLV, atol=1e-5)


def test_bfloat16_compute_keeps_float32_params_and_close_logits():
    kwargs = dict(d_model=16, num_layers=2, num_heads=4, d_ff=32, mlp_hidden=16)
    f32 = TabularRegressor(TOK.vocab_size, TOK.length, **kwargs)
    bf16 = TabularRegressor(TOK.vocab_size, TOK.length, dtype="bfloat16", **kwargs)
    params = init_params(f32, 3, TOK.length, jax.random.key(0))
    assert all(p.dtype == np.float32 for p in jax.tree.leaves(init_params(bf16, 3, TOK.length, jax.random.key(0))))
    x = jax.random.normal(jax.random.key(1), (4, 3))
    inputs = sampling.decoder_inputs(jax.random.randint(jax.random.key(2), (4, TOK.length), 0, TOK.base), TOK.bos_id)
    ref, low = (m.apply({"params": params}, x, inputs) for m in (f32, bf16))
    assert low.dtype == np.float32  # logits come back in float32 for every softmax
    # bfloat16 keeps 8 significant bits (unit roundoff u = 2^-8). A logit passes through about n = 20
    # bfloat16 roundings per decoder block (weights, matmul outputs, LayerNorm, attention weights,
    # residual sums) and 10 more outside them; at random they add up to about sqrt(n) u of the
    # activations' scale, which LayerNorm carries to the logits' (the worst case, n u, is 0.2 of it).
    n = 20 * kwargs["num_layers"] + 10
    np.testing.assert_allclose(low, ref, rtol=0, atol=4 * np.sqrt(n) * 2.0 ** -8 * float(np.abs(ref).max()))
    assert not np.array_equal(low, ref)  # really computed in bfloat16
    with pytest.raises(GenreError, match="config.model.dtype"):
        init_params(TabularRegressor(TOK.vocab_size, TOK.length, dtype="float16", **kwargs), 3, TOK.length,
                    jax.random.key(0))
