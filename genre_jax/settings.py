"""Every config section validated once, into typed frozen records the phases read.

``resolve(config, tokenizer)`` runs before the workdir is touched, so a bad value costs no training
time and leaves nothing behind; it also builds what the phases use (the selected method records,
the reward function, the token objective, the evaluation stamps, the config as a dict for
config.json and checkpoint meta), so no later step re-reads or re-casts a config field.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Callable

from genre_jax import calibration, decode, exact, heads, methods, objectives
from genre_jax.errors import GenreError

PHASES = (*methods.KINDS, "eval")  # always run in this order
SPLITS = ("train", "val", "test")
# The paper's expert weights: 0.05 for normalized (tabular) tokens, 0.1 for IEEE tokens.
DEFAULT_EXPERT_WEIGHT = {"normalized": 0.05, "ieee": 0.1}
RNG_STREAMS = ("per_phase", "shared")
LAST_BATCH = ("pad", "trim")
HEAD_SELECT = ("mse", "loss")

# Fields added after workdirs and config files already existed, with the value that reproduces
# those runs. A config without the field reads that value; a resumed phase or a workdir's model
# identity leaves the field out while it holds that value, so older workdirs still match.
LATER_FIELDS = {
    "": {"rng_streams": "shared", "last_batch": "pad", "checkpoint_every_s": 0.0},
    "model": {"final_norm": True, "dtype": "float32"},
    "ce": {"masked_loss": True},
    "rl": {"lr_floor": 1.0, "requantize_targets": False, "masked_expert": True, "selection": "reward",
           "keep_start": True, "both_selections": False, "expert": None},
    "token": {"masked_loss": True},
    "eval": {"decode": "sample", "exact_max_sequences": exact.MAX_SEQUENCES, "calibration": "none"},
    "head": {"mlp_hidden": 0, "mlp_layers": 0, "targets": "integrated", "tails": "train_mean", "select": "loss"},
}
_MODEL_SIZES = ("d_model", "num_heads", "num_layers", "d_ff", "mlp_hidden", "enc_layers", "memory_slots",
                "patch_size")


@dataclasses.dataclass(frozen=True)
class Optim:
    learning_rate: float
    weight_decay: float
    warmup_steps: int
    lr_floor: float  # the cosine schedule ends at learning_rate * lr_floor; 1.0 = constant after warmup
    grad_clip: float  # 0 = no clipping


@dataclasses.dataclass(frozen=True)
class Loop:
    """What the training loop needs of a phase's section."""
    section: str  # config section, named in messages
    rng_streams: str  # per_phase: the phase's own dropout/rollout keys and batch orders; shared: legacy
    batch_size: int
    trim_last: bool  # the epoch's last, partial batch cut to its rows (one more compiled shape), not padded
    max_epochs: int
    patience: float  # epochs without improvement before stopping; inf = never
    steps_per_epoch: int  # 0 = a full pass over the train split
    optim: Optim
    # ``last`` is written when this many seconds of training have passed since the previous write (0 =
    # after every epoch), and always at the phase's end and on SIGTERM; ``best`` on every improvement
    checkpoint_every_s: float = 0.0


@dataclasses.dataclass(frozen=True)
class RL:
    method: methods.Method
    reward: Callable  # (pred_BG, target_B) -> reward_BG
    masked_expert: bool  # the expert CE over masked logits; False = raw logits, as released
    num_rollouts: int
    temperature: float
    clip_eps: float
    ppo_epochs: int  # gradient passes over one batch of rollouts
    requantize_targets: bool  # train reward against detok(tok(y)), as released
    expert_weight: float  # 0 unless the expert term is added (rl.expert, else the method's default)
    kl_weight: float
    entropy_weight: float
    loop: Loop
    # the section minus max_epochs: a resumed RL phase must match it (left out of ==/hash: the
    # fields above already hold it, and a dict is unhashable)
    fingerprint: dict = dataclasses.field(compare=False)
    # The validation value that picks the RL checkpoint: "reward" (mean sampled reward) or
    # "aggregate_rmse" (RMSE of the reported mean prediction: the exact distribution's mean when
    # ``selection_decode`` is exact, else the mean of num_rollouts samples, at the eval temperature).
    selection: str = "reward"
    selection_decode: str = "sample"
    selection_temperature: float = 1.0
    keep_start: bool = True  # the CE start competes in selection as epoch -1 (the release: RL epochs only)
    both_selections: bool = False  # also keep the other rule's best checkpoint (``other_selection``)

    @property
    def other_selection(self) -> str | None:
        """The rule whose best checkpoint is kept beside ``selection``'s, or None."""
        return next(r for r in SELECTIONS if r != self.selection) if self.both_selections else None


