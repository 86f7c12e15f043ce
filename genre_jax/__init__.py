"""genre_jax: decoding-based regression refined with sequence-level RL (GenRe²) in JAX/Flax.

``from genre_jax import GenReRegressor`` is the scikit-learn estimator (``genre_jax.estimator``),
imported on first use so that ``import genre_jax`` stays light (no JAX, no scikit-learn).
"""

__version__ = "0.1.0"
__all__ = ["GenReRegressor"]


def __getattr__(name: str):
    if name == "GenReRegressor":
        from genre_jax.estimator import GenReRegressor
        return GenReRegressor
    raise AttributeError(f"module 'genre_jax' has no attribute {name!r}")
