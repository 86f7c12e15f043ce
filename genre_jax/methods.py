"""The one registry of methods: every name a user can ask for, the kind of phase that trains it,
where its checkpoints live, and the pieces its phase is built from.

Kinds are the launch phases, in run order:
  ce     decoder CE pretraining (``<workdir>/ce``)
  rl     sequence-level RL from the CE checkpoint (``rl/<name>``), chosen by ``config.rl.method``
  token  a token-level loss fine-tuned from the CE checkpoint (``token/<name>``), ``config.token.method``
  head   a regression head on the decoder model's encoder, from scratch (``head/<name>``), ``config.head.method``
  gbdt   LightGBM on the same features (no checkpoint; ``genre_jax.gbdt``)

Each kind is a ``PhaseKind`` record (``PHASE_KINDS``): how the pipeline trains it, restores its
checkpoint and evaluates it, so the pipeline has no branch on a kind's name. The pipeline, the suite,
the summaries and the predictor read these tables; nothing else lists method names or kinds. A new
method of an existing kind is its function (an advantage, a token loss, a head) plus one entry in
``_ENTRIES``; a new kind is one ``PhaseKind`` (its train / evaluate functions) plus its methods.
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable

from genre_jax import heads, objectives
from genre_jax.errors import GenreError



def _late(path: str) -> Callable:
    """``"module:function"``, imported at its first call: the phases' modules import this registry
    (through settings), so the registry cannot import them when it loads."""
    module, _, name = path.partition(":")

    def call(*args):
        return getattr(importlib.import_module(module), name)(*args)

    call.__qualname__ = call.__name__ = path
    return call


@dataclasses.dataclass(frozen=True)
class PhaseKind:
    """How the pipeline runs one kind of phase; every function takes the run's ``RunContext`` first."""
    name: str
    train: Callable  # (ctx, start params) -> (best params, progress: the loop's selection record or {})
    evaluate: Callable  # (ctx, params, out_dir, entry name) -> the results.json entry
    # (ctx, decoder params) -> the tree its checkpoints restore into; None: it keeps no checkpoint
    template: Callable | None = None
    from_ce: bool = False  # starts from the CE checkpoint of the same workdir
    starts_others: bool = False  # its best params are what from_ce kinds start from
    selected: bool = False  # its method is named by config.<kind>.method
    decoder: bool = False  # predicts by decoding the number decoder (sample-count curves apply)
    point: bool = False  # one value per input (every aggregation carries the same numbers)
    tabular_only: bool = False  # needs tabular features (not the code-metric data format)
    # the config sections (besides the checkpoint) an evaluation depends on: an entry whose stamp of
    # them is unchanged is not evaluated again
    stamp_sections: tuple[str, ...] = ("eval",)
    # a module with its own command line (``python -m <cli>``: --data_dir --dataset --workdir --seed)
    # that the suite runs instead of launch.py; such a kind takes none of launch.py's flags
    cli: str | None = None


def _decoder_template(ctx, params):
    return params


_DECODER = dict(evaluate=_late("genre_jax.evaluate:evaluate"), template=_decoder_template, decoder=True)
PHASE_KINDS: dict[str, PhaseKind] = {k.name: k for k in (  # in run order
    PhaseKind("ce", _late("genre_jax.supervised:train_ce"), starts_others=True, **_DECODER),
    PhaseKind("rl", _late("genre_jax.rl:run_rl_phase"), from_ce=True, selected=True, **_DECODER),
    PhaseKind("token", _late("genre_jax.supervised:train_token"), from_ce=True, selected=True, **_DECODER),
    PhaseKind("head", _late("genre_jax.supervised:train_head"), _late("genre_jax.supervised:evaluate_head"),
              _late("genre_jax.supervised:head_template"), selected=True, stamp_sections=("eval", "head")),
    PhaseKind("gbdt", _late("genre_jax.gbdt:train_phase"), _late("genre_jax.gbdt:evaluate_phase"), point=True,
              tabular_only=True, stamp_sections=(), cli="genre_jax.gbdt"),
)}
KINDS = tuple(PHASE_KINDS)
SELECTED_KINDS = tuple(k for k, v in PHASE_KINDS.items() if v.selected)  # config.<kind>.method names the method
FROM_CE = tuple(k for k, v in PHASE_KINDS.items() if v.from_ce)  # start from the CE checkpoint of the workdir


@dataclasses.dataclass(frozen=True)
class RLSpec:
    """An RL method: its advantage, its policy loss and whether the GenRe² expert term is added by
    default (``config.rl.expert`` overrides it); or, with ``exact``, a loss on every sequence of the
    (small) tree weighted by its probability, instead of sampled rollouts."""
    advantage: Callable | None  # (reward_BG, greedy_reward_B) -> advantage_BG
    policy_loss: Callable | None  # (logp_BGL, old_logp_BGL, advantage_BG, weight_B, clip_eps) -> scalar
    expert: bool = False
    min_rollouts: int = 1  # group baselines need >= 2 rollouts per input
    # the loss weighs each token by pi/pi_old (clipped), so config.rl.ppo_epochs > 1 passes over one batch
    # of rollouts stay corrected; without it a second pass is a REINFORCE step on stale rollouts
    ratio: bool = False
    # no rollouts: the CE loss on the target tokens, trained and selected as an RL method is (rl.py)
    teacher_forced: bool = False
    # (probs_BS, values_S, target_B, reward) -> loss_B over every sequence (objectives.exact_*_loss)
    exact: Callable | None = None
    # (pred_BG, target_B) -> reward_BG: a credit that depends on the whole group of rollouts, given to
    # ``advantage`` in place of config.rl.reward (which still scores validation and the logs)
    group_reward: Callable | None = None