@dataclasses.dataclass(frozen=True)
class Token:
    method: methods.Method
    objective: Callable  # (logits_BLV, tokens_BL, weight_B) -> (sum, count)
    masked_loss: bool  # the loss over masked logits; False = raw logits, as released
    weight: float
    tau: float
    loop: Loop


@dataclasses.dataclass(frozen=True)
class Head:
    method: methods.Method
    num_bins: int
    low: float
    high: float
    smoothing: float
    targets: str  # heads.TARGETS
    tails: str  # heads.TAILS
    mlp_hidden: int  # 0 = the decoder model's encoder
    mlp_layers: int
    select: str  # the validation value that picks the best epoch: point-prediction MSE or the loss
    num_samples: int
    loop: Loop
    config: dict = dataclasses.field(default_factory=dict, compare=False)  # config.head, into its checkpoints' meta
    stamp: dict = dataclasses.field(default_factory=dict, compare=False)  # see Eval.stamp


@dataclasses.dataclass(frozen=True)
class Eval:
    num_samples: int
    temperature: float
    batch_size: int
    splits: tuple[str, ...]
    decode: str  # decode.DECODES
    exact_max_sequences: int  # auto decodes exactly up to this many sequences
    calibration: str = "none"  # calibration.CALIBRATIONS, fitted on the validation split
    # the section minus later fields at their old values: a results.json entry evaluated under the
    # same stamp is not evaluated again (so its content must not change for existing workdirs)
    stamp: dict = dataclasses.field(default_factory=dict, compare=False)


@dataclasses.dataclass(frozen=True)
class Settings:
    seed: int
    phases: tuple[str, ...]
    ce: Loop
    ce_masked_loss: bool  # CE over masked logits; False = raw logits, as released
    rl: RL
    token: Token
    head: Head
    eval: Eval
    dataset: str = ""  # the results.json key
    config: dict = dataclasses.field(default_factory=dict, compare=False)  # the whole config (config.json, meta)

    def trains(self) -> bool:
        return any(p in self.phases for p in methods.KINDS)

    def method(self, kind: str) -> methods.Method:
        """The method this run trains (or evaluates) for a phase kind."""
        return getattr(self, kind).method if methods.PHASE_KINDS[kind].selected else methods.only(kind)


def parse_phases(text: str) -> tuple[str, ...]:
    phases = [p.strip() for p in str(text).split(",") if p.strip()]
    unknown = [p for p in phases if p not in PHASES]
    if unknown or not phases:
        raise GenreError(f"config.phases: unknown phase(s) {unknown or phases}; expected a comma-separated "
                         f"subset of {list(PHASES)}")
    return tuple(phases)


class _Reader:
    """One config section's fields, read with typed one-line errors that name the field."""

    def __init__(self, config, name: str):
        self.cfg, self.name = config[name], name
        self.rng_streams = config.get("rng_streams", LATER_FIELDS[""]["rng_streams"])
        self.trim_last = config.get("last_batch", LATER_FIELDS[""]["last_batch"]) == "trim"
        self.checkpoint_every_s = config.get("checkpoint_every_s", LATER_FIELDS[""]["checkpoint_every_s"])

    def __getattr__(self, field: str):
        return self.get(field)

    def get(self, field: str):
        if field not in self.cfg and field in LATER_FIELDS.get(self.name, {}):
            return LATER_FIELDS[self.name][field]
        return self.cfg[field]

    def choice(self, field: str, choices: tuple[str, ...]) -> str:
        value = self.get(field)
        if value not in choices:
            raise GenreError(f"config.{self.name}.{field}: expected one of {list(choices)}, got {value!r}")
        return value

    def int(self, field: str, low: int = 1) -> int:
        value = self.get(field)
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
            raise GenreError(f"config.{self.name}.{field}: expected an integer >= {low}, got {value!r}")
        return int(value)

    def float(self, field: str, low: float = 0.0, strict: bool = False) -> float:
        value = self.get(field)
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
        if not ok or value < low or (strict and value == low):
            raise GenreError(f"config.{self.name}.{field}: expected a finite number {'>' if strict else '>='} "
                             f"{low}, got {value!r}")
        return float(value)

    def bool(self, field: str) -> bool:
        value = self.get(field)
        if not isinstance(value, bool):
            raise GenreError(f"config.{self.name}.{field}: expected True or False, got {value!r}")
        return value

    def optim(self, learning_rate: float | None = None, lr_floor: float | None = None) -> Optim:
        lr = self.float("learning_rate", strict=True) if learning_rate is None else learning_rate
        floor = self.float("lr_floor") if lr_floor is None else lr_floor
        if floor > 1.0:
            raise GenreError(f"config.{self.name}.lr_floor: expected a number in [0, 1] (the final rate as a "
                             f"fraction of learning_rate), got {floor!r}")
        return Optim(lr, self.float("weight_decay"), self.int("warmup_steps", 0), floor, self.float("grad_clip"))

    def loop(self, optim: Optim | None = None, patience: float | None = None, steps_per_epoch: int = 0) -> Loop:
        patience = float(self.int("patience")) if patience is None else patience
        return Loop(self.name, self.rng_streams, self.int("batch_size"), self.trim_last, self.int("max_epochs", 0),
                    patience, steps_per_epoch, optim or self.optim(), float(self.checkpoint_every_s))


