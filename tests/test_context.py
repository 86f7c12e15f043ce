import numpy as np

from genre_jax.context import encode_splits
from genre_jax.data import load_tabular
from genre_jax.tokenizers import NormalizedTokenizer


def test_encode_splits_counts_clipped_targets_outside_train_range(toy_data_dir):
    data = load_tabular(str(toy_data_dir), "toy")
    tok = NormalizedTokenizer.fit(data.splits["train"].z)
    arrays, clipped = encode_splits(data, tok)
    assert clipped["train"] == 0
    z_test = data.splits["test"].z
    assert clipped["test"] == int(np.sum((z_test < tok.low) | (z_test > tok.high)))
    assert arrays["val"]["tokens"].shape == (len(data.splits["val"].z), tok.length)
