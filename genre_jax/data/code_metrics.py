"""Code-metric regression data: program source text -> a measured metric (peak memory or wall time).

Two row layouts are read, both as JSONL (optionally gzipped):
  * ours (``tools/code_measure.py``): {"id", "source", "file", "wall_time_s",
    "peak_memory_bytes", ...}; the group of a row (what never straddles splits) is its source file;
  * the public hub layout (Code-Regression: APPS / KBSS (KernelBook) / CDSS (CodeNet)):
    {"identifier", "space", "input", "val_accuracy", "metric_type", "metadata"}, where
    metric_type is ``memory_bytes`` (-> peak_memory_bytes) or ``latency_ms`` (-> wall_time_s / 1e3);
    the group is the problem id found in ``metadata`` (problem_id / task_id / question_id /
    problem), else the identifier.
Rows are written once into a TFDS ``array_record`` dataset (``CodeMetrics``, TF-free) with fixed
train/validation/test splits by a hash of the group (80/10/10), then read back through
``as_data_source``. Rows with an empty program or a missing/non-positive target are skipped and
counted, never kept as zero measurements.

Inputs are bytes: token = byte + 1 (0 = padding), the first ``max_bytes`` bytes of the UTF-8
source. Targets: log, then a quantile transform fitted on train to a standard normal
(``QuantileNormal``): z = Phi^-1(F_train(log y)), so metrics are in normalized units (y_std = 1).
"""
from __future__ import annotations

import ast
import dataclasses
import gzip
import hashlib
import json
import os
import re

import numpy as np
from scipy.special import ndtr, ndtri

from genre_jax.data.talent import SPLITS, Split, TabularData
from genre_jax.errors import GenreError

TARGETS = ("peak_memory_bytes", "wall_time_s")
TARGET_ALIASES = {"memory": "peak_memory_bytes", "latency": "wall_time_s", "time": "wall_time_s"}
HUB_METRICS = {"memory_bytes": ("peak_memory_bytes", 1.0), "latency_ms": ("wall_time_s", 1e-3)}
GROUP_KEYS = ("problem_id", "task_id", "question_id", "problem")
TFDS_SPLITS = {"train": "train", "val": "validation", "test": "test"}
# Part of the prepared TFDS dataset's name, with the rows file's hash: bump it whenever
# normalize_row, split_of or GROUP_KEYS change, so no stale cached split is ever reused.
ROWS_VERSION = 1


def _error(message: str) -> GenreError:
    return GenreError(f"code-metric data: {message}")


def split_of(group: str, val_fraction: float = 0.1, test_fraction: float = 0.1) -> str:
    """Deterministic split of a group: a hash, so adding groups never moves the others."""
    u = int(hashlib.sha256(group.encode()).hexdigest()[:8], 16) / 2 ** 32
    return "test" if u < test_fraction else "val" if u < test_fraction + val_fraction else "train"


def _hub_group(row: dict) -> str:
    meta = row.get("metadata")
    if isinstance(meta, str):
        try:
            meta = ast.literal_eval(meta)
        except (ValueError, SyntaxError):
            meta = None
    if isinstance(meta, dict):
        for key in GROUP_KEYS:
            if meta.get(key) is not None:
                return f"{row.get('space', '')}/{meta[key]}"
    return str(row["identifier"])


def _number(value, field: str, where: str) -> float:
    if value is None:
        return float("nan")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise _error(f"{where}: non-numeric {field} {value!r}; expected a number or null") from None


def normalize_row(row: dict, where: str) -> dict:
    """One row of either layout -> {"id", "source", "group", "split", *TARGETS} (NaN = not measured)."""
    if not isinstance(row, dict):
        raise _error(f"{where}: a {type(row).__name__}, not a JSON object; expected one object per line")
    if "identifier" in row and "input" in row:  # hub layout
        out = {"id": str(row["identifier"]), "source": row["input"], "group": _hub_group(row)}
        out.update({t: float("nan") for t in TARGETS})
        metric = HUB_METRICS.get(row.get("metric_type"))
        if metric is not None:
            out[metric[0]] = _number(row.get("val_accuracy"), "val_accuracy", where) * metric[1]
    elif "source" in row and "id" in row:  # ours
        out = {"id": str(row["id"]), "source": row["source"], "group": str(row.get("file") or row["id"])}
        out.update({t: _number(row.get(t), t, where) for t in TARGETS})
    else:
        raise _error(f"{where}: a row has fields {sorted(row)[:8]}; expected either id/source/file/"
                     f"wall_time_s/peak_memory_bytes or the hub's identifier/input/val_accuracy/metric_type")
    if not isinstance(out["source"], str):
        raise _error(f"{where}: row {out['id']!r} has a non-string program; expected source text")
    out["split"] = row.get("split") if row.get("split") in SPLITS else split_of(out["group"])
    return out