SELECTIONS = ("reward", "aggregate_rmse")


def _rl(config, tokenizer, ce_lr: float, evaluation: Eval) -> RL:
    s = _Reader(config, "rl")
    method = methods.get(s.method, "rl", "config.rl.method")
    if s.reward not in objectives.REWARDS:
        raise GenreError(f"config.rl.reward: unknown reward {s.reward!r}; expected one of {sorted(objectives.REWARDS)}")
    if method.spec.exact and exact.num_sequences(tokenizer) > exact.MAX_SEQUENCES:
        raise GenreError(f"config.rl.method: {method.name} enumerates every sequence, and this tokenizer allows "
                         f"{exact.num_sequences(tokenizer)} (at most {exact.MAX_SEQUENCES}); use a smaller "
                         f"base/digits or a sampled method")
    rollouts = s.int("num_rollouts")
    if rollouts < method.spec.min_rollouts:
        raise GenreError(f"config.rl.num_rollouts: {method.name} needs at least {method.spec.min_rollouts} "
                         f"rollouts per input")
    ppo_epochs = s.int("ppo_epochs")
    if ppo_epochs > 1 and not method.spec.ratio:
        raise GenreError(f"config.rl.ppo_epochs: expected 1 for {method.name}, whose loss has no importance ratio "
                         f"(further passes would be uncorrected steps on stale rollouts), got {ppo_epochs}; "
                         f"{'/'.join(n for n in methods.names('rl') if methods.METHODS[n].spec.ratio)} takes more")
    # RL keeps the CE rate unless told otherwise.
    lr = ce_lr if s.learning_rate is None else s.float("learning_rate", strict=True)
    expert = DEFAULT_EXPERT_WEIGHT[tokenizer.name] if s.expert_weight is None else s.float("expert_weight")
    with_expert = method.spec.expert if s.expert is None else s.bool("expert")  # the GenRe² term on any method
    extras = {"expert": with_expert, "kl_weight": s.float("kl_weight"), "entropy_weight": s.float("entropy_weight")}
    if method.spec.teacher_forced and any(extras.values()):
        raise GenreError(f"config.rl.{next(k for k, v in extras.items() if v)}: {method.name} trains the CE loss "
                         f"alone (no rollouts to put an expert, KL or entropy term on); expected it off")
    loop = s.loop(s.optim(learning_rate=lr), patience=math.inf, steps_per_epoch=s.int("steps_per_epoch", 0))
    return RL(method, objectives.REWARDS[s.reward], s.bool("masked_expert"), rollouts, s.float("temperature", strict=True),
              s.float("clip_eps"), ppo_epochs, s.bool("requantize_targets"),
              expert if with_expert else 0.0,
              s.float("kl_weight"), s.float("entropy_weight"), loop,
              _fingerprint(s.cfg.to_dict()), s.choice("selection", SELECTIONS),
              decode.resolve(evaluation.decode, tokenizer, evaluation.num_samples, evaluation.temperature,
                            evaluation.exact_max_sequences).how, evaluation.temperature,
              s.bool("keep_start"), s.bool("both_selections"))


