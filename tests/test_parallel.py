import jax
import jax.numpy as jnp
import numpy as np
import optax

from genre_jax import loop, parallel, supervised
from genre_jax.models import TabularRegressor, init_params
from genre_jax.tokenizers import NormalizedTokenizer


def test_mesh_spans_all_devices_with_auto_axis():
    mesh = parallel.data_mesh()
    assert mesh.size == len(jax.devices()) == 8
    assert mesh.axis_names == (parallel.DATA_AXIS,)


def test_padded_batches_cover_every_row_once_with_fixed_shape():
    arrays = {"x": np.arange(10.0)[:, None], "t": np.arange(10)}
    order = np.random.default_rng(0).permutation(10)
    batches = list(parallel.padded_batches(arrays, 4, order))
    assert [b["x"].shape for b in batches] == [(4, 1)] * 3
    seen = np.concatenate([b["t"][b["weight"] > 0] for b in batches])
    np.testing.assert_array_equal(seen, order)
    assert batches[-1]["weight"].tolist() == [1, 1, 0, 0]
    # trimmed: the last batch padded only to a multiple of the device count
    trimmed = list(parallel.padded_batches(arrays, 4, order, last_multiple=3))
    assert [b["x"].shape for b in trimmed] == [(4, 1), (4, 1), (3, 1)]
    assert trimmed[-1]["weight"].tolist() == [1, 1, 0]
    np.testing.assert_array_equal(np.concatenate([b["t"][b["weight"] > 0] for b in trimmed]), order)
    assert [b["x"].shape for b in parallel.padded_batches(arrays, 4, order, last_multiple=8)][-1] == (4, 1)
    assert [b["x"].shape for b in parallel.padded_batches(arrays, 5, order, last_multiple=2)] == [(5, 1)] * 2


def test_ce_step_on_8_devices_equals_1_device():
    tok = NormalizedTokenizer(2, 6, -2.0, 2.0)
    model = TabularRegressor(tok.vocab_size, tok.length, d_model=16, num_layers=1, num_heads=2, d_ff=32,
                             mlp_hidden=16, dropout=0.0)
    rng = np.random.default_rng(0)
    z = rng.normal(size=16).astype(np.float32)
    batch = {"x": rng.normal(size=(16, 3)).astype(np.float32), "tokens": tok.encode(z)[0],
             "weight": np.r_[np.ones(13), np.zeros(3)].astype(np.float32)}
    # Plain SGD: Adam would amplify float noise in exactly-zero gradients (e.g. cross-attention keys
    # over a single memory slot) into lr-sized differences between device counts.
    tx = optax.sgd(0.5)
    params = init_params(model, 3, tok.length, jax.random.key(0))
    results = []
    for mesh in (parallel.data_mesh(jax.devices()[:1]), parallel.data_mesh()):
        step, _ = supervised.supervised_steps(supervised.decoder_loss_fn(model, tok), tx, mesh, jax.random.key(1))
        fresh = jax.tree.map(jnp.copy, params)  # the step donates its input state
        state = parallel.replicate(loop.TrainState(jnp.zeros((), jnp.int32), fresh, tx.init(fresh)), mesh)
        for _ in range(3):
            state, sums = step(state, parallel.shard_batch(batch, mesh))
        results.append((jax.device_get(state.params), np.asarray(sums)))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6), results[0][0], results[1][0])
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-5)
    assert results[0][1][1] == 13 * tok.length  # padding rows carry no weight


def test_batches_are_no_larger_than_their_split():
    mesh8 = parallel.data_mesh()
    assert parallel.batch_size_for(512, 323, mesh8) == 328  # rounded up to the 8 devices
    assert parallel.batch_size_for(128, 5242, mesh8) == 128
    assert parallel.batch_size_for(512, 81, parallel.data_mesh(jax.devices()[:1])) == 81


def test_reused_factories_return_the_same_object_for_equal_arguments_only():
    built = []

    @parallel.reused
    def factory(setting, table=None):
        built.append(setting)
        return lambda x: x * setting

    first = factory(2.0)
    assert factory(2.0) is first  # the same closure, so jax.jit's caches keyed on it would hit
    assert factory(2) is not first  # typed: an int setting is another closure
    assert factory(2.0, table=np.ones(3)) is not factory(2.0, table=np.ones(3))  # unhashable: built each time
    parallel.clear_reused()
    assert factory(2.0) is not first
    assert built == [2.0, 2, 2.0, 2.0, 2.0]