def read_rows(path: str) -> list[dict]:
    """Normalized rows of a JSONL / JSONL.gz file in either layout."""
    if not os.path.isfile(path):
        raise _error(f"{path}: no such file; expected a .jsonl or .jsonl.gz of measured programs")
    opener = gzip.open if path.endswith(".gz") else open
    rows = []
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for i, line in enumerate(f, 1):
                if line.strip():
                    try:
                        rows.append({**normalize_row(json.loads(line), f"{path}:{i}"), "line": i})
                    except json.JSONDecodeError:
                        raise _error(f"{path}:{i}: not valid JSON; expected one JSON object per line") from None
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise _error(f"{path}: unreadable ({type(e).__name__}: {e}); expected a JSONL or gzipped JSONL file") from None
    if not rows:
        raise _error(f"{path}: no rows; expected one JSON object per line")
    return rows


def _make_builder_class():
    import tensorflow_datasets as tfds  # on first use only: it is slow to import

    @dataclasses.dataclass
    class CodeMetricsConfig(tfds.core.BuilderConfig):
        rows_path: str = ""

    class CodeMetrics(tfds.core.GeneratorBasedBuilder):
        """Measured programs: source text, group, wall time and peak memory (NaN = not measured)."""
        VERSION = tfds.core.Version("1.0.0")
        BUILDER_CONFIG_CLASS = CodeMetricsConfig

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
                "id": tfds.features.Text(), "source": tfds.features.Text(), "group": tfds.features.Text(),
                **{t: tfds.features.Scalar(np.float64) for t in TARGETS}}))

        def _split_generators(self, dl_manager):
            rows = read_rows(self.builder_config.rows_path)
            return {TFDS_SPLITS[s]: self._generate_examples([r for r in rows if r["split"] == s]) for s in SPLITS}

        def _generate_examples(self, rows):
            for r in rows:  # keyed by file line: ids may repeat (one test collected by two classes)
                yield r["line"], {k: r[k] for k in ("id", "source", "group", *TARGETS)}

    return CodeMetricsConfig, CodeMetrics


_BUILDER = None


def tfds_builder(rows_path: str, tfds_dir: str | None = None):
    """The prepared TFDS builder of a rows file (prepared on first use; keyed by the file's hash)."""
    global _BUILDER
    if _BUILDER is None:
        _BUILDER = _make_builder_class()
    config_cls, builder_cls = _BUILDER
    with open(rows_path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:12]
    stem = re.sub(r"[^A-Za-z0-9_]", "_", os.path.basename(rows_path).split(".")[0])
    tfds_dir = os.path.abspath(tfds_dir or os.environ.get("GENRE_JAX_TFDS_DIR")
                               or os.path.join(os.path.expanduser("~"), ".cache", "genre_jax", "tfds"))
    config = config_cls(name=f"{stem}_{digest}_r{ROWS_VERSION}", rows_path=os.path.abspath(rows_path))
    builder = builder_cls(config=config, data_dir=tfds_dir, file_format="array_record")
    builder.download_and_prepare()
    return builder


def read_split_records(builder, split: str) -> list[dict]:
    source = builder.as_data_source(split=TFDS_SPLITS[split])
    records = source.__getitems__(list(range(len(source)))) if len(source) else []
    return [{k: (v.decode("utf-8") if isinstance(v, bytes) else v) for k, v in r.items()} for r in records]


def byte_tokens(sources: list[str], max_bytes: int) -> tuple[np.ndarray, int]:
    """int32 [N, max_bytes] tokens (byte + 1, 0 = pad) and how many sources were truncated."""
    out = np.zeros((len(sources), max_bytes), np.int32)
    truncated = 0
    for i, s in enumerate(sources):
        b = np.frombuffer(s.encode("utf-8"), np.uint8)
        truncated += int(len(b) > max_bytes)
        b = b[:max_bytes]
        out[i, : len(b)] = b.astype(np.int32) + 1
    return out, truncated


