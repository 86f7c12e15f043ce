"""genre_jax: decoding-based regression refined with sequence-level RL (GenRe²) in JAX/Flax."""

__version__ = "0.1.0"
