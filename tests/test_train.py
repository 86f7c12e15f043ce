import numpy as np
from ml_collections import ConfigDict

from experiments.configs import tabular
from genre_jax import train
from genre_jax.data import load_tabular
from genre_jax.tokenizers import NormalizedTokenizer


def test_schedule_warms_up_then_decays_to_the_floor():
    cfg = ConfigDict(dict(learning_rate=1e-3, warmup_steps=10, lr_floor=0.1, weight_decay=0.0, grad_clip=0.0))
    tx = train.make_optimizer(cfg, 100)
    params = {"w": np.ones(())}
    state = tx.init(params)
    lrs = []
    for _ in range(100):
        updates, state = tx.update({"w": np.ones(())}, state, params)
        lrs.append(-float(updates["w"]))  # Adam's first step direction is ~1, so the update is ~lr
    assert lrs[0] < lrs[9] and abs(lrs[10] - 1e-3) < 1e-4
    assert abs(lrs[-1] - 1e-4) < 2e-5 and np.all(np.diff(lrs[11:]) <= 1e-9)


def test_encode_splits_counts_clipped_targets_outside_train_range(toy_data_dir):
    data = load_tabular(str(toy_data_dir), "toy")
    tok = NormalizedTokenizer.fit(data.splits["train"].z)
    arrays, clipped = train.encode_splits(data, tok)
    assert clipped["train"] == 0
    z_test = data.splits["test"].z
    assert clipped["test"] == int(np.sum((z_test < tok.low) | (z_test > tok.high)))
    assert arrays["val"]["tokens"].shape == (len(data.splits["val"].z), tok.length)
    assert set(tabular.VARIANTS) == {"quick", "paper", "tiny"}