@dataclasses.dataclass(frozen=True)
class QuantileNormal:
    """log, then the train empirical CDF (linear between quantiles) mapped through Phi^-1.

    ``num_features`` is the byte length of the inputs, so the pipeline sizes models from it.
    """
    log_quantiles: tuple[float, ...]
    num_features: int
    y_std: float = 1.0  # metrics are reported in the normalized (z) units

    @classmethod
    def fit(cls, y_train: np.ndarray, num_features: int, num_quantiles: int = 1001) -> "QuantileNormal":
        log_y = np.log(np.asarray(y_train, np.float64))
        if np.ptp(log_y) == 0:
            raise _error("train targets are constant; expected a metric with non-zero spread")
        return cls(tuple(float(q) for q in np.quantile(log_y, np.linspace(0, 1, num_quantiles))), num_features)

    def _probs(self):
        q = np.asarray(self.log_quantiles)
        return q, np.linspace(0, 1, len(q))

    def y_to_z(self, y) -> np.ndarray:
        q, p = self._probs()
        # Ties in q (repeated measurements) get the middle of their CDF range, as averaged ranks do.
        f = 0.5 * (np.interp(np.log(y), q, p) + 1 - np.interp(-np.log(y), -q[::-1], p))
        eps = 0.5 / (len(q) - 1)
        return ndtri(np.clip(f, eps, 1 - eps)).astype(np.float32)

    def z_to_y(self, z) -> np.ndarray:
        q, p = self._probs()
        return np.exp(np.interp(ndtr(np.asarray(z, np.float64)), p, q))

    def to_dict(self) -> dict:
        return {"kind": "quantile_normal_log", "log_quantiles": list(self.log_quantiles),
                "num_features": self.num_features, "y_std": self.y_std}


def resolve_target(target: str) -> str:
    name = TARGET_ALIASES.get(target, target)
    if name not in TARGETS:
        raise _error(f"config.code.target={target!r}; expected one of {sorted(TARGET_ALIASES)} or {list(TARGETS)}")
    return name


def dataset_path(data_dir: str | None, dataset: str) -> str:
    from genre_jax.data.talent import BUNDLED_DIR
    root = data_dir or os.path.join(BUNDLED_DIR, "code_metrics")
    for suffix in ("", ".jsonl.gz", ".jsonl"):
        path = os.path.join(root, dataset + suffix)
        if os.path.isfile(path):
            return path
    raise _error(f"{os.path.join(root, dataset)}: no such file (tried .jsonl.gz and .jsonl); expected a "
                 f"measured-programs file, e.g. the bundled cpython_tests")


def load_code_metrics(data_dir: str | None, dataset: str, target: str, max_bytes: int,
                      tfds_dir: str | None = None) -> TabularData:
    """Reads (via TFDS) the splits of one code-metric dataset, fits the target transform on train."""
    if int(max_bytes) <= 0:
        raise _error(f"config.code.max_bytes={max_bytes}; expected a positive integer")
    target = resolve_target(target)
    path = dataset_path(data_dir, dataset)
    builder = tfds_builder(path, tfds_dir)
    raw, skipped = {}, {}
    for split in SPLITS:
        records = read_split_records(builder, split)
        keep = [r for r in records if r["source"].strip() and np.isfinite(r[target]) and r[target] > 0]
        skipped[split] = len(records) - len(keep)
        raw[split] = keep
        if not keep:
            raise _error(f"{path}: the {split} split has no row with a program and a positive {target}; "
                         f"expected measured rows in every split")
    pre = QuantileNormal.fit(np.array([r[target] for r in raw["train"]]), int(max_bytes))
    splits, truncated = {}, {}
    for split, rows in raw.items():
        y = np.array([r[target] for r in rows], np.float64)
        x, truncated[split] = byte_tokens([r["source"] for r in rows], int(max_bytes))
        splits[split] = Split(x=x, z=pre.y_to_z(y), y=y)
    info = {"path": path, "target": target, "rows": {s: len(r) for s, r in raw.items()}, "skipped_rows": skipped,
            "truncated_sources": truncated, "max_bytes": int(max_bytes)}
    return TabularData(name=dataset, splits=splits, preprocessor=pre, info=info)
