"""The scripts outside the package (benchmarks/, experiments/) use only genre_jax names that exist.

They run by hand, not in the suite, so a renamed function breaks them silently (``benchmarks/aot.py``
still called ``evaluate._predict_fn`` after issue 38 made it ``decode.predict_fn``). Read as
source, not imported: no script's heavy imports or libtpu in the test process."""
import ast
import glob
import importlib
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = sorted(glob.glob(os.path.join(REPO, "benchmarks", "*.py")) + glob.glob(os.path.join(REPO, "experiments", "*.py")))


def genre_jax_references(source: str) -> list[tuple[str, str, int]]:
    """(module, attribute, line) for every ``from genre_jax import m`` then ``m.attr``, and every
    ``from genre_jax.m import attr``, in ``source``."""
    tree = ast.parse(source)
    modules, out = {}, []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "genre_jax":
            modules.update({a.asname or a.name: a.name for a in node.names})
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("genre_jax."):
            out += [(node.module.removeprefix("genre_jax."), a.name, node.lineno) for a in node.names]
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules:
            out.append((modules[node.value.id], node.attr, node.lineno))
    return out


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: os.path.relpath(p, REPO))
def test_every_genre_jax_name_a_script_uses_exists(path):
    with open(path) as f:
        refs = genre_jax_references(f.read())
    missing = [f"{os.path.relpath(path, REPO)}:{line}: genre_jax.{module}.{attr}" for module, attr, line in refs
               if not hasattr(importlib.import_module(f"genre_jax.{module}"), attr)]
    assert not missing, "\n".join(missing)


def test_the_reference_reader_sees_both_import_forms():
    source = "from genre_jax import evaluate as ev, decode\nfrom genre_jax.exact import nope\nev._predict_fn(1)\ndecode.x\n"
    assert sorted(genre_jax_references(source)) == [("decode", "x", 4), ("evaluate", "_predict_fn", 3), ("exact", "nope", 2)]
