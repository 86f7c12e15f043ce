"""Suite protocols: which datasets, methods and seeds, and the launch.py overrides of each method.

  python experiments/suite.py --protocol=cpu --data_dir=/path/to/talent   # ~33 datasets x 10 methods
  python experiments/suite.py --protocol=cpu --data_dir=/path/to/talent --datasets=boston,cpu_act \
      --methods=ce,genre2,lightgbm --seeds=0,1 --out=results/cpu_suite.jsonl --workroot=runs/suite
  python experiments/suite.py --protocol=paper --data_dir=/path/to/talent --out=results/paper_suite.jsonl
  python experiments/summarize.py results/cpu_suite.jsonl --out=results/cpu_suite --workroot=runs/suite

Protocols (``get_config(arg)``, arg in {"cpu", "paper"}):

  paper  experiments/configs/tabular.py:paper (d_model 256, 3 layers, CE lr 1e-4 up to 200 epochs,
         patience 20), RL 100 epochs (``rl.max_epochs=100``), token-level and head phases at the
         paper variant's budgets, 128 evaluation samples. Where <data_dir>/authors_hparams.csv has
         a row for the dataset, the authors' searched hyperparameters replace the defaults:
         learning_rate -> ce.learning_rate (RL inherits it) and token.learning_rate (the token
         losses fine-tune the CE decoder too; heads keep their own rate), base -> tokenizer.base,
         digits -> tokenizer.digits, d_model -> model.d_model, nhead -> model.num_heads,
         num_decoder_layers -> model.num_layers and model.mlp_layers (the release's MLP encoder has
         that many hidden layers), dim_feedforward -> model.d_ff,
         mlp_hidden -> model.mlp_hidden. Model and tokenizer overrides go to every launch of a
         workdir (launch refuses a workdir of another model), so heads share the encoder sizes.

  cpu    experiments/configs/tabular.py:quick (d_model 128, 2 layers, FFN 512), with the authors'
         tokenizer (base, digits from authors_hparams.csv, where a row exists; (2, 8) otherwise): the
         resolution costs nothing here, and on nearly noise-free data (mv, steel, mauna-loa) a
         (2, 8) quantization step alone is an RMSE floor. Budgets are set in
         optimizer steps at batch 128 (steps per epoch = ceil(n_train / 128)), turned into
         per-dataset epoch counts, so a 300-row and a 30k-row dataset get comparable training:
           CE     ~1200 steps: max_epochs = clamp(ceil(1200 / steps_per_epoch), 5, 200),
                  patience = max(6, ceil(max_epochs / 5)); lr 1e-3 (quick).
           RL     ~60 steps: max_epochs = max(1, ceil(60 * 128 / n_train)); datasets above 7680
                  train rows get one epoch capped at 60 steps (rl.steps_per_epoch=60).
           token  ~200 steps from the CE checkpoint: max_epochs = clamp(ceil(200 / steps_per_epoch),
                  1, 100), patience = max(2, ceil(max_epochs / 5)).
           heads  as CE (~1200 steps, same epoch and patience rule; lr 1e-3 from quick); the
                  Riemann head draws 32 samples too, so CRPS/coverage use the same S.
           eval   32 samples per input on val and test (128 in paper; sampled, not exact): sampling runs at about 5k
                  decoded sequences/s for this model on CPU, a large share of the suite's time.
           LightGBM: gbdt.DEFAULT_PARAMS (2000 rounds, early stopping 100, lr 0.05, 31 leaves).
         Datasets above 20k train rows thus get ~6 CE epochs and one RL epoch.
         Measured on cpu_act (5242 train rows; 2 cores shared with another training job): all 10
         methods in 12.3 min (CE 145 s, RL 103-166 s each, token 45-58 s, heads 16-24 s, LightGBM
         2 s; each launch spends ~12 s starting and compiling, and ~20 s evaluating a sampled
         method). Extrapolated to our 33 TALENT datasets x 10 methods x 1
         seed: ~9 h on such shared cores (RL ~3.3 h, evaluation ~2.5 h, start-up ~1.1 h, CE ~1 h,
         token ~0.6 h, heads ~0.4 h), roughly half that on 2 idle cores. RL's one-epoch floor on
         the 13 datasets above 7680 train rows is the largest item; --datasets picks a subset.

Fields: protocol, config (tabular.py path[:variant], relative to the repository), data_dir,
datasets ("" = every dataset folder in data_dir), methods, seeds (comma lists), batch_size (the
one budgets are expressed in), budget (steps per phase; None = the variant's own epochs),
authors_hparams ("" = <data_dir>/authors_hparams.csv if present; "none" = never), authors_columns
(the CSV columns a protocol takes, comma list; "" = all of AUTHORS_COLUMNS' sources), and
overrides: lists of "--config.x=value" strings per phase group ("all" goes to every launch.py
call, "ce"/"rl"/"token"/"head" only to that phase's launch). ``launch_overrides`` adds the
per-dataset part.
"""
from __future__ import annotations