@dataclasses.dataclass(frozen=True)
class TokenSpec:
    """A token-level baseline: CE plus ``loss``'s auxiliary term with a default weight."""
    loss: Callable  # (logits_BLV, tokens_BL, weight_B, tokenizer, weight[, tau]) -> (sum, count)
    default_weight: float
    uses_tau: bool = False


@dataclasses.dataclass(frozen=True)
class Method:
    name: str
    kind: str
    spec: Any = None  # RLSpec, TokenSpec or heads.HeadSpec; None for ce and gbdt
    about: str = ""

    @property
    def phase_kind(self) -> PhaseKind:
        return PHASE_KINDS[self.kind]

    @property
    def folder(self) -> str | None:
        """Checkpoint folder under the workdir (None: the method keeps no checkpoint)."""
        if self.phase_kind.template is None:
            return None
        return self.kind if self.phase_kind.starts_others else f"{self.kind}/{self.name}"

    @property
    def from_ce(self) -> bool:
        return self.phase_kind.from_ce

    @property
    def decoder(self) -> bool:
        """Predicts by sampling the number decoder (so sample-count curves apply to it)."""
        return self.phase_kind.decoder

    @property
    def point_predictor(self) -> bool:
        """One value per input: every aggregation carries the same numbers."""
        return self.phase_kind.point or not getattr(self.spec, "binned", True)

    def phases(self, with_ce: bool = False) -> list[str]:
        """The config.phases that train and evaluate this method (``with_ce``: train CE first)."""
        return ([BASELINE] if with_ce and self.name != BASELINE else []) + [self.kind, "eval"]

    def launch_flags(self, with_ce: bool = False) -> list[str]:
        """launch.py flags that train and evaluate this method (``with_ce``: train CE first)."""
        flags = [f"--config.phases={','.join(self.phases(with_ce))}"]
        if self.phase_kind.selected:
            flags.append(f"--config.{self.kind}.method={self.name}")
        return flags


_ENTRIES = (
    Method("ce", "ce", about="token-level cross-entropy pretraining of the number decoder"),
    Method("remax", "rl", RLSpec(objectives.remax_advantage, objectives.reinforce_loss),
           "REINFORCE with the greedy decode's reward as baseline"),
    Method("grpo", "rl", RLSpec(objectives.grpo_advantage, objectives.ppo_clip_loss, min_rollouts=2, ratio=True),
           "group-standardized advantages, clipped per-token ratio"),
    Method("genre2", "rl", RLSpec(objectives.remax_advantage, objectives.reinforce_loss, expert=True),
           "ReMax plus the dense expert cross-entropy (the paper's method)"),
    Method("rloo", "rl", RLSpec(objectives.rloo_advantage, objectives.reinforce_loss, min_rollouts=2),
           "REINFORCE with the leave-one-out mean reward as baseline"),
    Method("exact_reward", "rl", RLSpec(None, None, exact=objectives.exact_reward_loss),
           "the exact expected reward over every sequence (small tokenizers): a zero-variance gradient"),
    Method("crps_loo", "rl", RLSpec(objectives.group_mean_advantage, objectives.reinforce_loss, min_rollouts=2,
                                    group_reward=objectives.crps_loo_reward),
           "REINFORCE on each rollout's leave-one-out share of its group's CRPS, group-mean baseline"),
    Method("exact_crps", "rl", RLSpec(None, None, exact=objectives.exact_crps_loss),
           "the exact CRPS of the whole predictive distribution (small tokenizers): a zero-variance gradient"),
    Method("ce_continued", "rl", RLSpec(None, None, teacher_forced=True),
           "more CE training under the RL phase's schedule and selection: the control that tells RL from more training"),
    Method("ntl_mse", "token", TokenSpec(objectives.ntl_mse, 0.3), "CE + squared error of the expected digit"),
    Method("ntl_was", "token", TokenSpec(objectives.ntl_was, 0.3), "CE + Wasserstein-1 to the true digit"),
    Method("dist2", "token", TokenSpec(objectives.dist2, 0.1, uses_tau=True), "CE + KL from a smoothed target"),
    Method("pointwise", "head", heads.POINTWISE, "one scalar output trained with MSE"),
    Method("riemann", "head", heads.RIEMANN, "histogram over bins, soft-label CE"),
    Method("lightgbm", "gbdt", about="gradient-boosted trees on the same features"),
)
METHODS: dict[str, Method] = {m.name: m for m in _ENTRIES}
NAMES = tuple(METHODS)  # canonical order: CE first, then the methods that start from it
BASELINE = "ce"  # what every other method is compared with
FLAGSHIP = "genre2"  # the paper's method


def get(name: str, kind: str | None = None, field: str = "method") -> Method:
    """The method called ``name`` (of ``kind``, when given); a one-line error naming ``field`` otherwise."""
    choices = names(kind)
    if name not in choices:
        what = f"{kind} method" if kind else "method"
        raise GenreError(f"{field}: unknown {what} {name!r}; expected one of {list(choices)}")
    return METHODS[name]


def names(kind: str | None = None) -> tuple[str, ...]:
    return tuple(n for n, m in METHODS.items() if kind is None or m.kind == kind)


def only(kind: str) -> Method:
    """The one method of a kind that has no ``config.<kind>.method`` (ce, gbdt)."""
    (name,) = names(kind)
    return METHODS[name]


def with_dependencies(method_names) -> list[str]:
    """Canonical order, duplicates dropped, the baseline added when a method starts from it."""
    wanted = set(method_names)
    for n in method_names:
        get(n)
    if any(METHODS[n].from_ce for n in wanted):
        wanted.add(BASELINE)
    return [n for n in names() if n in wanted]
