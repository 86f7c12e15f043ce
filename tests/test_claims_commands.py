"""What a claim study launches: budgets in epochs, RL flags, the runs an exact method's tokenizer refuses."""
import pytest

from experiments import claims_commands
from experiments.configs import claims as claims_config


def test_budgets_are_fractions_of_the_papers_rollouts_or_the_cpu_protocols():
    assert claims_commands.budget_epochs("1", 500) == 100 and claims_commands.budget_epochs("1/8", 500) == 13
    assert claims_commands.budget_epochs("1/3", 500) == 34
    assert claims_commands.budget_epochs("cpu", 323) == 24 and claims_commands.budget_epochs("cpu", 9000) == 1
    with pytest.raises(ValueError, match="--budgets: 'x' is not 'cpu' or a fraction"):
        claims_commands.budget_epochs("x", 500)
    flags = claims_commands.rl_flags(claims_config.get_config("budget"), "genre2", "1/8", 1000)  # 8 updates x 13 epochs
    assert "--config.rl.max_epochs=13" in flags and "--config.rl.warmup_steps=10" in flags


def test_an_exact_method_is_refused_where_its_tokenizer_allows_too_many_sequences():
    base = ["python", f"--config={claims_commands.REPO}/experiments/configs/tabular.py:quick"]
    big = base + ["--config.tokenizer.base=4", "--config.tokenizer.digits=8"]  # Abalone_reg's: 65,536 sequences
    assert claims_commands.refusal("exact_crps", big) == (
        "config.rl.method: exact_crps enumerates every sequence, and this tokenizer allows 65536 (at most 4096); "
        "use a smaller base/digits or a sampled method")
    assert claims_commands.refusal("exact_crps", base + ["--config.tokenizer.base=4", "--config.tokenizer.digits=6"]) is None
    assert claims_commands.refusal("crps_loo", big) is None  # sampled methods take any tokenizer
