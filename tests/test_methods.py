"""The method registry: every name, its kind, folder and parts; the one place method names live."""
import pytest

from genre_jax import heads, methods, objectives
from genre_jax.errors import GenreError


def test_every_method_has_one_record_with_its_kind_and_folder():
    assert methods.NAMES == ("ce", "remax", "grpo", "genre2", "rloo", "exact_reward", "crps_loo", "exact_crps",
                             "ce_continued", "ntl_mse", "ntl_was", "dist2", "pointwise", "riemann", "lightgbm")
    kinds = {n: methods.METHODS[n].kind for n in methods.NAMES}
    assert kinds == {"ce": "ce", "remax": "rl", "grpo": "rl", "genre2": "rl", "rloo": "rl", "exact_reward": "rl",
                     "crps_loo": "rl", "exact_crps": "rl", "ce_continued": "rl", "ntl_mse": "token",
                     "ntl_was": "token", "dist2": "token", "pointwise": "head", "riemann": "head",
                     "lightgbm": "gbdt"}
    # folders as every earlier workdir has them, so old checkpoints restore
    assert methods.METHODS["ce"].folder == "ce" and methods.METHODS["remax"].folder == "rl/remax"
    assert methods.METHODS["dist2"].folder == "token/dist2" and methods.METHODS["riemann"].folder == "head/riemann"
    assert methods.METHODS["lightgbm"].folder is None
    assert [n for n in methods.NAMES if methods.METHODS[n].from_ce] == [
        "remax", "grpo", "genre2", "rloo", "exact_reward", "crps_loo", "exact_crps", "ce_continued", "ntl_mse",
        "ntl_was", "dist2"]
    assert [n for n in methods.NAMES if methods.METHODS[n].point_predictor] == ["pointwise", "lightgbm"]
    assert methods.only("ce").name == methods.BASELINE and methods.METHODS[methods.FLAGSHIP].spec.expert


def test_rl_entries_pair_the_paper_components():
    remax, genre2, grpo, rloo = (methods.METHODS[n].spec for n in ("remax", "genre2", "grpo", "rloo"))
    assert remax.advantage is genre2.advantage is objectives.remax_advantage
    assert (remax.expert, genre2.expert) == (False, True)
    assert grpo.policy_loss is objectives.ppo_clip_loss and grpo.min_rollouts == 2
    assert rloo.advantage is objectives.rloo_advantage and rloo.policy_loss is objectives.reinforce_loss
    assert methods.METHODS["exact_reward"].spec.exact is objectives.exact_reward_loss and not remax.exact
    crps_loo, exact_crps = (methods.METHODS[n].spec for n in ("crps_loo", "exact_crps"))
    assert crps_loo.group_reward is objectives.crps_loo_reward and crps_loo.min_rollouts == 2
    assert crps_loo.advantage is objectives.group_mean_advantage and remax.group_reward is None
    assert exact_crps.exact is objectives.exact_crps_loss and not (crps_loo.expert or exact_crps.expert)
    ce_continued = methods.METHODS["ce_continued"].spec  # the control: no rollouts, no expert, one pass
    assert ce_continued.teacher_forced and not (ce_continued.expert or ce_continued.ratio or remax.teacher_forced)
    assert methods.METHODS["riemann"].spec is heads.RIEMANN and not heads.POINTWISE.binned
    assert {n: methods.METHODS[n].spec.default_weight for n in methods.names("token")} == {
        "ntl_mse": 0.3, "ntl_was": 0.3, "dist2": 0.1}


def test_lookup_errors_name_the_field():
    with pytest.raises(GenreError, match=r"^config\.head\.method: unknown head method 'histogram'; expected one of "
                                         r"\['pointwise', 'riemann'\]$"):
        methods.get("histogram", "head", "config.head.method")
    with pytest.raises(GenreError, match="config.rl.method"):
        methods.get("remax", "token", "config.rl.method")  # a real method of another kind is refused too


def test_launch_flags_and_dependencies():
    assert methods.METHODS["grpo"].launch_flags() == ["--config.phases=rl,eval", "--config.rl.method=grpo"]
    assert methods.METHODS["genre2"].launch_flags(with_ce=True) == ["--config.phases=ce,rl,eval",
                                                                    "--config.rl.method=genre2"]
    assert methods.METHODS["ce"].launch_flags(with_ce=True) == ["--config.phases=ce,eval"]
    assert methods.with_dependencies(["lightgbm", "genre2", "genre2"]) == ["ce", "genre2", "lightgbm"]
    assert methods.with_dependencies(["riemann"]) == ["riemann"]
    with pytest.raises(GenreError, match="nope"):
        methods.with_dependencies(["nope"])


def test_one_new_entry_is_a_usable_method(monkeypatch):
    from experiments.configs import tabular
    from genre_jax import settings
    from genre_jax.tokenizers import NormalizedTokenizer

    entry = methods.Method("meanbase", "rl", methods.RLSpec(objectives.rloo_advantage, objectives.reinforce_loss,
                                                           min_rollouts=2))
    monkeypatch.setitem(methods.METHODS, "meanbase", entry)
    config = tabular.get_config("tiny")
    config.rl.method = "meanbase"
    resolved = settings.resolve(config, NormalizedTokenizer())
    assert resolved.method("rl") is entry and resolved.rl.method.folder == "rl/meanbase"
    assert entry.launch_flags() == ["--config.phases=rl,eval", "--config.rl.method=meanbase"]
    assert methods.with_dependencies(["meanbase"]) == ["ce", "meanbase"]


def test_every_kind_is_one_phase_kind_whose_functions_exist():
    """The pipeline reads kinds only through these records; their functions are imported at first call,
    so a renamed function would only fail in a run: resolve each one here."""
    import importlib
    assert methods.KINDS == tuple(methods.PHASE_KINDS) == ("ce", "rl", "token", "head", "gbdt")
    for kind in methods.PHASE_KINDS.values():
        for fn in (kind.train, kind.evaluate, kind.template):
            if fn is not None and ":" in fn.__qualname__:
                module, _, name = fn.__qualname__.partition(":")
                assert callable(getattr(importlib.import_module(module), name)), fn.__qualname__
    assert [k for k, v in methods.PHASE_KINDS.items() if v.template is None] == ["gbdt"]  # no checkpoint
    assert methods.FROM_CE == ("rl", "token") and methods.SELECTED_KINDS == ("rl", "token", "head")
    assert methods.PHASE_KINDS["head"].stamp_sections == ("eval", "head")  # heads sample with their own settings
    assert methods.METHODS["genre2"].phases(with_ce=True) == ["ce", "rl", "eval"]
    assert methods.METHODS["ce"].phases(with_ce=True) == ["ce", "eval"]
