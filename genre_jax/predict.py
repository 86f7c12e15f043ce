"""Predict from a trained workdir on the command line:

  python -m genre_jax.predict --workdir runs/default --input X.npy --out preds.csv
  python -m genre_jax.predict --workdir W --input rows.csv --quantiles 0.05,0.5,0.95 --interval 0.9

``--input``: a .npy array [rows, numeric features] (with ``--cat C.npy`` for categorical columns, as
in TALENT's N_*/C_* files), or a .csv with a header row whose first columns are the numeric features
and the rest the categorical ones, in the order the run was trained on. Writes one CSV row per input
row: mean, median, mode, greedy (original units; decoded as the run's evaluation decoded, exactly
where it did: ``genre_jax.decode``), then q<level> columns for ``--quantiles`` (at the run's
calibrated temperature) and lower/upper for ``--interval`` (split-conformal, fitted on the run's
validation split). ``--method`` picks the decoder method (default: the one trained last).
"""
from __future__ import annotations

import argparse
import csv
import os
import sys

import numpy as np

from genre_jax.errors import GenreError


def read_input(path: str, cat_path: str | None, num_numeric: int):
    """(num [N, Fn] float64, cat [N, Fc] object or None) from a .npy (+ .npy) or a .csv file."""
    if not os.path.isfile(path):
        raise GenreError(f"--input {path}: no such file")
    if path.endswith(".npy"):
        try:
            num = np.asarray(np.load(path, allow_pickle=False), np.float64)
            cat = None if cat_path is None else np.load(cat_path, allow_pickle=True).astype(object)
        except (OSError, ValueError) as e:
            raise GenreError(f"--input {path}: not a numeric .npy array ({e})") from None
        if num.ndim != 2:
            raise GenreError(f"--input {path}: shape {num.shape}; expected [rows, numeric features]")
        return num, cat
    if not path.endswith(".csv"):
        raise GenreError(f"--input {path}: expected a .npy or .csv file")
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if len(rows) < 2:
        raise GenreError(f"--input {path}: expected a header row and at least one data row")
    body = rows[1:]
    widths = {len(r) for r in body}
    if widths != {len(rows[0])}:
        raise GenreError(f"--input {path}: rows have {sorted(widths)} columns; the header has {len(rows[0])}")
    try:
        num = np.array([[float(v) if v.strip() else np.nan for v in r[:num_numeric]] for r in body], np.float64)
    except ValueError as e:
        raise GenreError(f"--input {path}: a numeric column (the first {num_numeric}) has a non-number ({e})") from None
    cat = np.array([r[num_numeric:] for r in body], object) if len(rows[0]) > num_numeric else None
    return num.reshape(len(body), num_numeric), cat


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", required=True)
    p.add_argument("--input", required=True)
    p.add_argument("--cat", default=None, help="categorical columns (.npy), with a .npy --input")
    p.add_argument("--out", default="-", help="CSV path ('-' = stdout)")
    p.add_argument("--method", default=None)
    p.add_argument("--num_samples", type=int, default=None, help="draws per row where the run samples "
                   "(default: the run's eval.num_samples)")
    p.add_argument("--quantiles", default="", help="comma list of levels in [0, 1]")
    p.add_argument("--interval", type=float, default=None, help="coverage of a split-conformal interval")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        from genre_jax.predictor import Predictor
        predictor = Predictor.from_workdir(args.workdir, args.method)
        num, cat = read_input(args.input, args.cat, len(predictor.preprocessor.num_mean))
        out = predictor.predict(num, cat, "main", num_samples=args.num_samples, seed=args.seed)
        columns = {k: out[k] for k in ("mean", "median", "mode", "greedy")}
        if args.quantiles:
            try:
                levels = [float(q) for q in args.quantiles.split(",") if q.strip()]
            except ValueError:
                raise GenreError(f"--quantiles {args.quantiles!r}: expected a comma list of numbers") from None
            values = predictor.quantiles(num, cat, levels, seed=args.seed)
            columns.update({f"q{q:g}": values[:, i] for i, q in enumerate(levels)})
        if args.interval is not None:
            columns["lower"], columns["upper"] = predictor.interval(num, cat, args.interval, seed=args.seed)
    except GenreError as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    stream = sys.stdout if args.out == "-" else open(args.out + ".tmp", "w", newline="")
    try:
        writer = csv.writer(stream)
        writer.writerow(columns)
        writer.writerows(zip(*([f"{x:.10g}" for x in v] for v in columns.values())))
    finally:
        if stream is not sys.stdout:
            stream.close()
    if args.out != "-":
        os.replace(args.out + ".tmp", args.out)  # a killed run leaves no half-written --out
        print(f"wrote {len(num)} rows to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