import csv
import math
import os

import ml_collections
import numpy as np

from genre_jax import methods

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_DATA_DIR = os.path.normpath(os.path.join(REPO, "..", "shared", "datasets", "talent"))

PROTOCOLS = ("cpu", "paper")
DATASET = "dataset"  # authors_hparams.csv: the column naming the row's dataset

# authors_hparams.csv column -> (config field, type)
AUTHORS_COLUMNS = {
    "learning_rate": ("ce.learning_rate", float),
    "token_learning_rate": ("token.learning_rate", float),  # derived from learning_rate, see below
    "base": ("tokenizer.base", int),
    "digits": ("tokenizer.digits", int),
    "d_model": ("model.d_model", int),
    "nhead": ("model.num_heads", int),
    "num_decoder_layers": ("model.num_layers", int),
    "encoder_layers": ("model.mlp_layers", int),  # derived from num_decoder_layers, see below
    "dim_feedforward": ("model.d_ff", int),
    "mlp_hidden": ("model.mlp_hidden", int),
}


def get_config(arg: str = "cpu") -> ml_collections.ConfigDict:
    protocol = arg or "cpu"
    if protocol not in PROTOCOLS:
        raise ValueError(f"suite_protocols.py: unknown protocol {protocol!r}; expected one of {PROTOCOLS}")
    c = ml_collections.ConfigDict()
    c.protocol = protocol
    c.data_dir = DEFAULT_DATA_DIR
    c.datasets = ""
    c.methods = "ce,remax,grpo,genre2,ntl_mse,ntl_was,dist2,pointwise,riemann,lightgbm"  # the paper's ten (no rloo)
    c.seeds = "0"
    c.batch_size = 128
    c.authors_hparams = ""
    c.authors_columns = ""
    if protocol == "paper":
        c.config = "experiments/configs/tabular.py:paper"
        c.budget = ml_collections.ConfigDict(dict(ce_steps=None, rl_steps=None, token_steps=None, head_steps=None))
        c.overrides = ml_collections.ConfigDict(dict(
            all=["--config.eval.num_samples=128"], ce=[], rl=["--config.rl.max_epochs=100"], token=[], head=[]))
    else:
        c.config = "experiments/configs/tabular.py:quick"
        c.authors_columns = "base,digits"  # the quick model and rates are the same everywhere on CPU
        c.budget = ml_collections.ConfigDict(dict(ce_steps=1200, rl_steps=60, token_steps=200, head_steps=1200))
        c.overrides = ml_collections.ConfigDict(dict(
            # sampled evaluation, as the committed table was made (quick itself decodes exactly where it can)
            all=["--config.eval.num_samples=32", "--config.eval.splits=val,test", "--config.eval.decode=sample"],
            ce=[], rl=[], token=[],
            head=["--config.head.num_samples=32"]))  # the Riemann head's samples, like the decoders' CRPS
    return c


def train_size(data_dir: str, dataset: str) -> int:
    """Rows of y_train.npy (memory-mapped, so large datasets are not read)."""
    path = os.path.join(data_dir, dataset, "y_train.npy")
    try:
        return int(np.load(path, mmap_mode="r").shape[0])
    except ValueError:  # object arrays cannot be memory-mapped
        return int(np.load(path, allow_pickle=True).shape[0])


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))


