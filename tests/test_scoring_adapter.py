"""experiments/scoring_adapter.py: a fitted model's histogram, samples and quantiles."""
import numpy as np

from experiments import scoring_adapter
from genre_jax import scores

EPS32 = float(np.finfo(np.float32).eps)


class _FakeEstimator:
    """GenReRegressor's predict / sample signatures over a hand-made exact distribution of 2 rows."""

    def __init__(self, exact=True):
        self.exact, self.calls = exact, []

    def predict(self, X, output_type="mean", quantiles=None):
        self.calls.append(output_type)
        if output_type == "full":
            if not self.exact:
                return {"samples": np.zeros((len(X), 4))}
            return {"support": np.array([0.0, 1.0, 3.0]), "probabilities": np.array([[0.5, 0.5, 0.0], [0.1, 0.2, 0.7]])}
        assert output_type == "quantiles"
        return [np.full(len(X), 10.0 * q) for q in quantiles]

    def sample(self, X, n=128):
        return np.arange(len(X) * n, dtype=np.float64).reshape(len(X), n)


def test_forms_of_a_hand_made_estimator():
    forms = scoring_adapter.scoring_inputs(_FakeEstimator(), np.zeros((2, 3)), num_samples=5, levels=(0.1, 0.5))
    np.testing.assert_array_equal(forms["histogram"]["bin_edges"], [-0.5, 0.5, 2.0, 4.0])  # halfway; outer mirrored
    np.testing.assert_array_equal(forms["histogram"]["probabilities"], [[0.5, 0.5, 0.0], [0.1, 0.2, 0.7]])
    assert forms["samples"].shape == (2, 5)
    np.testing.assert_array_equal(forms["quantiles"]["levels"], [0.1, 0.5])
    np.testing.assert_array_equal(forms["quantiles"]["quantiles"], [[1.0, 5.0], [1.0, 5.0]])  # [N, P]
    assert scoring_adapter.histogram(_FakeEstimator(exact=False), np.zeros((2, 3))) is None  # sampled: no histogram
    assert len(scoring_adapter.quantiles(_FakeEstimator(), np.zeros((1, 3)))["levels"]) == len(scores.QUANTILE_LEVELS)


def test_forms_of_a_trained_predictor(tiny_run):
    from genre_jax.data import read_talent
    from genre_jax.predictor import Predictor

    workdir, _ = tiny_run
    raw, _ = read_talent(None, "cpu_act")
    predictor = Predictor.from_workdir(workdir, "genre2")
    x = raw["test"].num[:10]
    forms = scoring_adapter.scoring_inputs(predictor, x, num_samples=16)
    full = predictor.predict(x, output_type="full")
    edges, probs = forms["histogram"]["bin_edges"], forms["histogram"]["probabilities"]
    support = full["support"]
    assert edges.shape == (len(support) + 1,) and probs.shape == (10, len(support)) and np.all(np.diff(edges) > 0)
    np.testing.assert_allclose(edges[1:-1], (support[1:] + support[:-1]) / 2, rtol=0, atol=4 * 1e-16 * np.abs(support).max())
    # renormalized by a row sum of S terms within S eps64 of 1 (scores.Discrete): relative (S + 1) eps64
    np.testing.assert_allclose(probs, full["probabilities"], rtol=(len(support) + 1) * np.finfo(np.float64).eps, atol=0)
    # draws lie on the decoder's grid (float32 decodes mapped to original units: a few float32 roundings)
    draws = forms["samples"]
    assert draws.shape == (10, 16)
    gap = np.abs(draws[..., None] - support).min(-1)
    assert gap.max() <= 4 * EPS32 * np.abs(support).max()
    q = forms["quantiles"]["quantiles"]
    assert q.shape == (10, len(scores.QUANTILE_LEVELS)) and np.all(np.diff(q, axis=1) >= 0)
