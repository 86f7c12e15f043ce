"""Tolerances from the maths, not from one machine's output.

XLA:CPU's reductions, matmuls and transcendentals round differently on different CPU families (Intel
and AMD differ in the last bits), so two float32 computations of one quantity along different paths
are held to k * EPS32 * scale: the scale is the size of the terms the computation adds up, not of
the result they cancel down to, and k comes from how many roundings there are (n float32 terms
summed: at most n in the worst case, about sqrt(n) when the roundings fall at random). Each call site
says which scale and k and why.
"""
import jax
import numpy as np

EPS32 = float(np.finfo(np.float32).eps)


def assert_trees_close(actual, desired, atol):
    """Every leaf of ``actual`` within ``atol`` (absolute, one number for the whole tree) of ``desired``'s."""
    jax.tree.map(lambda a, d: np.testing.assert_allclose(a, d, rtol=0, atol=atol), actual, desired)