def without_later_fields(section: str, values):
    """``values`` (a config section as a dict) minus the later fields that hold their old value."""
    if not isinstance(values, dict):
        return values
    later = LATER_FIELDS.get(section, {})
    return {k: v for k, v in values.items() if not (k in later and v == later[k])}


def _fingerprint(rl_section: dict) -> dict:
    """What a resumed RL phase must share with the run that wrote it (max_epochs may be raised)."""
    return {k: v for k, v in without_later_fields("rl", rl_section).items() if k != "max_epochs"}


def _token(config, tokenizer) -> Token:
    s = _Reader(config, "token")
    method = methods.get(s.method, "token", "config.token.method")
    weight = method.spec.default_weight if s.weight is None else s.float("weight")
    tau = s.float("tau", strict=True) if method.spec.uses_tau else float(s.tau)
    objective = objectives.make_token_objective(method.spec, tokenizer, weight, tau)
    return Token(method, objective, s.bool("masked_loss"), weight, tau, s.loop())


def _head(config) -> Head:
    s = _Reader(config, "head")
    method = methods.get(s.method, "head", "config.head.method")
    low, high = s.float("low", -math.inf), s.float("high", -math.inf)
    if not low < high:
        raise GenreError(f"config.head.low/high: expected low < high, got low={low}, high={high}")
    mlp_hidden = s.int("mlp_hidden", 0)
    return Head(method, s.int("num_bins"), low, high, s.float("smoothing"), s.choice("targets", heads.TARGETS),
                s.choice("tails", heads.TAILS), mlp_hidden, s.int("mlp_layers", 1 if mlp_hidden else 0),
                s.choice("select", HEAD_SELECT), s.int("num_samples") if method.spec.binned else 1, s.loop(),
                s.cfg.to_dict(), without_later_fields("head", s.cfg.to_dict()))


def _eval(config) -> Eval:
    s = _Reader(config, "eval")
    splits = tuple(p.strip() for p in str(s.splits).split(",") if p.strip())
    if not splits or any(p not in SPLITS for p in splits):
        raise GenreError(f"config.eval.splits: expected a comma-separated subset of {list(SPLITS)}, got {s.splits!r}")
    return Eval(s.int("num_samples"), s.float("temperature", strict=True), s.int("batch_size"), splits,
                s.choice("decode", decode.DECODES), s.int("exact_max_sequences"),
                s.choice("calibration", calibration.CALIBRATIONS), without_later_fields("eval", s.cfg.to_dict()))


def resolve(config, tokenizer) -> Settings:
    """Validates every section the run can read; returns them typed, with the methods resolved."""
    phases = parse_phases(config.phases)
    model = _Reader(config, "model")
    for field in _MODEL_SIZES:
        if field in model.cfg:
            model.int(field)
    if "dropout" in model.cfg and model.float("dropout") >= 1.0:
        raise GenreError(f"config.model.dropout: expected a number in [0, 1), got {model.dropout!r}")
    for kind in ("ce", "token", "head"):  # a supervised phase that trains needs at least one epoch
        if kind in phases and kind in config:
            _Reader(config, kind).int("max_epochs", 1)
    for kind in phases:
        if kind in methods.PHASE_KINDS and methods.PHASE_KINDS[kind].tabular_only \
                and config.get("data_format", "talent") != "talent":
            raise GenreError(f"config.phases: {kind!r} needs tabular features; it does not apply to "
                             f"data_format={config.data_format!r}")
    for field, choices in (("rng_streams", RNG_STREAMS), ("last_batch", LAST_BATCH)):
        if config.get(field, LATER_FIELDS[""][field]) not in choices:
            raise GenreError(f"config.{field}: expected one of {list(choices)}, got {config[field]!r}")
    every = config.get("checkpoint_every_s", LATER_FIELDS[""]["checkpoint_every_s"])
    if isinstance(every, bool) or not isinstance(every, numbers.Real) or not math.isfinite(every) or every < 0:
        raise GenreError(f"config.checkpoint_every_s: expected seconds >= 0 (0 = after every epoch), got {every!r}")
    seed = config.seed
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise GenreError(f"config.seed: expected an integer >= 0, got {seed!r}")
    ce_section = _Reader(config, "ce")
    ce = ce_section.loop()
    evaluation = _eval(config)
    return Settings(int(seed), phases, ce, ce_section.bool("masked_loss"), _rl(config, tokenizer, ce.optim.learning_rate, evaluation),
                    _token(config, tokenizer), _head(config), evaluation, str(config.dataset), config.to_dict())
