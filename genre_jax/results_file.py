"""<workdir>/results.json: one entry per evaluated method under "phases", merged atomically; each
evaluation's wall time goes to <workdir>/timings.json instead, so results compare byte for byte."""
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
    except (OSError, json.JSONDecodeError) as e:
        raise GenreError(f"{path}: unreadable ({e}); use a fresh --workdir") from None
    earlier = stored.get("phases", {}) if isinstance(stored, dict) else None
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
        with open(path) as f:
            stored = json.load(f)
    except (OSError, json.JSONDecodeError):
        stored = {}
    phases = stored.get("phases") if isinstance(stored, dict) and isinstance(stored.get("phases"), dict) else {}
    write_json_atomic(path, {"phases": {**phases, **timings}})


def merge_into_results(workdir: str, dataset: str, seed: int, entries: dict) -> dict:
    """Adds ``entries`` under "phases" of <workdir>/results.json, keeping every other entry."""
    os.makedirs(workdir, exist_ok=True)
    merged = {"dataset": dataset, "seed": int(seed), "phases": {**read_phases(workdir, dataset, seed), **entries}}
    write_json_atomic(os.path.join(workdir, "results.json"), merged)
    return merged