def budget_overrides(config, phase: str, n_train: int) -> list[str]:
    """Per-dataset epoch budgets of ``phase`` from the config's step budgets (see the docstring)."""
    steps_per_epoch = math.ceil(n_train / int(config.batch_size))
    b = config.budget
    if phase == "ce" and b.ce_steps:
        epochs = _clamp(math.ceil(b.ce_steps / steps_per_epoch), 5, 200)
        return [f"--config.ce.max_epochs={epochs}", f"--config.ce.patience={max(6, math.ceil(epochs / 5))}"]
    if phase == "rl" and b.rl_steps:
        if n_train >= b.rl_steps * int(config.batch_size):  # one capped epoch instead of a full pass
            return ["--config.rl.max_epochs=1", f"--config.rl.steps_per_epoch={b.rl_steps}"]
        return [f"--config.rl.max_epochs={max(1, math.ceil(b.rl_steps * int(config.batch_size) / n_train))}"]
    if phase == "token" and b.token_steps:
        epochs = _clamp(math.ceil(b.token_steps / steps_per_epoch), 1, 100)
        return [f"--config.token.max_epochs={epochs}", f"--config.token.patience={max(2, math.ceil(epochs / 5))}"]
    if phase == "head" and b.head_steps:
        epochs = _clamp(math.ceil(b.head_steps / steps_per_epoch), 5, 200)
        return [f"--config.head.max_epochs={epochs}", f"--config.head.patience={max(6, math.ceil(epochs / 5))}"]
    return []


def read_authors_hparams(path: str) -> dict[str, dict[str, str]]:
    """{dataset: row} from authors_hparams.csv; {} when the file does not exist.

    Every mapped value is checked here, so a malformed one is a ValueError naming the file, the
    dataset and the column before any launch."""
    if not path or not os.path.exists(path):
        return {}
    with open(path, newline="") as f:
        rows = {row[DATASET]: row for row in csv.DictReader(f)}
    for dataset, row in rows.items():
        for column, (_, kind) in AUTHORS_COLUMNS.items():
            value = (row.get(column) or "").strip()
            if value:
                _parse(value, kind, f"{path}: dataset {dataset}, column {column}")
    return rows


def _parse(value: str, kind, where: str):
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{where}: expected a number, got {value!r}") from None
    if not math.isfinite(number) or number <= 0 or (kind is int and number != int(number)):
        raise ValueError(f"{where}: expected a positive {'integer' if kind is int else 'number'}, got {value!r}")
    return kind(number) if kind is int else kind(value)


def authors_overrides(row: dict | None, columns: str = "") -> list[str]:
    """launch.py flags from one authors_hparams.csv row, limited to the CSV ``columns`` ("" = all)."""
    if not row:
        return []
    if columns:
        wanted = {c.strip() for c in columns.split(",")}
        row = {k: v for k, v in row.items() if k in wanted or k == DATASET}
    # Token-level losses fine-tune the CE decoder like RL does, so they get the CE rate too (RL
    # inherits it by itself); the paper variant's token rate equals its default CE rate.
    # The release's MLP encoder has num_decoder_layers hidden layers of mlp_hidden units.
    row = {**row, "token_learning_rate": row.get("learning_rate"), "encoder_layers": row.get("num_decoder_layers")}
    out = []
    for column, (field, kind) in AUTHORS_COLUMNS.items():
        value = (row.get(column) or "").strip()
        if value:
            out.append(f"--config.{field}={_parse(value, kind, f'dataset {row.get(DATASET)}, column {column}')}")
    return out


def authors_hparams_path(config, data_dir: str) -> str:
    if config.authors_hparams == "none":
        return ""
    return config.authors_hparams or os.path.join(data_dir, "authors_hparams.csv")


def launch_overrides(config, dataset: str, method: str, data_dir: str, authors: dict | None = None) -> list[str]:
    """Every protocol-specific launch.py flag for one (dataset, method), in a fixed order.

    Model/tokenizer/CE-rate overrides and the "all" group go to every method so that all launches
    of one workdir describe the same model; budgets only to the method's own phase.
    ``authors`` (from read_authors_hparams) avoids re-reading the CSV per call.
    """
    phase = methods.get(method).kind
    if methods.PHASE_KINDS[phase].cli is not None:  # its own command line (genre_jax.gbdt) takes no launch.py flags
        return []
    if authors is None:
        authors = read_authors_hparams(authors_hparams_path(config, data_dir))
    out = list(config.overrides.all) + authors_overrides(authors.get(dataset), config.get("authors_columns", ""))
    out += list(config.overrides.get(phase, []))
    if any(config.budget.values()):
        out += budget_overrides(config, phase, train_size(data_dir, dataset))
    return out
