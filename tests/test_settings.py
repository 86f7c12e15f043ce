"""Config validation: every section checked once, typed, with one-line errors naming the field."""
import math

import pytest

from experiments.configs import code_metrics, tabular
from genre_jax import methods, settings
from genre_jax.errors import GenreError
from genre_jax.tokenizers import IEEETokenizer, NormalizedTokenizer

TOK = NormalizedTokenizer()


def test_every_shipped_config_resolves():
    for variant in tabular.VARIANTS:
        s = settings.resolve(tabular.get_config(variant), TOK)
        assert s.phases == ("ce", "rl", "eval") and s.method("rl").name == "genre2"
    s = settings.resolve(code_metrics.get_config("memory"), IEEETokenizer(10, 1, 3))
    assert s.rl.expert_weight == 0.1 and s.head.method.name == "pointwise" and s.head.num_samples == 1


def test_resolved_values_are_typed_and_defaulted(tiny_config):
    s = settings.resolve(tiny_config(**{"ce.learning_rate": 3e-3}), TOK)
    assert s.rl.loop.optim.learning_rate == 3e-3  # RL inherits the CE rate
    assert s.rl.loop.optim.lr_floor == 1.0 and s.rl.loop.patience == math.inf
    assert s.rl.expert_weight == 0.05 and s.rl.method is methods.METHODS["genre2"]
    assert settings.resolve(tiny_config(**{"rl.method": "remax"}), TOK).rl.expert_weight == 0.0
    assert s.token.weight == 0.3 and s.eval.splits == ("val", "test")
    assert s.rl.fingerprint["method"] == "genre2" and "max_epochs" not in s.rl.fingerprint
    assert isinstance(s.ce.batch_size, int) and s.ce.section == "ce"
    assert s.method("ce").name == "ce" and s.method("gbdt").name == "lightgbm"


@pytest.mark.parametrize("overrides, needle", [
    ({"phases": "ce,train"}, r"config\.phases"),
    ({"rl.method": "ppo"}, r"config\.rl\.method: unknown rl method 'ppo'"),
    ({"rl.reward": "mse"}, r"config\.rl\.reward"),
    ({"rl.method": "grpo", "rl.num_rollouts": 1}, r"config\.rl\.num_rollouts: grpo needs at least 2"),
    # REINFORCE losses have no importance ratio: a second pass would be an uncorrected step on stale rollouts
    ({"rl.method": "remax", "rl.ppo_epochs": 2}, r"config\.rl\.ppo_epochs: expected 1 for remax.*grpo takes more"),
    ({"rl.method": "genre2", "rl.ppo_epochs": 4}, r"config\.rl\.ppo_epochs: expected 1 for genre2"),
    ({"rl.method": "rloo", "rl.ppo_epochs": 2}, r"config\.rl\.ppo_epochs: expected 1 for rloo"),
    ({"rl.method": "exact_reward", "rl.ppo_epochs": 2}, r"config\.rl\.ppo_epochs: expected 1 for exact_reward"),
    ({"rl.method": "ce_continued", "rl.expert": True}, r"config\.rl\.expert: ce_continued trains the CE loss alone"),
    ({"rl.method": "ce_continued", "rl.kl_weight": 0.1}, r"config\.rl\.kl_weight: ce_continued"),
    ({"token.method": "ntl"}, r"config\.token\.method.*ntl_mse"),
    ({"token.method": "ce"}, r"config\.token\.method"),
    ({"token.method": "dist2", "token.tau": 0.0}, r"config\.token\.tau"),
    ({"token.weight": -1.0}, r"config\.token\.weight"),
    ({"head.method": "histogram"}, r"config\.head\.method"),
    ({"head.low": 1.0, "head.high": 1.0}, r"config\.head\.low/high"),
    ({"head.smoothing": -1.0}, r"config\.head\.smoothing"),
    ({"eval.splits": "val,tst"}, r"config\.eval\.splits"),
    ({"eval.num_samples": 0}, r"config\.eval\.num_samples"),
    ({"ce.batch_size": 0}, r"config\.ce\.batch_size"),
    ({"ce.learning_rate": -1e-3}, r"config\.ce\.learning_rate"),
    ({"rl.temperature": 0.0}, r"config\.rl\.temperature"),
    ({"model.num_heads": 0}, r"config\.model\.num_heads"),
    ({"seed": -1}, r"config\.seed"),
    ({"rng_streams": "own"}, r"config\.rng_streams"),
    ({"last_batch": "drop"}, r"config\.last_batch"),
    ({"head.targets": "edges"}, r"config\.head\.targets"),
    ({"head.tails": "zero"}, r"config\.head\.tails"),
    ({"head.select": "r2"}, r"config\.head\.select"),
    ({"head.mlp_hidden": -1}, r"config\.head\.mlp_hidden"),
    ({"head.mlp_hidden": 8, "head.mlp_layers": 0}, r"config\.head\.mlp_layers"),
])
def test_bad_values_are_one_line_errors(overrides, needle, tiny_config):
    with pytest.raises(GenreError, match=needle) as err:
        settings.resolve(tiny_config(**overrides), TOK)
    assert "\n" not in str(err.value)


