"""What a claim study launches (experiments/claims.py runs it): each run's RL budget in epochs, its
launch.py command line (the study's config, the dataset's tokenizer, the RL recipe at the budget; a
token-level variant with the same optimizer and updates), the plan of runs in order, and the runs an
exact method's tokenizer refuses."""
from __future__ import annotations

import math
import os
import sys

from experiments.configs import claims as claims_config
from experiments.configs import suite_protocols as sp
from genre_jax import methods
from genre_jax.errors import GenreError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def budget_epochs(budget: str, n_train: int, batch_size: int = 128, cpu_steps: int = 60) -> int:
    """RL epochs of a budget: a fraction of the paper's 100 epochs ("1/8" -> 13), or "cpu" (the cpu
    protocol's ~60 updates of 128 inputs as full epochs)."""
    if budget == "cpu":
        return max(1, math.ceil(cpu_steps * batch_size / n_train))
    num, _, den = budget.partition("/")
    try:
        fraction = float(num) / float(den or 1)
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"--budgets: {budget!r} is not 'cpu' or a fraction such as 1/8") from None
    if not 0 < fraction <= 10:
        raise ValueError(f"--budgets: {budget!r} must be a fraction in (0, 10]")
    return max(1, math.ceil(claims_config.PAPER_ROLLOUT_EPOCHS * fraction))


def rl_flags(config, method: str, budget: str, n_train: int) -> list[str]:
    epochs = budget_epochs(budget, n_train)
    updates = epochs * math.ceil(n_train / 128)
    return [f"--config.rl.method={method}", f"--config.rl.max_epochs={epochs}",
            f"--config.rl.learning_rate={config.rl_learning_rate}",
            f"--config.rl.warmup_steps={min(100, max(1, updates // 10))}", *config.rl]


# the optimizer fields a token-level variant takes from the RL recipe (config.rl)
SHARED_OPTIMIZER = ("weight_decay", "lr_floor", "grad_clip", "batch_size")


def run_flags(config, method: str, budget: str, n_train: int) -> list[str]:
    """The phases and flags of one run: an RL method with the RL recipe at the budget; a token-level
    method (``ntl_mse``) with the same optimizer, rate, warmup and number of updates, no early stop."""
    kind = methods.get(method, field="--variants").kind
    if kind == "rl":
        return ["--config.phases=rl,eval", *rl_flags(config, method, budget, n_train)]
    if kind != "token":
        raise ValueError(f"--variants: {method} is a {kind} method; expected an RL or token-level one")
    rl = rl_flags(config, method, budget, n_train)
    same = [f.replace("--config.rl.", "--config.token.") for f in rl
            if f.split("=")[0].rpartition(".")[2] in ("max_epochs", "learning_rate", "warmup_steps", *SHARED_OPTIMIZER)]
    epochs = budget_epochs(budget, n_train)
    return ["--config.phases=token,eval", f"--config.token.method={method}", *same, f"--config.token.patience={epochs}"]


def base_command(config, data_dir: str, dataset: str, seed: int, workdir: str, tokenizer: str, authors) -> list:
    cfg_path, _, variant = config.config.partition(":")
    cmd = [sys.executable, os.path.join(REPO, "launch.py"), f"--config={os.path.join(REPO, cfg_path)}:{variant}",
           f"--workdir={workdir}", f"--config.data_dir={data_dir}", f"--config.dataset={dataset}",
           f"--config.seed={seed}", *config.common]
    if tokenizer:
        return cmd + list(claims_config.TOKENIZERS[tokenizer])
    return cmd + sp.authors_overrides(authors.get(dataset), "base,digits")


def plan(config, datasets, seeds, budgets, variant_names):
    """[(dataset, seed, ce tag, variant, budget, method, tokenizer, extra flags)] in run order: one
    CE per (dataset, seed, tokenizer) before the RL runs that start from it."""
    out = []
    for dataset in datasets:
        for seed in seeds:
            for budget in budgets:
                for name in variant_names:
                    method, tokenizer, extra = config.variants[name]
                    out.append((dataset, seed, f"ce-{tokenizer}" if tokenizer else "ce", name, budget, method,
                                tokenizer, list(extra)))
    return out


def refusal(method: str, cmd: list) -> str | None:
    """launch.py's one-line refusal of an exact method (``RLSpec.exact``) on a tokenizer that allows
    more sequences than exact.MAX_SEQUENCES, or None. The plan leaves such a run out
    (``distribution``: exact_crps on Abalone_reg) instead of recording it failed. The tokenizer is
    ``cmd``'s (its config file and --config.tokenizer.* flags), checked by the same
    ``settings.resolve`` as a launch, so the limit and the message live in one place."""
    import importlib.util

    import numpy as np

    from genre_jax import settings, tokenizers

    if not getattr(methods.get(method).spec, "exact", None):
        return None
    path, _, variant = next(a.partition("=")[2] for a in cmd if a.startswith("--config=")).partition(":")
    spec = importlib.util.spec_from_file_location("run_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config(variant)
    for flag in cmd:
        field, _, value = flag.partition("=")
        if field.startswith("--config.tokenizer."):
            name = field.rpartition(".")[2]
            config.tokenizer[name] = type(config.tokenizer[name])(value)
    config.rl.method = method
    try:  # the number of sequences does not depend on the range a tokenizer fits
        settings.resolve(config, tokenizers.make_tokenizer(config.tokenizer, np.array([0.0, 1.0])))
    except GenreError as e:
        return str(e)
    return None


def sp_budget(config):
    """The cpu protocol's budget fields with this study's CE steps (for sp.budget_overrides)."""
    c = sp.get_config("cpu")
    c.budget.ce_steps = config.ce_steps
    return c
