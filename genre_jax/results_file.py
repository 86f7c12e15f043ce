"""<workdir>/results.json: one entry per evaluated method under "phases", merged atomically."""
from __future__ import annotations

import json
import os
import tempfile

import jax

from genre_jax.errors import GenreError


def write_json_atomic(path: str, obj) -> None:
    """Process 0 writes via a unique temporary file in the same folder (os.replace is atomic there)."""
    if jax.process_index() != 0:
        return
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def read_phases(workdir: str, dataset: str, seed: int) -> dict:
    """The entries already in results.json; refuses a file written for another dataset or seed."""
    path = os.path.join(workdir, "results.json")
    if not os.path.exists(path):
        return {}
    try:
        with open(path) as f:
            stored = json.load(f)
        earlier = stored.get("phases", {})
    except (OSError, json.JSONDecodeError, AttributeError) as e:
        raise GenreError(f"{path}: unreadable ({e}); use a fresh --workdir") from None
    # Mixing datasets or seeds in one results.json would make its rows incomparable.
    for key, value in (("dataset", dataset), ("seed", int(seed))):
        if key in stored and stored[key] != value:
            raise GenreError(f"{path} holds results for {key} {stored[key]!r}, not {value!r}; use a fresh --workdir")
    return earlier


def merge_into_results(workdir: str, dataset: str, seed: int, entries: dict) -> dict:
    """Adds ``entries`` under "phases" of <workdir>/results.json, keeping every other entry."""
    os.makedirs(workdir, exist_ok=True)
    merged = {"dataset": dataset, "seed": int(seed), "phases": {**read_phases(workdir, dataset, seed), **entries}}
    write_json_atomic(os.path.join(workdir, "results.json"), merged)
    return merged