def test_only_methods_with_an_importance_ratio_take_several_passes(tiny_config):
    assert [n for n in methods.names("rl") if methods.METHODS[n].spec.ratio] == ["grpo"]
    assert settings.resolve(tiny_config(**{"rl.method": "grpo", "rl.ppo_epochs": 4}), TOK).rl.ppo_epochs == 4


def test_rl_optimizer_as_released_in_paper_and_constant_in_quick():
    paper = settings.resolve(tabular.get_config("paper"), TOK).rl
    assert (paper.loop.batch_size, paper.loop.optim.warmup_steps, paper.loop.optim.lr_floor,
            paper.loop.optim.weight_decay, paper.loop.optim.grad_clip) == (512, 100, 0.1, 0.01, 0.0)
    assert paper.loop.optim.learning_rate == 1e-4 and paper.requantize_targets  # the CE rate; as released
    quick = settings.resolve(tabular.get_config("quick"), TOK).rl
    assert (quick.loop.batch_size, quick.loop.optim.warmup_steps, quick.loop.optim.lr_floor,
            quick.loop.optim.weight_decay, quick.loop.optim.grad_clip) == (128, 10, 1.0, 0.0, 1.0)
    # RL folders written before rl.lr_floor existed resume: the field is left out while it is 1.0
    assert "lr_floor" not in quick.fingerprint and paper.fingerprint["lr_floor"] == 0.1
    assert not quick.requantize_targets and "requantize_targets" not in quick.fingerprint
    # selection: as released among RL epochs only, both rules kept; quick as its tables were made
    assert (paper.keep_start, paper.both_selections, paper.other_selection) == (False, True, "aggregate_rmse")
    assert (quick.keep_start, quick.both_selections, quick.other_selection) == (True, False, None)
    assert not {"keep_start", "both_selections"} & set(quick.fingerprint)  # older quick RL folders resume
    tiny = settings.resolve(tabular.get_config("tiny"), TOK).rl
    assert (tiny.keep_start, tiny.both_selections) == (True, False)


def test_paper_baselines_as_released_and_quick_as_before():
    paper = settings.resolve(tabular.get_config("paper"), TOK)
    head = paper.head
    assert (head.mlp_hidden, head.mlp_layers, head.targets, head.tails, head.smoothing, head.select) == (
        2048, 3, "centres", "half_normal", 0.75, "mse")
    assert (head.loop.max_epochs, head.loop.patience, head.loop.optim) == (100, 100, settings.Optim(1e-5, 0.0, 100, 0.1, 0.0))
    assert (paper.token.loop.max_epochs, paper.token.loop.optim.warmup_steps) == (100, 100)
    assert not paper.ce_masked_loss and not paper.token.masked_loss and not paper.rl.masked_expert
    assert paper.ce.rng_streams == paper.rl.loop.rng_streams == "per_phase"
    assert paper.ce.trim_last and paper.rl.loop.trim_last and paper.head.loop.trim_last
    quick = settings.resolve(tabular.get_config("quick"), TOK)
    assert quick.ce_masked_loss and quick.rl.masked_expert and quick.ce.rng_streams == "shared"
    assert not quick.ce.trim_last and not quick.rl.loop.trim_last
    assert (quick.head.mlp_hidden, quick.head.targets, quick.head.tails, quick.head.select) == (
        0, "integrated", "train_mean", "loss")


def test_a_config_written_before_later_fields_reads_their_old_values():
    config = tabular.get_config("paper")
    del config["rng_streams"], config["last_batch"]
    for section, fields in settings.LATER_FIELDS.items():
        for field in fields:
            if section and field in config[section]:
                del config[section][field]
    old = settings.resolve(config, TOK)
    assert old.ce.rng_streams == "shared" and old.ce_masked_loss and old.rl.masked_expert and not old.ce.trim_last
    assert (old.head.mlp_hidden, old.head.targets, old.head.tails, old.head.select) == (0, "integrated", "train_mean",
                                                                                        "loss")
    assert (old.rl.loop.optim.lr_floor, old.rl.requantize_targets) == (1.0, False)
