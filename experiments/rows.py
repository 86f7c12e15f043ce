"""Result files of the experiment scripts: the suite's JSONL rows and the results.json of a workdir.

A JSONL row is one finished (dataset, method, seed, protocol) run; ``row_key`` names it. A file may
hold several rows of one key (a failure, then its retry); ``latest_rows`` keeps the one that counts.
"""
from __future__ import annotations

import json
import math
import os
import sys

import numpy as np


def row_key(row: dict) -> tuple:
    return (row["dataset"], row["method"], int(row["seed"]), row["protocol"])


def read_rows(path: str, repair: bool = False) -> list[dict]:
    """Rows of the JSONL file; an incomplete last line (no newline) is ignored, and cut off when
    ``repair`` so that the next append starts a fresh line. A malformed complete line is an error."""
    if not os.path.exists(path):
        return []
    with open(path, "rb") as f:
        data = f.read()
    complete, newline, tail = data.rpartition(b"\n")
    if tail:
        keep = len(complete) + len(newline)
        print(f"warning: {path}: ignoring an incomplete last line ({len(tail)} bytes)"
              + (", cut off" if repair else ""), file=sys.stderr)
        if repair:
            os.truncate(path, keep)
    rows = []
    for number, line in enumerate(complete.split(b"\n") if newline else [], start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{number}: not a JSON line ({e}); fix or remove it") from None
    return rows


def append_row(path: str, row: dict) -> None:
    """One os.write of the whole line: a kill leaves either the full line or an incomplete tail."""
    data = (json.dumps(row, sort_keys=True, allow_nan=True) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        written = os.write(fd, data)
        while written < len(data):  # a short write is rare (signals, full disk) but must not lose the rest
            written += os.write(fd, data[written:])
        os.fsync(fd)
    finally:
        os.close(fd)


def latest_rows(rows, protocol: str | None = None) -> dict:
    """{(dataset, method, seed, protocol): row}: the last successful row of a key, else its last row."""
    out = {}
    for row in rows:
        if protocol is not None and row["protocol"] != protocol:
            continue
        key = row_key(row)
        if out.get(key, {}).get("status") != "ok" or row.get("status") == "ok":
            out[key] = row
    return out


def read_json(path: str) -> dict | None:
    """The parsed file; None when it is missing or unreadable (a launch that died before writing it)."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError):
        return None


def method_entries(workdir: str) -> dict:
    """{method: entry} of <workdir>/results.json; {} before the workdir's first evaluation."""
    return (read_json(os.path.join(workdir, "results.json")) or {}).get("phases", {})


def one_sample_rmse(workdir: str, entry: str | None = None) -> float:
    """sqrt(mean over rows of E[(Y - y)^2]) for one draw Y of the test distribution of ``entry`` (a
    results.json entry; None: the workdir's only evaluation); nan if unavailable."""
    folder = os.path.join(workdir or "", "eval")
    if not os.path.isdir(folder):
        return math.nan
    names = [entry] if entry is not None else os.listdir(folder)
    if len(names) != 1:
        return math.nan
    path = os.path.join(folder, names[0], "predictions_test.npz")
    if not os.path.exists(path):
        return math.nan
    with np.load(path) as d:
        y = d["target_z"].astype(np.float64)
        if "exact_probs" in d.files:
            probs, values = d["exact_probs"].astype(np.float64), d["exact_values_z"].astype(np.float64)
            sq = (probs * (values[None, :] - y[:, None]) ** 2).sum(1) / probs.sum(1)
        else:
            sq = ((d["samples_z"].astype(np.float64) - y[:, None]) ** 2).mean(1)
    return float(np.sqrt(sq.mean()))
