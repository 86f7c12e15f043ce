"""The one registry of methods: every name a user can ask for, the kind of phase that trains it,
where its checkpoints live, and the pieces its phase is built from.

Kinds are the launch phases, in run order:
  ce     decoder CE pretraining (``<workdir>/ce``)
  rl     sequence-level RL from the CE checkpoint (``rl/<name>``), chosen by ``config.rl.method``
  token  a token-level loss fine-tuned from the CE checkpoint (``token/<name>``), ``config.token.method``
  head   a regression head on the decoder model's encoder, from scratch (``head/<name>``), ``config.head.method``
  gbdt   LightGBM on the same features (no checkpoint; ``genre_jax.gbdt``)

The pipeline, the suite, the summaries and the predictor read this table; nothing else lists method
names. A new method of an existing kind is its function (an advantage, a token loss, a head) plus one
entry in ``_ENTRIES``.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

from genre_jax import heads, objectives
from genre_jax.errors import GenreError

KINDS = ("ce", "rl", "token", "head", "gbdt")
SELECTED_KINDS = ("rl", "token", "head")  # kinds whose method is named by config.<kind>.method
FROM_CE = ("rl", "token")  # kinds that start from the CE checkpoint of the same workdir


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
    def folder(self) -> str | None:
        """Checkpoint folder under the workdir (None: the method keeps no checkpoint)."""
        if self.kind == "gbdt":
            return None
        return "ce" if self.kind == "ce" else f"{self.kind}/{self.name}"

    @property
    def from_ce(self) -> bool:
        return self.kind in FROM_CE

    @property
    def decoder(self) -> bool:
        """Predicts by sampling the number decoder (so sample-count curves apply to it)."""
        return self.kind in ("ce", "rl", "token")

    @property
    def point_predictor(self) -> bool:
        """One value per input: every aggregation carries the same numbers."""
        return self.kind == "gbdt" or (self.kind == "head" and not self.spec.binned)

    def launch_flags(self, with_ce: bool = False) -> list[str]:
        """launch.py flags that train and evaluate this method (``with_ce``: train CE first)."""
        phases = (["ce"] if with_ce and self.kind != "ce" else []) + [self.kind, "eval"]
        flags = [f"--config.phases={','.join(phases)}"]
        if self.kind in SELECTED_KINDS:
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
