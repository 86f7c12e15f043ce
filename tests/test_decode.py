"""One decoder for every prediction: which decode a run asks for, and every output type computed from
small hand-made distributions against NumPy written out here."""
import numpy as np
import pytest

from genre_jax import decode, scores
from genre_jax.errors import GenreError
from genre_jax.tokenizers import IEEETokenizer, NormalizedTokenizer


def test_auto_decodes_exactly_only_small_trees():
    assert decode.resolve("auto", NormalizedTokenizer(2, 8), 8, 1.0).how == "exact"  # 256 sequences
    assert decode.resolve("auto", NormalizedTokenizer(10, 6), 8, 1.0).how == "sample"
    assert decode.resolve("auto", IEEETokenizer(10, 1, 4), 8, 1.0).how == "sample"
    assert decode.resolve("auto", NormalizedTokenizer(2, 8), 8, 1.0, max_sequences=255).how == "sample"
    assert decode.resolve("sample", NormalizedTokenizer(2, 8), 8, 1.0) == decode.Decoding("sample", 8, 1.0)
    # a checkpoint's meta: a config from before eval.decode existed sampled
    assert decode.from_eval_section({"num_samples": 5}, NormalizedTokenizer(2, 8)) == decode.Decoding("sample", 5, 1.0)
    with pytest.raises(GenreError, match=r"^decode: expected one of \['sample', 'exact', 'auto'\], got 'exakt'$"):
        decode.resolve("exakt", NormalizedTokenizer(2, 8), 8, 1.0)


# two rows over five sequences, two of which decode to the same value (0.5): pooled in mode and full
VALUES_S = np.array([1.5, 0.5, -1.0, 0.5, 3.0])
PROBS_NS = np.array([[0.1, 0.2, 0.3, 0.15, 0.25],   # value 0.5 holds 0.35 > -1.0's 0.3: the mode is 0.5
                     [0.0, 0.05, 0.05, 0.0, 0.9]])


def test_every_output_type_of_an_exact_distribution():
    dist = scores.Discrete(VALUES_S, PROBS_NS)
    greedy = np.array([-1.0, 3.0])
    to_y = lambda z: 2.0 * z + 10.0  # noqa: E731  an affine target transform, as the tabular one
    np.testing.assert_allclose(decode.output(dist, greedy, "mean", to_y=to_y), to_y(PROBS_NS @ VALUES_S), rtol=1e-15)
    # the inverse CDF by hand: sorted values -1, .5, .5, 1.5, 3 with CDFs .3, .5, .65, .75, 1 and .05, .1, .1, .1, 1
    np.testing.assert_array_equal(decode.output(dist, greedy, "median", to_y=to_y), to_y(np.array([0.5, 3.0])))
    np.testing.assert_array_equal(decode.output(dist, greedy, "mode", to_y=to_y), to_y(np.array([0.5, 3.0])))
    np.testing.assert_array_equal(decode.output(dist, greedy, "greedy", to_y=to_y), to_y(greedy))
    q = decode.output(dist, greedy, "quantiles", (0.1, 0.3, 0.9), to_y=to_y)
    assert isinstance(q, list) and len(q) == 3
    np.testing.assert_array_equal(np.stack(q, 1), to_y(np.array([[-1.0, -1.0, 3.0], [0.5, 3.0, 3.0]])))
    full = decode.output(dist, greedy, "full", to_y=to_y)
    np.testing.assert_array_equal(full["support"], to_y(np.array([-1.0, 0.5, 1.5, 3.0])))
    np.testing.assert_allclose(full["probabilities"], [[0.3, 0.35, 0.1, 0.25], [0.05, 0.05, 0.0, 0.9]], rtol=1e-15)
    np.testing.assert_allclose(full["probabilities"].sum(1), 1.0, rtol=1e-15)
    main = decode.output(dist, greedy, "main", (0.5,), to_y=to_y)
    assert set(main) == {"mean", "median", "mode", "greedy", "quantiles"} and main["quantiles"].shape == (2, 1)


def test_every_output_type_of_samples():
    samples_NG = np.array([[0.0, 1.0, 1.0, 2.0, 2.0, 5.0],     # a tie between 1 and 2: the smaller
                           [3.0, 3.0, 3.0, -1.0, 0.0, 0.0]])
    dist = scores.Samples(samples_NG)
    greedy = np.zeros(2)
    np.testing.assert_array_equal(decode.output(dist, greedy, "mode"), [1.0, 3.0])
    np.testing.assert_array_equal(decode.output(dist, greedy, "median"), np.median(samples_NG, 1))
    np.testing.assert_array_equal(decode.output(dist, greedy, "mean"), samples_NG.mean(1))
    np.testing.assert_array_equal(np.stack(decode.output(dist, greedy, "quantiles", (0.25, 0.75)), 1),
                                  np.quantile(samples_NG, [0.25, 0.75], axis=1).T)
    np.testing.assert_array_equal(decode.output(dist, greedy, "full")["samples"], samples_NG)
    for bad, message in (("modal", "output_type: expected one of"), ):
        with pytest.raises(GenreError, match=message):
            decode.output(dist, greedy, bad)
    with pytest.raises(GenreError, match=r"quantile levels must be a non-empty list in \[0, 1\], got \[1.5\]"):
        decode.output(dist, greedy, "quantiles", (1.5,))
