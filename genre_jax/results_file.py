"""<workdir>/results.json: one entry per evaluated method under "phases", merged atomically; each
evaluation's wall time goes to <workdir>/timings.json instead, so results compare byte for byte."""
from __future__ import annotations

import json
import os

import jax

from genre_jax import paths
from genre_jax.errors import GenreError


def write_json_atomic(path: str, obj) -> None:
    """Process 0 writes, atomically (``paths.write_atomic``: a local path or a bucket URI)."""
    if jax.process_index() != 0:
        return
    paths.write_atomic(path, json.dumps(obj, indent=2, sort_keys=True))


def read_phases(workdir: str, dataset: str, seed: int) -> dict:
    """The entries already in results.json; refuses a file written for another dataset or seed."""
    path = os.path.join(workdir, "results.json")
    if not paths.exists(path):
        return {}
    try:
        stored = json.loads(paths.read_text(path))
    except (OSError, json.JSONDecodeError) as e:
        raise GenreError(f"{path}: unreadable ({e}); use a fresh --workdir") from None
    earlier = stored.get("phases") if isinstance(stored, dict) else None  # every results.json we write has it
    if not isinstance(earlier, dict) or not all(isinstance(v, dict) for v in earlier.values()):
        raise GenreError(f"{path}: not a results file (expected an object whose 'phases' maps each method to its "
                         f"entry); use a fresh --workdir")
    # Mixing datasets or seeds in one results.json would make its rows incomparable.
    for key, value in (("dataset", dataset), ("seed", int(seed))):
        if key in stored and stored[key] != value:
            raise GenreError(f"{path} holds results for {key} {stored[key]!r}, not {value!r}; use a fresh --workdir")
    return earlier


def merge_timings(workdir: str, timings: dict) -> None:
    """Adds {method: {"wall_time_s": ...}} to <workdir>/timings.json (kept out of results.json)."""
    path = os.path.join(workdir, "timings.json")
    try:
        stored = json.loads(paths.read_text(path))
    except (OSError, json.JSONDecodeError):
        stored = {}
    phases = stored.get("phases") if isinstance(stored, dict) and isinstance(stored.get("phases"), dict) else {}
    write_json_atomic(path, {"phases": {**phases, **timings}})


def merge_into_results(workdir: str, dataset: str, seed: int, entries: dict) -> dict:
    """Adds ``entries`` under "phases" of <workdir>/results.json, keeping every other entry."""
    paths.makedirs(workdir)
    merged = {"dataset": dataset, "seed": int(seed), "phases": {**read_phases(workdir, dataset, seed), **entries}}
    write_json_atomic(os.path.join(workdir, "results.json"), merged)
    return merged
